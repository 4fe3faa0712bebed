"""Strict image reading, field of view, cropping/resampling rules and Graham normalisation."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from fundus_files import fundus_array, write_image

from retina_fgvis.datasets import DatasetError, crop_to_fov, fov_mask, graham_normalize, load_fundus, read_rgb
from retina_fgvis.datasets.fundus import resize_mask


def test_read_rgb_returns_rgb_of_jpeg_and_png(tmp_path):
    rgb = fundus_array()
    png = write_image(tmp_path / "a.png", rgb)
    np.testing.assert_array_equal(read_rgb(png), rgb)
    jpeg = read_rgb(write_image(tmp_path / "a.jpeg", rgb))
    assert jpeg.dtype == np.uint8 and jpeg.shape == rgb.shape
    assert np.abs(jpeg.astype(int) - rgb).mean() < 6  # RGB order kept (BGR would be off by ~100)


def _bad_files(tmp_path):
    rgb = fundus_array()
    good = write_image(tmp_path / "good.jpeg", rgb).read_bytes()
    files = {}
    files["truncated JPEG"] = tmp_path / "truncated.jpeg"
    files["truncated JPEG"].write_bytes(good[: len(good) // 2])
    files["corrupt"] = tmp_path / "corrupt.jpeg"
    files["corrupt"].write_bytes(b"\xff\xd8" + b"not an image at all" + b"\xff\xd9")
    files["grayscale"] = tmp_path / "grey.png"
    cv2.imwrite(str(files["grayscale"]), rgb[..., 0])
    files["grayscale JPEG"] = tmp_path / "grey.jpeg"
    cv2.imwrite(str(files["grayscale JPEG"]), rgb[..., 0])
    files["RGBA"] = tmp_path / "rgba.png"
    cv2.imwrite(str(files["RGBA"]), np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]))
    files["16-bit"] = tmp_path / "deep.png"
    cv2.imwrite(str(files["16-bit"]), rgb.astype(np.uint16) * 256)
    files["empty"] = tmp_path / "empty.png"
    files["empty"].write_bytes(b"")
    files["missing"] = tmp_path / "missing.png"
    return files


@pytest.mark.parametrize(
    "kind, words",
    [("truncated JPEG", "truncated"), ("corrupt", "not a readable image"), ("grayscale", "grayscale"),
     ("grayscale JPEG", "grayscale"), ("RGBA", "RGBA"), ("16-bit", "16-bit"), ("empty", "empty"), ("missing", "not found")],
)
def test_read_rgb_refuses_bad_files_naming_them(tmp_path, kind, words):
    path = _bad_files(tmp_path)[kind]
    with pytest.raises(DatasetError) as caught:
        read_rgb(path)
    assert str(path) in str(caught.value) and words in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_fov_mask_finds_the_disc_and_fills_dark_lesions():
    image = fundus_array(64, 80)
    image[30:34, 38:42] = 0  # a black lesion inside the disc must stay inside the FOV
    ys, xs = np.mgrid[0:64, 0:80]
    disc = (xs - 39.5) ** 2 + (ys - 31.5) ** 2 <= 32**2
    fov = fov_mask(image)
    assert fov[30:34, 38:42].all()
    assert (fov != disc).sum() <= 0.01 * disc.sum()
    assert not fov_mask(np.zeros((20, 20, 3), np.uint8)).any()


def test_crop_to_fov_squares_centres_and_keeps_masks_aligned():
    image = np.zeros((30, 50, 3), np.uint8)
    image[5:25, 10:26] = 200  # FOV box: 20 rows × 16 cols -> padded to 20×20
    lesion = np.zeros((30, 50), bool)
    lesion[10, 12] = True
    crop = crop_to_fov(image, masks={"dot": lesion})
    assert crop.image.shape == (20, 20, 3) and crop.fov.shape == (20, 20)
    assert (crop.image[:, :2] == 0).all() and (crop.image[:, 2:18] == 200).all() and (crop.image[:, 18:] == 0).all()
    assert np.argwhere(crop.masks["dot"]).tolist() == [[5, 4]]


def test_small_lesions_survive_downsampling_and_fov_uses_majority():
    dot = np.zeros((400, 400), bool)
    dot[101:103, 201:203] = True  # a 2×2 px dot
    small = resize_mask(dot, 100)
    assert small.sum() >= 1 and np.argwhere(small).min(0).tolist() == [25, 50]
    assert cv2.resize(dot.astype(np.uint8), (100, 100), interpolation=cv2.INTER_NEAREST).sum() == 0  # why the rule exists
    half = np.zeros((4, 4), bool)
    half[:, :2] = True
    half[0:2, 2] = True  # half of the top-right block: kept (>= 0.5)
    assert resize_mask(half, 2, min_coverage=0.5).tolist() == [[True, True], [True, False]]
    assert resize_mask(half, 8).sum() == 4 * half.sum()  # enlarging: nearest neighbour


def test_crop_to_fov_resize_shapes_and_rejects_bad_arguments():
    image = fundus_array(48, 60)
    crop = crop_to_fov(image, size=32)
    assert crop.image.shape == (32, 32, 3) and crop.fov.dtype == bool
    with pytest.raises(ValueError, match="size"):
        crop_to_fov(image, size=0)
    with pytest.raises(ValueError, match="fov"):
        crop_to_fov(image, fov=np.ones((3, 3), bool))
    with pytest.raises(TypeError, match="image"):
        crop_to_fov(image[..., 0])
    with pytest.raises(ValueError, match="empty field of view"):
        crop_to_fov(np.zeros((10, 10, 3), np.uint8))


def test_graham_normalize_is_mid_grey_on_flat_areas_and_outside():
    image = np.zeros((60, 60, 3), np.uint8)
    fov = np.zeros((60, 60), bool)
    fov[2:58, 2:58] = True
    image[fov] = (180, 80, 40)
    image[30, 30] = (120, 40, 20)  # a dark dot is amplified
    out = graham_normalize(image, fov)
    assert out.dtype == np.uint8 and out.shape == image.shape
    assert (out[~fov] == 128).all() and (out[20, 40] == 128).all()
    assert (out[30, 30] < 100).all()


def test_load_fundus_crops_resizes_and_names_black_images(tmp_path):
    path = write_image(tmp_path / "10_left.jpeg", fundus_array(48, 70))
    image, fov = load_fundus(path, size=32)
    assert image.shape == (32, 32, 3) and fov.shape == (32, 32) and fov.mean() > 0.7
    graham, _ = load_fundus(path, size=32, graham=True)
    assert abs(float(graham[fov].mean()) - 128) < 20
    black = write_image(tmp_path / "black.png", np.zeros((20, 20, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"black.png: no field of view found \(the image is black\)"):
        load_fundus(black)
    tiny = write_image(tmp_path / "tiny.png", np.full((3, 3, 3), (200, 90, 40), np.uint8))
    with pytest.raises(DatasetError, match=r"tiny.png: no field of view found \(no bright disc in the 3×3 px "
                                           r"image; is it a fundus photograph\?\)"):
        load_fundus(tiny)


def test_crop_geometry_maps_masks_back_onto_the_photograph():
    # A disc cut off at the top and bottom, like DiaretDB1's: the square reaches past the photograph.
    ys, xs = np.mgrid[0:115, 0:150]
    image = np.zeros((115, 150, 3), np.uint8)
    image[(xs - 77) ** 2 + (ys - 57) ** 2 <= 60**2] = (190, 90, 50)
    lesion = (xs - 100) ** 2 + (ys - 40) ** 2 <= 4**2
    crop = crop_to_fov(image, size=32, masks={"lesion": lesion})
    geometry = crop.geometry
    assert (geometry.height, geometry.width, geometry.size) == (115, 150, 32)
    assert geometry.top < 0 and geometry.side > 115  # padded rows above and below
    back = geometry.to_photograph(crop.masks["lesion"])
    assert back.shape == (115, 150) and back[lesion].all()  # the lesion is covered where it was
    reach = int(np.ceil(geometry.side / geometry.size))  # one square pixel, in photograph pixels
    near = cv2.dilate(lesion.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)).astype(bool)
    assert not (back & ~near).any()  # and nowhere else
    assert not geometry.to_photograph(np.zeros((32, 32), bool)).any()
    with pytest.raises(ValueError, match="mask"):
        geometry.to_photograph(np.zeros((16, 16), bool))
