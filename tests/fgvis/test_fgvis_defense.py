"""The gradient filter: every nonlinearity call is filtered, module or functional, in place or not."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from fgvis_helpers import graph_nonlinearity_count
from torch import nn

from retina_fgvis.fgvis import FGVis, GradientFilter


def _fundus_cnn():
    from retina_fgvis.models.fundus_cnn import FundusCNN

    return FundusCNN()


# name -> (constructor, expected eval-mode count from the notes or None)
MODELS = {
    "alexnet": (lambda: torchvision.models.alexnet(weights=None), 7),
    "vgg16": (lambda: torchvision.models.vgg16(weights=None, init_weights=False), 15),
    "googlenet": (lambda: torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=False), 57),
    "resnet50": (lambda: torchvision.models.resnet50(weights=None), 49),
    "fundus_cnn": (_fundus_cnn, None),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_filtered_calls_equal_nonlinearity_calls(name):
    build, expected = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 64, 64)
    m = torch.full_like(x, 0.9, requires_grad=True)
    reference = graph_nonlinearity_count(model(x * m))  # plain forward, no filter involved
    if expected is not None:
        assert reference == expected
    assert reference > 0
    filt = GradientFilter()
    with torch.no_grad(), filt.record():
        model(x)
    assert len(filt) == reference
    with filt.apply():
        out = model(x * m)
    assert filt.last_calls == filt.last_filtered == reference
    out[0, 0].backward()
    assert m.grad is not None and torch.isfinite(m.grad).all()
    # The engine's own pass raises if its filtered calls do not line up with the clean ones.
    res = FGVis(model, max_iter=1).attribute(x)
    assert res.iterations.tolist() == [1]


class _Mixed(nn.Module):
    """Every kind of call: a module used twice, in place, functional, method, ReLU6, LeakyReLU, GELU."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.conv3 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 1), nn.Conv2d(6, 6, 1)
        self.shared = nn.ReLU(inplace=True)
        self.relu6, self.leaky, self.gelu = nn.ReLU6(), nn.LeakyReLU(0.2), nn.GELU()
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        h = self.shared(self.conv1(x))
        h = self.shared(self.conv2(h) - 0.1)
        h = F.relu(self.conv3(h) + h)
        h = self.leaky(self.conv2(h) - 0.5)
        h = self.relu6(h * 8).sigmoid() + self.gelu(h)
        return self.head(h.mean((2, 3)))


def test_every_kind_of_call_is_counted_once():
    model = _Mixed().eval()
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    reference = graph_nonlinearity_count(model(x))
    assert reference == 7
    filt = GradientFilter()
    with torch.no_grad(), filt.record():
        model(x)
    with filt.apply():
        model(x)
    assert len(filt) == filt.last_calls == filt.last_filtered == reference


def test_filter_is_identity_forward_and_no_op_at_the_clean_image():
    """At e = x every activation sits within its bounds, so the defended gradient is the plain one."""
    torch.manual_seed(0)
    model = _Mixed().eval()
    x = torch.randn(2, 3, 8, 8)
    filt = GradientFilter()
    with torch.no_grad(), filt.record():
        clean = model(x)
    e1, e2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    with filt.apply():
        defended = model(e1)
    plain = model(e2)
    assert torch.equal(defended, plain) and torch.equal(defended.detach(), clean)
    defended.sum().backward()
    plain.sum().backward()
    assert torch.allclose(e1.grad, e2.grad) and e1.grad.abs().sum() > 0


def test_leaky_relu_negative_branch_follows_eq6():
    """b_l = min(0, h(x)) is live for leaky ReLU: gradients pass for h(x) <= h(e) <= 0."""
    leaky = nn.LeakyReLU(0.2)
    x = torch.tensor([[-1.0, -1.0, 2.0, 2.0, 0.5]])
    e = torch.tensor([[-0.5, -2.0, 1.0, 3.0, -0.1]], requires_grad=True)
    filt = GradientFilter()
    with filt.record():
        leaky(x)
    with filt.apply():
        out = leaky(e)
    out.sum().backward()
    # h(x) = [-.2, -.2, 2, 2, .5], h(e) = [-.1, -.4, 1, 3, -.02]: inside, below, inside, above, wrong sign
    assert e.grad[0].tolist() == pytest.approx([0.2, 0.0, 1.0, 0.0, 0.0])


def test_bounds_are_per_image_and_repeated_for_rows():
    relu = nn.ReLU()
    x = torch.tensor([[1.0], [-1.0]])
    filt = GradientFilter()
    with filt.record():
        relu(x)
    rows = filt.select(torch.tensor([0, 0, 1]))
    e = torch.tensor([[0.5], [2.0], [0.5]], requires_grad=True)
    with rows.apply():
        relu(e).sum().backward()
    assert e.grad[:, 0].tolist() == [1.0, 0.0, 0.0]  # within [0,1]; above 1; above b_u = 0


def test_engine_refuses_an_undefended_model():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.LazyLinear(2))
    x = torch.randn(1, 3, 8, 8)
    model(x)
    with pytest.raises(ValueError, match="^defense:"):
        FGVis(model, max_iter=1).attribute(x)
    assert FGVis(model, defense=False, max_iter=1).attribute(x).mask.shape == x.shape


def test_mismatched_calls_raise():
    relu = nn.ReLU()
    filt = GradientFilter()
    with filt.record():
        relu(torch.ones(1, 2))
    with pytest.raises(RuntimeError, match="shape"), filt.apply():
        relu(torch.ones(1, 3))
    with pytest.raises(RuntimeError, match="1 of the clean pass"), filt.apply():
        relu(relu(torch.ones(1, 2)))
