"""Batch norm folded into convolutions: exact up to round-off, on a private copy of the model."""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from fgvis_helpers import graph_nonlinearity_count
from torch import nn

from retina_fgvis.fgvis import FGVis, GradientFilter
from retina_fgvis.fgvis.fold import FoldedModel, fold_batchnorm
from retina_fgvis.models.fundus_cnn import FundusCNN

# Measured largest differences (docs/engine.md): logits 3.5e-6 (fp32, ResNet18), scores 6e-8 (fp32),
# 0 (fp64, defended), masks 2.4e-7 (fp32) and 4.4e-16 (fp64); the bounds leave a margin above them.
LOGIT_TOLERANCE, SCORE_TOLERANCE_FP32, SCORE_TOLERANCE_FP64 = 1e-5, 1e-6, 1e-12
X = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))

MODELS = {
    "fundus_cnn": lambda: FundusCNN(width=4),
    "resnet18": lambda: torchvision.models.resnet18(weights=None, num_classes=5),
}


def _with_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    """Batch norms with non-trivial running statistics and affine parameters (fresh ones fold to ~identity)."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean.copy_(0.3 * torch.randn(c, generator=g))
            module.running_var.copy_(0.5 + torch.rand(c, generator=g))
            module.weight.data.copy_(1 + 0.3 * torch.randn(c, generator=g))
            module.bias.data.copy_(0.2 * torch.randn(c, generator=g))
    return model.eval()


@pytest.mark.parametrize("name", list(MODELS))
def test_folded_copy_has_no_batch_norm_and_the_same_logits_and_calls(name):
    torch.manual_seed(0)
    model = _with_statistics(MODELS[name]())
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        assert (folded(X) - model(X)).abs().max() <= LOGIT_TOLERANCE
    e = X.clone().requires_grad_(True)
    calls = graph_nonlinearity_count(model(e))
    filt = GradientFilter()
    with torch.no_grad(), filt.record():
        folded(X)
    assert len(filt) == calls


def _state(model):
    return (copy.deepcopy(model.state_dict()), [p.requires_grad for p in model.parameters()],
            [m.training for m in model.modules()])


@pytest.mark.parametrize("defense, dtype, tolerance", [(False, torch.float32, SCORE_TOLERANCE_FP32),
                                                       (True, torch.float64, SCORE_TOLERANCE_FP64)])
def test_folding_leaves_the_model_bit_identical_and_changes_scores_by_round_off(defense, dtype, tolerance):
    torch.manual_seed(0)
    model = _with_statistics(FundusCNN(width=4)).to(dtype)
    model.train()  # the user's mode must come back, and the copy must still run in eval mode
    state, grads, modes = _state(model)
    x = X.to(dtype)
    kwargs = dict(defense=defense, max_iter=8, lr=0.2)
    folded = FGVis(model, fold_batchnorm=True, **kwargs).attribute(x, target=1, lam=1e-6)
    after = model.state_dict()
    assert all(torch.equal(state[k], after[k]) and state[k].dtype == after[k].dtype for k in state)
    assert [p.requires_grad for p in model.parameters()] == grads and [m.training for m in model.modules()] == modes
    plain = FGVis(model, fold_batchnorm=False, **kwargs).attribute(x, target=1, lam=1e-6)
    assert (folded.score - plain.score).abs().max() <= tolerance
    assert (folded.initial_score - plain.initial_score).abs().max() <= tolerance
    assert (folded.mask - plain.mask).abs().max() <= 1e3 * tolerance


def test_the_folded_copy_is_rebuilt_only_when_the_weights_change():
    model = _with_statistics(FundusCNN(width=4))
    cache = FoldedModel()
    first = cache.get(model, channels_last=False)
    assert cache.get(model, channels_last=False) is first
    with torch.no_grad():
        model.features[0][0][0].weight.mul_(2)
    second = cache.get(model, channels_last=False)
    assert second is not first
    with torch.no_grad():
        assert (second(X) - model.eval()(X)).abs().max() <= LOGIT_TOLERANCE


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.head = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x)))
        if h.mean() > 0:  # data-dependent control flow: torch.fx cannot trace it
            h = h * 2
        return self.head(h.mean((2, 3)))


def test_a_model_torch_fx_cannot_trace_keeps_its_other_batch_norms():
    model = _with_statistics(_Untraceable())
    folded = fold_batchnorm(model)
    assert isinstance(folded.bn, nn.BatchNorm2d)
    with torch.no_grad():
        assert torch.equal(folded(X), model(X))
    assert FGVis(model, fold_batchnorm=True, max_iter=1).attribute(X).mask.shape == X.shape
