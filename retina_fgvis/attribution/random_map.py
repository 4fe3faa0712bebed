"""A seeded random importance map: the control any explainer must beat.

For an image of H×W, uniform noise ``U(0, 1)`` is drawn on a grid of ``ceil(H/cell)×ceil(W/cell)`` and
upsampled bilinearly to H×W, so the map has blobs about ``cell`` pixels wide, like a coarse saliency map
(``cell=1``: independent pixels). The generator is seeded with ``(seed, crc32 of the image's values)``:
each image gets its own map, the same whatever batch it is computed in. The model and the target are not
looked at.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from retina_fgvis.attribution.gradcam import scale_per_image
from retina_fgvis.checks import check_int
from retina_fgvis.fgvis.engine import check_inputs

__all__ = ["RandomMap"]


class RandomMap:
    """Random attribution: ``RandomMap(seed=0).attribute(x, target) -> N×1×H×W`` in [0, 1].

    Args:
        cell: side in pixels of the noise grid's cells (the blob size), ≥ 1.
        seed: seed, combined with each image's content.
    """

    def __init__(self, cell: int = 8, seed: int = 0):
        check_int("cell", cell, minimum=1)
        check_int("seed", seed, minimum=0)
        self.cell = cell
        self.seed = seed

    def attribute(self, inputs: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Random maps for ``inputs`` (N×C×H×W float tensor, any device); ``target`` is ignored.

        Returns:
            N×1×H×W float32 tensor in [0, 1] on ``inputs.device``.
        """
        check_inputs(inputs)
        height, width = inputs.shape[2:]
        grid = (math.ceil(height / self.cell), math.ceil(width / self.cell))
        images = inputs.detach().float().cpu().numpy()
        noise = np.stack([
            np.random.default_rng([self.seed, zlib.crc32(image.tobytes())]).random(grid, dtype=np.float32)
            for image in images])
        maps = F.interpolate(torch.from_numpy(noise)[:, None], size=(height, width), mode="bilinear",
                             align_corners=False)
        return scale_per_image(maps).to(inputs.device)
