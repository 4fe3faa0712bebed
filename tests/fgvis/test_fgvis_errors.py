"""Every bad input raises one clear ValueError/TypeError whose message starts with the argument."""
from __future__ import annotations

import math

import pytest
import torch
from fgvis_helpers import small_cnn

from retina_fgvis.fgvis import FGVis, ScoreBelow

MODEL = small_cnn(4, seed=0).eval()
X = torch.randn(2, 3, 8, 8)

CONSTRUCTOR = [
    ({"model": "resnet"}, TypeError, "model"),
    ({"game": "hide"}, ValueError, "game"),
    ({"lr": 0}, ValueError, "lr"),
    ({"lr": -0.1}, ValueError, "lr"),
    ({"lr": math.nan}, ValueError, "lr"),
    ({"lr": "fast"}, TypeError, "lr"),
    ({"max_iter": 0}, ValueError, "max_iter"),
    ({"max_iter": 2.5}, TypeError, "max_iter"),
    ({"reference": "grey"}, ValueError, "reference"),
    ({"reference": "black"}, ValueError, "normalization"),
    ({"normalization": ((0.5,), (0.0,))}, ValueError, "normalization"),
    ({"normalization": "imagenet"}, TypeError, "normalization"),
    ({"batch_size": 0}, ValueError, "batch_size"),
    ({"noise_std": -1}, ValueError, "noise_std"),
    ({"blur_sigma": 0}, ValueError, "blur_sigma"),
]

ATTRIBUTE = [
    ({"inputs": X.numpy()}, TypeError, "inputs"),
    ({"inputs": X[0]}, ValueError, "inputs"),
    ({"inputs": X[:, :1]}, ValueError, "inputs"),
    ({"inputs": X.to(torch.int64)}, TypeError, "inputs"),
    ({"inputs": torch.where(X > 2, math.nan, X)}, ValueError, "inputs"),
    ({"inputs": torch.where(X > 2, math.inf, X)}, ValueError, "inputs"),
    ({"inputs": X[:0]}, ValueError, "inputs"),
    ({"lam": -1e-4}, ValueError, "lam"),
    ({"lam": math.inf}, ValueError, "lam"),
    ({"lam": [1e-4, 1e-5, 1e-6]}, ValueError, "lam"),
    ({"lam": "grid"}, ValueError, "lam"),
    ({"lam": "search", "lam_grid": []}, ValueError, "lam_grid"),
    ({"lam": "search", "lam_grid": [1e-4, -1.0]}, ValueError, "lam_grid"),
    ({"lam": "search", "search": "parallel"}, ValueError, "search"),
    ({"target": 4}, ValueError, "target"),
    ({"target": -1}, ValueError, "target"),
    ({"target": [0, 1, 2]}, ValueError, "target"),
    ({"target": 1.0}, TypeError, "target"),
    ({"target": torch.tensor([0.0, 1.0])}, TypeError, "target"),
    ({"stop": 0.1}, TypeError, "stop"),
]


@pytest.mark.parametrize("kwargs,error,name", CONSTRUCTOR, ids=[f"{c[2]}-{i}" for i, c in enumerate(CONSTRUCTOR)])
def test_bad_constructor_argument(kwargs, error, name):
    kwargs = {"model": MODEL, **kwargs}
    with pytest.raises(error, match=f"^{name}:"):
        FGVis(**kwargs)


@pytest.mark.parametrize("kwargs,error,name", ATTRIBUTE, ids=[f"{c[2]}-{i}" for i, c in enumerate(ATTRIBUTE)])
def test_bad_attribute_argument(kwargs, error, name):
    kwargs = {"inputs": X, **kwargs}
    with pytest.raises(error, match=f"^{name}:"):
        FGVis(MODEL, max_iter=1).attribute(**kwargs)


@pytest.mark.parametrize("reference", [torch.zeros(3, 4, 4), torch.zeros(3, 3, 8, 8), torch.zeros(1, 8, 8),
                                       torch.full((3, 8, 8), math.nan)])
def test_reference_of_the_wrong_shape_or_values(reference):
    with pytest.raises(ValueError, match="^reference:"):
        FGVis(MODEL, reference=reference, max_iter=1).attribute(X)


def test_bad_stop_rule_values():
    with pytest.raises(ValueError, match="^stop:"):
        ScoreBelow(1.5)


@pytest.mark.parametrize("channels", [1, 2])
def test_normalization_channels_must_match_inputs(channels):
    """The inputs fit the model; the normalization is what is wrong, so it is blamed."""
    with pytest.raises(ValueError, match="^normalization: has %d channels" % channels):
        FGVis(MODEL, normalization=((0.5,) * channels, (0.25,) * channels), max_iter=1).attribute(X)


def test_inputs_of_another_channel_count_than_the_model():
    with pytest.raises(ValueError, match="^inputs: have 2 channels, the model expects 3"):
        FGVis(MODEL, normalization=((0.5,) * 2, (0.25,) * 2), max_iter=1).attribute(X[:, :2])


def test_inputs_on_another_device_than_the_model():
    if not torch.cuda.is_available():
        pytest.skip("needs a second device")
    with pytest.raises(ValueError, match="^inputs:"):
        FGVis(MODEL, max_iter=1).attribute(X.cuda())


class _NaNAfter(torch.nn.Module):
    """The small CNN whose logits (``what="logits"``) or gradient (``what="gradient"``) turn non-finite
    from its ``after``-th call on (call 1 is the clean pass)."""

    def __init__(self, what: str, after: int):
        super().__init__()
        self.net, self.what, self.after, self.calls = small_cnn(4, seed=0).eval(), what, after, 0

    def forward(self, x):
        self.calls += 1
        logits = self.net(x)
        if self.calls < self.after:
            return logits
        if self.what == "logits":
            return logits * math.nan
        # Forward value 0 * sqrt(0) = 0; its gradient 0 * inf = NaN.
        return logits + 0 * torch.sqrt(x - x.detach()).sum()


@pytest.mark.parametrize("what, after, message", [
    ("logits", 1, "^model: returned non-finite logits .* on the clean inputs"),
    ("logits", 3, "^model: returned non-finite logits .* at optimisation step 2 \\(2 of 2 rows"),
    ("gradient", 2, "^model: gave a non-finite gradient .* at optimisation step 1"),
])
@pytest.mark.parametrize("check_every", [1, 10])
def test_non_finite_logits_or_gradients_raise_instead_of_nan_masks(what, after, message, check_every):
    model = _NaNAfter(what, after)
    with pytest.raises(ValueError, match=message):
        FGVis(model, max_iter=4, check_every=check_every).attribute(X)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_get_one_clear_error(dtype):
    with pytest.raises(TypeError, match=f"^inputs: {dtype} is too coarse"):
        FGVis(MODEL, max_iter=1).attribute(X.to(dtype))


def test_double_precision_runs_with_a_double_model_and_names_the_mismatch_otherwise():
    res = FGVis(small_cnn(4, seed=0).double().eval(), max_iter=2).attribute(X.double())
    assert res.mask.dtype == torch.float64 and torch.isfinite(res.mask).all()
    with pytest.raises(TypeError, match="^inputs: are torch.float64 but the model's parameters torch.float32"):
        FGVis(MODEL, max_iter=1).attribute(X.double())


class _Tuple(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = small_cnn(4, seed=0).eval()

    def forward(self, x):
        logits = self.net(x)
        return logits, logits.softmax(1)


def test_a_model_returning_a_tuple_gets_one_clear_error():
    with pytest.raises(ValueError, match="^model: returned a tuple, FGVis needs the logits tensor N x K alone"):
        FGVis(_Tuple(), max_iter=1).attribute(X)
