"""Helpers that write small fundus fixtures in the published formats."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def fundus_array(height: int = 48, width: int = 60, seed: int = 0) -> np.ndarray:
    """A uint8 RGB 'fundus': a reddish textured disc (diameter = height) on black."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    disc = (xs - (width - 1) / 2) ** 2 + (ys - (height - 1) / 2) ** 2 <= (height / 2) ** 2
    image = np.zeros((height, width, 3), np.uint8)
    base = np.array([200, 90, 60]) + rng.integers(-15, 15, (height, width, 1))
    image[disc] = np.clip(base[disc], 0, 255)
    return image


def write_image(path: Path, rgb: np.ndarray, quality: int = 95) -> Path:
    """Write RGB as JPEG or PNG by suffix (like the published files)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if path.suffix in (".jpeg", ".jpg") else []
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    return path
