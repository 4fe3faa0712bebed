"""The defense diagnostic: bounds shares, defended-vs-undefended gradients, blocked references, margins."""
from __future__ import annotations

import copy

import pytest
import torch
from fgvis_helpers import small_cnn
from torch import nn

from retina_fgvis.fgvis import FGVis, FixedSteps, ScoreBelow
from retina_fgvis.fgvis.diagnose import diagnose_defense

X = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))


class _Shared(nn.Module):
    """A ReLU module called twice and a functional call: three named calls."""

    def __init__(self, head_bias=0.0):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([0.0, head_bias]))

    def forward(self, x):
        h = self.act(self.conv1(x))
        h = self.act(self.conv2(h))
        return self.head(torch.sigmoid(h).mean((2, 3)))


def test_at_m_equal_one_the_defense_passes_everything():
    """e = x: every unit sits inside its bounds, so the defended gradient is the undefended one."""
    model = small_cnn(4, seed=1).eval()
    diag = diagnose_defense(model, X, 1, steps=(0,), start=(1.0, 1.0))
    assert diag.inside.shape == (3, 1, len(diag.call_names)) and len(diag.call_names) == 3
    assert torch.equal(diag.inside, torch.ones_like(diag.inside))
    assert torch.allclose(diag.cosine, torch.ones(3, 1, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(diag.norm_ratio, torch.ones(3, 1, dtype=torch.float64), atol=1e-12)


def test_the_defended_run_filters_and_follows_the_engine():
    model = small_cnn(4, seed=1).eval()
    diag = diagnose_defense(model, X, 1, lr=0.3, lam=1e-4, steps=(0, 3, 6), stop=None)
    assert diag.steps == (0, 3, 6) and diag.cosine.shape == diag.stopped.shape == (3, 3)
    assert (diag.inside < 1).any() and (diag.cosine < 0.999).any() and (diag.norm_ratio < 1).all()
    assert not diag.stopped.any()
    # The masks between measurements are the defended engine's: same scores after k updates.
    for k, steps in enumerate(diag.steps[1:], start=1):
        res = FGVis(model, lr=0.3).attribute(X, target=1, lam=1e-4, stop=FixedSteps(steps))
        assert torch.allclose(diag.step_score[:, k], res.score, atol=1e-5)


def test_calls_are_named_by_module_and_function():
    diag = diagnose_defense(_Shared().eval(), X, steps=(0,))
    assert diag.call_names == ["act (relu)", "act (relu)", "<model> (sigmoid)"]
    calls = diag.to_frame(["a", "b", "c"])
    assert len(calls) == 3 * 1 * 3 and list(calls.columns) == ["image", "step", "call", "name", "inside"]
    assert calls["image"].tolist()[:3] == ["a"] * 3 and calls["inside"].between(0, 1).all()
    summary = diag.summary()
    assert len(summary) == 3 and {"cosine", "norm_ratio", "mean_inside", "reference_score", "margin"} <= set(summary)


def test_a_reference_that_scores_above_the_stop_value_is_flagged():
    blocked = diagnose_defense(_Shared(head_bias=5.0).eval(), X, 1, steps=(0,), stop=ScoreBelow(0.10))
    assert (blocked.reference_score >= 0.10).all() and blocked.reference_blocks_stop.all()
    assert sum("no deletion can succeed" in note for note in blocked.findings()) == 3
    free = diagnose_defense(_Shared(head_bias=-5.0).eval(), X, 1, steps=(0,), stop=ScoreBelow(0.10))
    assert (free.reference_score < 0.10).all() and not free.reference_blocks_stop.any()
    # A keep-class game is never blocked by its reference.
    keep = diagnose_defense(_Shared(head_bias=5.0).eval(), X, 1, game="preservation", steps=(0,))
    assert not keep.reference_blocks_stop.any()


def test_margin_is_reported_against_its_limit():
    model = _Shared(head_bias=40.0).eval()
    diag = diagnose_defense(model, X, 1, steps=(0,), lam=1e-10)
    assert diag.margin_limit == pytest.approx(20.03, abs=0.01)
    assert (diag.margin > 35).all()
    assert sum("margin" in note for note in diag.findings()) == 3


def test_model_is_left_as_it_was():
    model = small_cnn(4, seed=1)
    model.train()
    before = copy.deepcopy(model.state_dict())
    diagnose_defense(model, X, 1, steps=(0, 1))
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": ()}, "^steps:"), ({"steps": (0, -1)}, "^steps:"), ({"game": "hide"}, "^game:"),
    ({"lr": 0}, "^lr:"), ({"target": 7}, "^target:"), ({"start": (0.5, 0.2)}, "^start:"),
])
def test_bad_arguments_name_themselves(kwargs, message):
    kwargs = {"target": 1, **kwargs}
    with pytest.raises(ValueError, match=message):
        diagnose_defense(small_cnn(4, seed=1).eval(), X, **kwargs)


def test_a_model_without_nonlinearities_cannot_be_diagnosed():
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 14 * 14, 2))
    with pytest.raises(ValueError, match="^defense:"):
        diagnose_defense(model, X, 1)
