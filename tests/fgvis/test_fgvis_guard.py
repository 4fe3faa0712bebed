"""The user's model is left exactly as it was: weights, requires_grad, train/eval flags, no hooks or
modes left behind -- also when ``attribute`` raises."""
from __future__ import annotations

import copy

import pytest
import torch
from fgvis_helpers import hooks_left
from torch import nn

from retina_fgvis.fgvis import FGVis


class _Net(nn.Module):
    def __init__(self, fail_at: int | None = None):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 3))
        self.fail_at, self.calls = fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return self.body(x)


def _snapshot(model):
    return (copy.deepcopy(model.state_dict()),
            [p.requires_grad for p in model.parameters()],
            [m.training for m in model.modules()],
            [p.stride() for p in model.parameters()])


def _assert_unchanged(model, before):
    state, grads, modes, strides = before
    after = model.state_dict()
    assert state.keys() == after.keys()
    assert all(torch.equal(state[k], after[k]) for k in state)
    assert [p.requires_grad for p in model.parameters()] == grads
    assert [m.training for m in model.modules()] == modes
    assert [p.stride() for p in model.parameters()] == strides
    assert all(p.grad is None for p in model.parameters())
    assert hooks_left(model) == 0
    assert torch._C._len_torch_function_stack() == 0  # no TorchFunctionMode left active


def _model():
    torch.manual_seed(0)
    model = _Net()
    model.train()
    model.body[1].eval()  # mixed modes must come back as they were
    model.body[0].weight.requires_grad_(False)
    return model


@pytest.mark.parametrize("options", [{}, {"channels_last": True, "autocast": True}], ids=["default", "cuda-paths"])
def test_model_unchanged_after_attribute(options):
    model = _model()
    before = _snapshot(model)
    res = FGVis(model, max_iter=3, **options).attribute(torch.randn(2, 3, 9, 9))
    assert res.mask.shape == (2, 3, 9, 9) and torch.isfinite(res.mask).all()
    _assert_unchanged(model, before)


@pytest.mark.parametrize("fail", ["in the optimisation", "bad target after the clean pass"])
def test_model_unchanged_when_attribute_raises(fail):
    model = _model()
    before = _snapshot(model)
    if fail == "in the optimisation":
        model.fail_at = 3
        with pytest.raises(RuntimeError, match="boom"):
            FGVis(model, max_iter=5, channels_last=True).attribute(torch.randn(2, 3, 9, 9))
    else:
        with pytest.raises(ValueError, match="^target:"):
            FGVis(model, max_iter=5).attribute(torch.randn(2, 3, 9, 9), target=7)
    _assert_unchanged(model, before)


def test_results_are_on_the_inputs_device_and_shaped():
    model = _model()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    x = torch.randn(2, 3, 9, 9, device=device)
    res = FGVis(model, game="deletion", max_iter=2).attribute(x)
    for name in res.__dataclass_fields__:
        assert getattr(res, name).device == x.device, name
    assert res.mean_mask.shape == res.importance.shape == (2, 1, 9, 9)
    assert torch.allclose(res.importance, 1 - res.mask.mean(1, keepdim=True))
    keep = FGVis(model, game="preservation", max_iter=2).attribute(x)
    assert torch.allclose(keep.importance, keep.mean_mask)
    assert res.lam.shape == res.score.shape == res.success.shape == res.top_class.shape == (2,)
