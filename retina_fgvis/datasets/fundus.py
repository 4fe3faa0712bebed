"""Reading fundus photographs strictly, finding the field of view, cropping and normalising.

Conventions used by every reader in :mod:`retina_fgvis.datasets`:

* images are ``uint8`` arrays of shape H×W×3 in RGB order;
* masks (field of view, lesions) are ``bool`` arrays of shape H×W;
* :func:`crop_to_fov` crops the bounding box of the field of view (FOV, the bright fundus disc),
  pads it with black to a centred square and resizes it. Masks are resampled with the same
  geometry:

  - the image with area averaging when shrinking, bilinear when enlarging;
  - the FOV mask with area averaging and a majority vote (covered fraction >= 0.5) when shrinking,
    nearest neighbour when enlarging;
  - lesion masks with area averaging and *any* coverage (fraction > 0) when shrinking, nearest
    neighbour when enlarging, so a two-pixel microaneurysm never disappears when the image is made
    smaller (it can grow by at most one output pixel on each side).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, NamedTuple

import cv2
import numpy as np
from scipy import ndimage

from retina_fgvis.checks import check_int
from retina_fgvis.datasets.errors import DatasetError

_JPEG_MAGIC = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an 8-bit colour image as ``uint8`` H×W×3 RGB, refusing anything else.

    Raises :class:`DatasetError` naming ``path`` for a missing or empty file, a corrupt file, a
    truncated JPEG (no end-of-image marker ``FFD9``; OpenCV would otherwise decode the missing
    part as grey without complaint) or PNG (no ``IEND`` chunk), and for grayscale, RGBA or
    16-bit images, which are never converted silently.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except OSError as error:
        raise DatasetError(path, f"cannot read file ({error.strerror or error})") from None
    if not data:
        raise DatasetError(path, "empty file")
    if data.startswith(_JPEG_MAGIC) and not data.rstrip(b"\x00").endswith(_JPEG_EOI):
        raise DatasetError(path, "truncated JPEG (no end-of-image marker)")
    if data.startswith(_PNG_MAGIC) and b"IEND" not in data[-64:]:
        raise DatasetError(path, "truncated PNG (no IEND chunk)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(path, "not a readable image (corrupt or unsupported format)")
    if image.dtype != np.uint8:
        bits = image.dtype.itemsize * 8
        raise DatasetError(path, f"{bits}-bit image ({image.dtype}); expected 8-bit RGB")
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels == 1:
        raise DatasetError(path, "grayscale image; expected 8-bit RGB")
    if channels == 4:
        raise DatasetError(path, "RGBA image (has an alpha channel); expected 8-bit RGB")
    if channels != 3:
        raise DatasetError(path, f"{channels}-channel image; expected 8-bit RGB")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def fov_mask(image: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """Field of view (the fundus disc) of an RGB fundus image: ``bool`` H×W.

    A pixel belongs to the disc where the brightest channel, median-filtered (5×5) against JPEG
    noise, exceeds ``threshold`` (default ``max(10, 0.1 × its 99th percentile)``). The largest
    connected component is kept and its holes (dark lesions, a dark macula) are filled.
    An all-black image gives an all-False mask.
    """
    image = _check_rgb(image)
    # Zero padding, not OpenCV's replicated border, so the filter cannot widen the disc where it touches the frame.
    padded = cv2.copyMakeBorder(np.ascontiguousarray(image.max(axis=2)), 2, 2, 2, 2, cv2.BORDER_CONSTANT, value=0)
    brightest = cv2.medianBlur(padded, 5)[2:-2, 2:-2]
    if threshold is None:
        threshold = max(10.0, 0.1 * float(np.percentile(brightest, 99)))
    candidate = (brightest > threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidate, connectivity=8)
    if count <= 1:
        return np.zeros(image.shape[:2], bool)
    largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return ndimage.binary_fill_holes(labels == largest)


class CropGeometry(NamedTuple):
    """Where :func:`crop_to_fov` took its square from, and how to map results back onto the photograph.

    The square of side ``side`` px whose top-left corner lies at row ``top``, column ``left`` of the
    ``height``×``width`` photograph (it may reach past the photograph's edges: padded with black) was
    resized to ``size``×``size``. Photograph pixel (y, x) is square pixel ((y − top)·size/side,
    (x − left)·size/side).
    """

    height: int
    width: int
    top: int
    left: int
    side: int
    size: int

    @classmethod
    def of(cls, box_fov: np.ndarray, size: int | None = None) -> "CropGeometry":
        """The geometry of the bounding box of ``box_fov`` (bool H×W, not empty) made square; ``size=None``: unscaled."""
        height, width = box_fov.shape
        rows = np.flatnonzero(box_fov.any(axis=1))
        cols = np.flatnonzero(box_fov.any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        side = max(y1 - y0, x1 - x0)
        top = y0 - (side - (y1 - y0)) // 2
        left = x0 - (side - (x1 - x0)) // 2
        return cls(int(height), int(width), int(top), int(left), int(side), int(side if size is None else size))

    def square(self, array: np.ndarray) -> np.ndarray:
        """H×W(×C) photograph array -> its ``side``×``side`` square, zero outside the photograph."""
        out = np.zeros((self.side, self.side) + array.shape[2:], array.dtype)
        ya, yb, xa, xb = self._overlap()
        out[ya - self.top : yb - self.top, xa - self.left : xb - self.left] = array[ya:yb, xa:xb]
        return out

    def to_photograph(self, mask: np.ndarray) -> np.ndarray:
        """Inverse of the crop for a bool ``size``×``size`` mask -> bool ``height``×``width``.

        Resized to the square's side with :func:`resize_mask` (nearest neighbour when enlarging, so every
        photograph pixel takes the value of the square pixel it fell into), then the padding is cut off
        and the square placed back where it was cropped; pixels outside the square are False.
        """
        mask = np.asarray(mask, bool)
        if mask.shape != (self.size, self.size):
            raise ValueError(f"mask: shape {mask.shape} differs from the crop's {(self.size, self.size)}")
        square = resize_mask(mask, self.side)
        out = np.zeros((self.height, self.width), bool)
        ya, yb, xa, xb = self._overlap()
        out[ya:yb, xa:xb] = square[ya - self.top : yb - self.top, xa - self.left : xb - self.left]
        return out

    def _overlap(self) -> tuple[int, int, int, int]:
        """Rows ya:yb and columns xa:xb of the photograph that lie inside the square."""
        return (max(self.top, 0), min(self.top + self.side, self.height),
                max(self.left, 0), min(self.left + self.side, self.width))


class Cropped(NamedTuple):
    """Result of :func:`crop_to_fov`: image (S×S×3 uint8), fov (S×S bool), masks (name -> S×S bool) and the
    :class:`CropGeometry` that maps them back onto the photograph."""

    image: np.ndarray
    fov: np.ndarray
    masks: dict[str, np.ndarray]
    geometry: CropGeometry


def crop_to_fov(
    image: np.ndarray,
    fov: np.ndarray | None = None,
    size: int | None = None,
    masks: Mapping[str, np.ndarray] | None = None,
    box_fov: np.ndarray | None = None,
) -> Cropped:
    """Crop the FOV's bounding box, pad it with black to a centred square, resize to ``size``.

    Args:
        image: uint8 H×W×3 RGB.
        fov: bool H×W field of view returned with the result; :func:`fov_mask` of ``image`` if None.
        size: output side S in pixels; None keeps the square's own side.
        masks: extra bool H×W masks (lesions) resampled with the same geometry (rule in the
            module docstring: any coverage counts when shrinking).
        box_fov: the mask whose bounding box defines the crop; ``fov`` if None. Readers pass the
            image-derived FOV here so that every source of one image is cropped identically.

    Returns :class:`Cropped`; its ``geometry`` (:class:`CropGeometry`) undoes the crop, pad and resize.
    Raises ValueError (DatasetError) when the FOV is empty or shapes disagree.
    """
    image = _check_rgb(image)
    size = None if size is None else _check_size(size)
    height, width = image.shape[:2]
    fov = fov_mask(image) if fov is None else _check_mask(fov, (height, width), "fov")
    box_source = fov if box_fov is None else _check_mask(box_fov, (height, width), "box_fov")
    masks = {name: _check_mask(mask, (height, width), f"masks[{name!r}]") for name, mask in (masks or {}).items()}
    if not box_source.any():
        raise DatasetError(None, "empty field of view (the image is black)")
    geometry = CropGeometry.of(box_source, size)
    image_sq, fov_sq = geometry.square(image), geometry.square(fov)
    masks_sq = {name: geometry.square(mask) for name, mask in masks.items()}
    if geometry.size == geometry.side:
        return Cropped(image_sq, fov_sq, masks_sq, geometry)
    shrinking = geometry.size < geometry.side
    dsize = (geometry.size, geometry.size)
    image_out = cv2.resize(image_sq, dsize, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return Cropped(
        image_out,
        resize_mask(fov_sq, geometry.size, min_coverage=0.5),
        {name: resize_mask(mask, geometry.size) for name, mask in masks_sq.items()},
        geometry,
    )


def resize_mask(mask: np.ndarray, size: int | tuple[int, int], min_coverage: float = 0.0) -> np.ndarray:
    """Resize a bool mask to ``size`` (S or (H, W)).

    Shrinking: area averaging, then a pixel is set where the covered fraction is
    ``> min_coverage`` (0: any coverage, for lesions) or ``>= min_coverage`` (> 0: majority rules).
    Enlarging: nearest neighbour.
    """
    height, width = (size, size) if np.isscalar(size) else size
    mask = np.asarray(mask, bool)
    if mask.shape == (height, width):
        return mask.copy()
    if height < mask.shape[0] or width < mask.shape[1]:
        covered = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        return covered > 0 if min_coverage <= 0 else covered >= min_coverage
    return cv2.resize(mask.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


def graham_normalize(image: np.ndarray, fov: np.ndarray | None = None, sigma: float | None = None) -> np.ndarray:
    """Graham's local-average-colour normalisation of a FOV-cropped square fundus image.

    ``out = clip(4·image − 4·G_σ * image + 128)`` with a Gaussian blur ``G_σ``; σ defaults to
    side/60 (Graham: σ = 10 at disc radius 300, the disc radius being half the side after
    :func:`crop_to_fov`). Pixels outside the FOV shrunk by 10 % of the disc radius (Graham: radius
    270 of 300) are set to 128. ``fov`` defaults to :func:`fov_mask` of ``image``.
    Returns uint8 H×W×3.
    """
    image = _check_rgb(image)
    side = min(image.shape[:2])
    if fov is None:
        fov = fov_mask(image)
    fov = _check_mask(fov, image.shape[:2], "fov")
    sigma = side / 60.0 if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma: must be > 0, got {sigma}")
    pixels = image.astype(np.float32)
    blurred = cv2.GaussianBlur(pixels, (0, 0), sigma)
    out = np.clip(np.rint(4.0 * pixels - 4.0 * blurred + 128.0), 0, 255).astype(np.uint8)
    margin = max(1, int(round(0.1 * side / 2)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1))
    inner = cv2.erode(fov.astype(np.uint8), kernel).astype(bool)
    out[~inner] = 128
    return out


def load_fundus(path: str | os.PathLike, size: int | None = 512, graham: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Read a fundus photograph, crop it to its FOV, square it and resize it.

    Returns ``(image uint8 S×S×3 RGB, fov bool S×S)``; ``size=None`` keeps the cropped side.
    With ``graham=True`` the image is passed through :func:`graham_normalize` (the FOV is the
    one found on the original image). Raises :class:`DatasetError` naming ``path``.
    """
    image = read_rgb(path)
    fov = fov_mask(image)
    if not fov.any():
        height, width = image.shape[:2]
        # A bright but tiny image has no disc either: the 5×5 noise filter leaves nothing of a few pixels.
        reason = ("the image is black" if int(image.max()) <= 10
                  else f"no bright disc in the {height}×{width} px image; is it a fundus photograph?")
        raise DatasetError(path, f"no field of view found ({reason})")
    cropped = crop_to_fov(image, fov, size=size)
    out = graham_normalize(cropped.image, cropped.fov) if graham else cropped.image
    return out, cropped.fov


def _check_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise TypeError(f"image: expected a uint8 H×W×3 RGB array, got {image.dtype} {image.shape}")
    return image


def _check_mask(mask: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"{name}: shape {mask.shape} differs from the image's {tuple(shape)}")
    return mask.astype(bool, copy=False)


def _check_size(size: int) -> int:
    return check_int("size", size, minimum=8)
