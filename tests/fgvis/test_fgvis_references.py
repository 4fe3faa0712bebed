"""References of the removal operator e = x*m + (1-m)*r, all in the model's input space."""
from __future__ import annotations

import pytest
import torch
from fgvis_helpers import small_cnn

from retina_fgvis.fgvis import FGVis, make_reference

NORM = ((0.4, 0.5, 0.6), (0.2, 0.25, 0.5))
X = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_zero_is_zero_in_normalised_space_and_black_is_pixel_black():
    assert torch.equal(make_reference("zero", X), torch.zeros_like(X))
    black = make_reference("black", X, normalization=NORM)
    pixels = black * torch.tensor(NORM[1])[:, None, None] + torch.tensor(NORM[0])[:, None, None]
    assert black.shape == X.shape and torch.allclose(pixels, torch.zeros_like(X), atol=1e-6)


def test_noise_is_seeded_per_image_and_scaled_to_pixel_units():
    a = make_reference("noise", X, noise_std=0.1, normalization=NORM, seed=3)
    b = make_reference("noise", X[:1], noise_std=0.1, normalization=NORM, seed=3)
    assert torch.equal(a[:1], b) and torch.equal(a[0], a[1])
    assert not torch.equal(a, make_reference("noise", X, noise_std=0.1, normalization=NORM, seed=4))
    big = make_reference("noise", torch.zeros(1, 3, 128, 128), noise_std=0.1, normalization=NORM)
    stds = big.std(dim=(0, 2, 3))
    assert torch.allclose(stds, 0.1 / torch.tensor(NORM[1]), rtol=0.05)


def test_blur_smooths_and_keeps_the_mean():
    blurred = make_reference("blur", X, blur_sigma=2.0)
    assert blurred.shape == X.shape
    assert blurred.std() < 0.5 * X.std()
    assert torch.allclose(blurred.mean(), X.mean(), atol=0.1)


@pytest.mark.parametrize("reference", ["zero", "black", "noise", "blur", "tensor"])
def test_explanation_uses_the_reference(reference):
    ref = torch.full((3, 16, 16), 0.7) if reference == "tensor" else reference
    res = FGVis(small_cnn(4).eval(), game="repression", reference=ref, normalization=NORM,
                max_iter=2).attribute(X)
    expected_ref = make_reference(ref, X, normalization=NORM, seed=1)
    assert torch.allclose(res.explanation, X * res.mask + (1 - res.mask) * expected_ref, atol=1e-6)
