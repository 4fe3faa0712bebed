"""Overlays and thumbnails for fundus explanations: arrays in, arrays out (saving is separate).

Drawing conventions (the same in every picture the toolkit makes):

* the experts' lesion markings are filled semi-transparently and outlined in the lesion's colour
  (:data:`LESION_COLOURS`: hard exudates green, soft exudates blue, hemorrhages orange,
  red small dots red);
* the binarized explanation ("detection") is drawn as a light cyan tint with a cyan outline, so
  a lesion inside a detected region keeps its own colour and both stay readable.

All images are ``uint8`` RGB arrays of shape ``H×W×3``; masks are ``bool`` arrays of shape ``H×W``.
"""
from __future__ import annotations

from typing import Mapping

import cv2
import numpy as np
from matplotlib import colormaps

#: RGB colour of each lesion type (keys are ``retina_fgvis.datasets.LESION_TYPES``).
LESION_COLOURS: dict[str, tuple[int, int, int]] = {
    "hard_exudates": (0, 220, 0),
    "soft_exudates": (30, 90, 255),
    "hemorrhages": (255, 150, 0),
    "red_small_dots": (255, 0, 0),
}
#: Human-readable name of each lesion type, in the order of :data:`LESION_COLOURS`.
LESION_NAMES: dict[str, str] = {
    "hard_exudates": "Hard exudates",
    "soft_exudates": "Soft exudates",
    "hemorrhages": "Hemorrhages",
    "red_small_dots": "Red small dots",
}
#: RGB colour of the binarized explanation (tint and outline).
DETECTION_COLOUR: tuple[int, int, int] = (0, 255, 255)


def _check_image(image: np.ndarray, name: str = "image") -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name}: expected a uint8 H×W×3 RGB array, got {image.dtype} {image.shape}")
    return image


def _check_mask(mask: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != shape:
        raise ValueError(f"{name}: shape {mask.shape} does not match the image's {shape}")
    return mask.astype(bool)


def _line_width(shape: tuple[int, int]) -> int:
    # 1 px up to 512 px images, thicker on large ones so outlines survive downscaling on screen.
    return max(1, round(max(shape) / 512))


def _blend(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], alpha: float) -> None:
    """In place: ``canvas[mask] = (1 − alpha)·canvas + alpha·colour``."""
    tint = np.asarray(colour, dtype=np.float32)
    canvas[mask] = ((1.0 - alpha) * canvas[mask] + alpha * tint).round().astype(np.uint8)


def _outline(canvas: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], width: int) -> None:
    """In place: draw the boundaries of ``mask``'s regions (single-pixel regions stay visible)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(canvas, contours, -1, tuple(int(c) for c in colour), width)


def overlay_lesions(
    image: np.ndarray,
    lesions: Mapping[str, np.ndarray],
    detection: np.ndarray | None = None,
    *,
    lesion_alpha: float = 0.45,
    detection_alpha: float = 0.25,
    detection_colour: tuple[int, int, int] = DETECTION_COLOUR,
) -> np.ndarray:
    """Fundus with the experts' lesion markings and, optionally, a binarized detection.

    Args:
        image: uint8 H×W×3 RGB fundus.
        lesions: ``{lesion_type: bool H×W}``; types missing from :data:`LESION_COLOURS` raise.
        detection: bool H×W binarized explanation, or ``None``.
        lesion_alpha / detection_alpha: opacity of the fills, in [0, 1].

    Returns:
        A new uint8 H×W×3 array: ``image`` tinted by the detection (``detection_alpha``), lesions
        filled (``lesion_alpha``) and outlined in their colours, then the detection outlined on top.
    """
    image = _check_image(image)
    shape = image.shape[:2]
    for name, alpha in (("lesion_alpha", lesion_alpha), ("detection_alpha", detection_alpha)):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"{name}: must be in [0, 1], got {alpha}")
    unknown = set(lesions) - set(LESION_COLOURS)
    if unknown:
        raise ValueError(f"lesions: unknown lesion types {sorted(unknown)}; expected {list(LESION_COLOURS)}")
    width = _line_width(shape)
    canvas = image.copy()
    det = None if detection is None else _check_mask(detection, shape, "detection")
    if det is not None:
        _blend(canvas, det, detection_colour, detection_alpha)
    for lesion_type, mask in lesions.items():
        mask = _check_mask(mask, shape, f"lesions[{lesion_type!r}]")
        _blend(canvas, mask, LESION_COLOURS[lesion_type], lesion_alpha)
        _outline(canvas, mask, LESION_COLOURS[lesion_type], width)
    if det is not None:
        _outline(canvas, det, detection_colour, width)
    return canvas


def _scaled(importance: np.ndarray) -> np.ndarray:
    """An H×W importance map divided by its maximum, clipped to [0, 1] (all zeros when the maximum is ≤ 0)."""
    importance = np.nan_to_num(np.asarray(importance, dtype=np.float32))
    if importance.ndim != 2:
        raise ValueError(f"importance: expected an H×W array, got shape {importance.shape}")
    peak = float(importance.max()) if importance.size else 0.0
    return np.clip(importance / peak, 0.0, 1.0) if peak > 0 else np.zeros_like(importance)


def heatmap(importance: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Colour-map an importance map (H×W float, high = important) scaled by its maximum -> uint8 H×W×3."""
    return (colormaps[cmap](_scaled(importance))[..., :3] * 255).round().astype(np.uint8)


def overlay_heatmap(image: np.ndarray, importance: np.ndarray, alpha: float = 0.5, cmap: str = "inferno") -> np.ndarray:
    """Blend :func:`heatmap` of ``importance`` over ``image``: ``(1 − alpha·a)·image + alpha·a·heat``.

    ``a`` is the importance scaled to [0, 1] by its maximum, so unimportant pixels keep the fundus visible.
    """
    image = _check_image(image)
    scaled = _scaled(importance)
    if scaled.shape != image.shape[:2]:
        raise ValueError(f"importance: shape {scaled.shape} does not match the image's {image.shape[:2]}")
    heat = colormaps[cmap](scaled)[..., :3].astype(np.float32) * 255
    weight = alpha * scaled[..., None]
    return ((1.0 - weight) * image + weight * heat).round().astype(np.uint8)


def thumbnail(image: np.ndarray, size: int = 160) -> np.ndarray:
    """Downscale (area interpolation) so the longer side is ``size`` px; smaller images are returned as a copy."""
    image = np.asarray(image)
    if size < 1:
        raise ValueError(f"size: must be a positive number of pixels, got {size}")
    height, width = image.shape[:2]
    scale = size / max(height, width)
    if scale >= 1.0:
        return image.copy()
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, new_size, interpolation=cv2.INTER_AREA)
