"""Turn importance maps into binary detections.

Two rules, both applied per image:

* :func:`binarize_relative`: the paper's rule for the medical experiment, a pixel is detected when its
  importance is at least ``fraction`` (default 4 %) of the image's maximum importance;
* :func:`binarize_top_fraction`: the ``area_fraction`` most important pixels of the field of view,
  so maps of different methods can be compared at the same area.

Both accept numpy arrays or torch tensors shaped ``H×W`` (one image) or ``N×H×W`` / ``N×1×H×W``
(a batch: the first axis is the image) and return a boolean array of the same type and shape.
"""
from __future__ import annotations

from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)

PAPER_THRESHOLD = 0.04


def check_threshold(fraction: float) -> float:
    """Validate the relative binarization threshold; ``ValueError`` naming ``threshold`` otherwise."""
    value = float(fraction)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"threshold: must be a fraction of the maximum in (0, 1], got {fraction!r}")
    return value


def binarize_relative(importance: Array, fraction: float = PAPER_THRESHOLD) -> Array:
    """``importance ≥ fraction · max(importance)`` per image.

    Args:
        importance: ``H×W`` or ``N×…`` map, high = important (e.g. ``1 − mean mask`` for FGVis deletion).
        fraction: the threshold as a fraction of each image's maximum, in (0, 1].

    Returns:
        bool map of the input's shape and type. An image whose maximum is ≤ 0 has no detection
        (otherwise ``0 ≥ 0`` would mark every pixel).
    """
    fraction = check_threshold(fraction)
    if isinstance(importance, torch.Tensor):
        flat = importance.detach().reshape(_batch_shape(importance), -1).float()
        peak = flat.amax(dim=1, keepdim=True)
        binary = (flat >= fraction * peak) & (peak > 0)
        return binary.reshape(importance.shape)
    array = np.asarray(importance, dtype=np.float64)
    flat = array.reshape(_batch_shape(array), -1)
    peak = flat.max(axis=1, keepdims=True)
    return ((flat >= fraction * peak) & (peak > 0)).reshape(array.shape)


def binarize_top_fraction(importance: Array, area_fraction: float, fov: Array | None = None) -> Array:
    """The ``round(area_fraction · |FOV|)`` most important FOV pixels of each image.

    Ties are broken by pixel order (stable sort), so the detected area is exact; pixels outside
    ``fov`` are never detected.

    Args:
        importance: ``H×W`` or ``N×…`` map, high = important.
        area_fraction: share of the field of view to mark, in [0, 1].
        fov: bool field-of-view mask broadcastable to ``importance`` (``H×W`` is applied to every image);
            ``None`` = the whole image.

    Returns:
        bool map of the input's shape and type.
    """
    if not 0.0 <= float(area_fraction) <= 1.0:
        raise ValueError(f"area_fraction: must be in [0, 1], got {area_fraction!r}")
    is_tensor = isinstance(importance, torch.Tensor)
    array = importance.detach().cpu().numpy() if is_tensor else np.asarray(importance)
    array = array.astype(np.float64)
    inside = np.ones(array.shape, bool) if fov is None else np.broadcast_to(_to_numpy(fov).astype(bool), array.shape)
    flat = array.reshape(_batch_shape(array), -1)
    flat_inside = inside.reshape(flat.shape)
    binary = np.zeros(flat.shape, bool)
    for row, (scores, allowed) in enumerate(zip(flat, flat_inside)):
        candidates = np.flatnonzero(allowed)
        count = int(round(float(area_fraction) * candidates.size))
        if count:
            order = np.argsort(-scores[candidates], kind="stable")
            binary[row, candidates[order[:count]]] = True
    binary = binary.reshape(array.shape)
    return torch.from_numpy(binary).to(importance.device) if is_tensor else binary


def _batch_shape(array: np.ndarray | torch.Tensor) -> int:
    """Number of images: 1 for an ``H×W`` map, else the first axis."""
    if array.ndim < 2:
        raise ValueError(f"importance: expected an H×W map or a batch N×…×H×W, got shape {tuple(array.shape)}")
    return 1 if array.ndim == 2 else array.shape[0]


def _to_numpy(value: np.ndarray | torch.Tensor) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
