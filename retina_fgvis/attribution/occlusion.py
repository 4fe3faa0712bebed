"""Occlusion baseline with FGVis's call shape, built on MONAI's :class:`monai.visualize.OcclusionSensitivity`.

A ``window×window`` patch slides over the image with step ``stride``; inside it the image is replaced
by ``fill`` (default 0: the normalised zero, i.e. the data's mean colour, the same reference FGVis
uses). With ``p(·)`` the target class's softmax probability and ``o(i, j)`` MONAI's overlap-averaged
probability over the patches covering pixel (i, j)::

    importance(i, j) = max(0, p(x) − o(i, j)),  then scaled per image to [0, 1] (high = important)

MONAI's occlusion takes one image at a time, so :meth:`Occlusion.attribute` loops over the batch;
each image's patches are evaluated ``batch_size`` at a time.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from monai.visualize import OcclusionSensitivity
from torch import nn

from retina_fgvis.attribution.gradcam import resolve_targets, scale_per_image
from retina_fgvis.checks import check_int
from retina_fgvis.fgvis import model_guard
from retina_fgvis.fgvis.engine import check_inputs

__all__ = ["Occlusion"]


class Occlusion:
    """Occlusion attribution: ``Occlusion(model).attribute(x, target) -> N×1×H×W`` in [0, 1].

    Args:
        model: classifier, ``model(x)`` returns logits N×C.
        window: side of the square occluding patch in pixels.
        stride: step between patches in pixels, ``1 ≤ stride ≤ window``.
        fill: value the patch is replaced with (in the model's input space).
        batch_size: occluded copies evaluated per forward pass.

    The model is evaluated in eval mode without gradients; its modes and ``requires_grad`` flags are restored.
    """

    def __init__(self, model: nn.Module, window: int = 16, stride: int = 8, fill: float = 0.0, batch_size: int = 32):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        check_int("window", window, minimum=1)
        check_int("batch_size", batch_size, minimum=1)
        check_int("stride", stride, minimum=1, maximum=window)
        self.model = model
        self.window = window
        self.stride = stride
        self.fill = float(fill)
        self.batch_size = batch_size

    def attribute(self, inputs: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Occlusion maps for ``inputs``.

        Args:
            inputs: N×C×H×W float tensor in the model's input space (H, W ≥ ``window``), any device.
            target: class per image: ``None`` (most likely class), an int, or N ints (list or tensor).

        Returns:
            N×1×H×W float32 tensor in [0, 1] (high = important) on ``inputs.device``.
        """
        check_inputs(inputs)
        if min(inputs.shape[2:]) < self.window:
            raise ValueError(f"inputs: images of {tuple(inputs.shape[2:])} px are smaller than window={self.window}")
        occlusion = OcclusionSensitivity(
            self.model, mask_size=self.window, n_batch=self.batch_size, verbose=False, mode=self.fill,
            overlap=1.0 - self.stride / self.window)
        x = inputs.detach()
        maps = torch.zeros((x.shape[0], 1, *x.shape[2:]), dtype=torch.float32, device=x.device)
        with model_guard(self.model), torch.no_grad():
            targets = resolve_targets(self.model, x, target)
            clean = self.model(x).softmax(dim=1).gather(1, targets[:, None])[:, 0]
            for row in range(x.shape[0]):
                # MONAI returns 1×classes×H×W: the probabilities with each pixel's patches occluded.
                with warnings.catch_warnings():
                    # MONAI's own indexing style; nothing the caller can act on.
                    warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
                    occluded, _ = occlusion(x[row:row + 1])
                drop = clean[row] - occluded[0, targets[row]].as_tensor()
                maps[row, 0] = drop.clamp_min(0).float()
        return scale_per_image(maps)

