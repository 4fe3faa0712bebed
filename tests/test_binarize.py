import numpy as np
import pytest
import torch

from retina_fgvis.binarize import binarize_relative, binarize_top_fraction


def test_relative_is_per_image_and_matches_the_formula():
    rng = np.random.default_rng(0)
    maps = rng.random((3, 1, 16, 16)).astype(np.float32)
    maps[1] *= 10  # a different maximum per image
    binary = binarize_relative(maps, 0.5)
    assert binary.dtype == bool and binary.shape == maps.shape
    for image, detected in zip(maps, binary):
        np.testing.assert_array_equal(detected, image >= 0.5 * image.max())
    torch_binary = binarize_relative(torch.from_numpy(maps), 0.5)
    assert torch_binary.dtype == torch.bool
    np.testing.assert_array_equal(torch_binary.numpy(), binary)


def test_relative_default_is_the_paper_threshold_and_empty_map_detects_nothing():
    image = np.linspace(0, 1, 101, dtype=np.float32).reshape(1, 101)[:, :100].repeat(2, axis=0)
    assert binarize_relative(image).sum() == 2 * (100 - 4)  # values 0.00..0.03 fall below 4 % of 0.99
    assert not binarize_relative(np.zeros((8, 8))).any()


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_relative_rejects_thresholds_outside_unit_interval(fraction):
    with pytest.raises(ValueError, match="threshold"):
        binarize_relative(np.ones((4, 4)), fraction)


def test_top_fraction_marks_exactly_the_area_inside_the_fov():
    rng = np.random.default_rng(1)
    maps = rng.random((2, 20, 20))
    fov = np.zeros((20, 20), bool)
    fov[2:18, 2:18] = True  # 256 pixels
    binary = binarize_top_fraction(maps, 0.25, fov)
    assert binary.shape == maps.shape
    assert binary.sum(axis=(1, 2)).tolist() == [64, 64]
    assert not binary[:, ~fov].any()
    for image, detected in zip(maps, binary):
        assert image[detected].min() >= image[fov & ~detected].max()


def test_top_fraction_keeps_tensor_type_and_breaks_ties_exactly():
    flat = torch.zeros(1, 1, 10, 10)
    binary = binarize_top_fraction(flat, 0.1)
    assert binary.dtype == torch.bool and int(binary.sum()) == 10
    with pytest.raises(ValueError, match="area_fraction"):
        binarize_top_fraction(flat, 1.2)
    with pytest.raises(ValueError, match="importance"):
        binarize_relative(np.ones(5))
