"""Grad-CAM and Grad-CAM++ baselines with FGVis's call shape, built on MONAI's
:class:`monai.visualize.GradCAM` and :class:`monai.visualize.GradCAMpp`.

For target class c and a convolutional layer with activations ``A`` (N×K×h×w), Grad-CAM::

    α_k = mean_{i,j} ∂y_c / ∂A_k[i, j]          (y_c: the class logit)
    cam = ReLU(Σ_k α_k · A_k)                    (N×1×h×w)

Grad-CAM++ (Chattopadhyay et al., 2018) weights each position's positive gradient instead, with
``g = ∂y_c/∂A``: ``α_k[i,j] = g² / (2g² + Σ_{i,j} A_k · g³)`` and ``w_k = Σ_{i,j} α_k[i,j] · ReLU(exp(y_c) · g)``,
``cam = ReLU(Σ_k w_k · A_k)``.

The layer decides the map's resolution. By default (``target_layer=None``) it is the deepest convolutional
block whose output side is at least 1/16 of the input side (:func:`resolution_target_layer`): on the
default FundusCNN (``layout="plain"``) at 256 px that is the last stage, 16×16; on the strided-stem layouts
(``compact``, ``o_O``), whose last stage is 4×4 at 256 px, it is stage 3, 16×16. ``target_layer="last"``
takes the block holding the last ``Conv2d`` (:func:`default_target_layer`) whatever its resolution.

``cam`` is upsampled bilinearly to the input size and scaled per image to [0, 1] with
**high = important**. (MONAI's default post-processing maps (min, max) to (1, 0), the opposite
direction, so it is replaced here.)
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from monai.visualize import GradCAM as _MonaiGradCAM
from monai.visualize import GradCAMpp as _MonaiGradCAMpp
from torch import nn

from retina_fgvis.fgvis import model_guard
from retina_fgvis.fgvis.engine import check_inputs

__all__ = ["GradCAM", "GradCAMpp", "LAST_LAYER", "MIN_MAP_FRACTION", "default_target_layer",
           "resolution_target_layer", "resolve_targets", "scale_per_image"]

#: ``target_layer`` value that selects the last convolutional block.
LAST_LAYER = "last"
#: The default layer's map side is at least this fraction of the input side.
MIN_MAP_FRACTION = 1 / 16


class GradCAM:
    """Grad-CAM attribution: ``GradCAM(model).attribute(x, target) -> N×1×H×W`` in [0, 1].

    Args:
        model: classifier, ``model(x)`` returns logits N×C.
        target_layer: name of the module (as in ``model.named_modules()``) whose output is used;
            ``None`` = :func:`resolution_target_layer` for the inputs' size (the deepest conv block whose
            map side is ≥ 1/16 of the input side); ``"last"`` = :func:`default_target_layer`.

    The maps are computed on a private copy of the model (put in eval mode, parameters frozen), so
    the caller's model keeps no hooks and its mode, ``requires_grad`` flags and ``.grad`` fields are
    untouched.
    """

    _monai_cam = _MonaiGradCAM
    _images_per_call: int | None = None  # None: all images of one target class at once

    def __init__(self, model: nn.Module, target_layer: str | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        names = dict(model.named_modules())
        if target_layer == LAST_LAYER:
            target_layer = default_target_layer(model)
        elif target_layer is not None and (target_layer not in names or target_layer == ""):
            raise ValueError(f"target_layer: {target_layer!r} is not a submodule name of the model")
        self.model = model
        self.target_layer = target_layer

    def layer_for(self, input_shape: Sequence[int]) -> str:
        """The layer used for inputs of shape N×C×H×W: the one given, else :func:`resolution_target_layer`."""
        if self.target_layer is not None:
            return self.target_layer
        return resolution_target_layer(self.model, input_shape)

    def attribute(self, inputs: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Grad-CAM maps for ``inputs``.

        Args:
            inputs: N×C×H×W float tensor in the model's input space, any device.
            target: class per image: ``None`` (most likely class), an int, or N ints (list or tensor).

        Returns:
            N×1×H×W float32 tensor in [0, 1] (high = important) on ``inputs.device``.
        """
        check_inputs(inputs)
        net = frozen_copy(self.model)
        # The input carries the gradient, so the target layer is reached even with frozen weights.
        x = inputs.detach().clone().requires_grad_(True)
        targets = resolve_targets(net, x, target)
        cam = self._monai_cam(net, target_layers=self.layer_for(inputs.shape), postprocessing=scale_per_image)
        maps = torch.zeros((x.shape[0], 1, *x.shape[2:]), dtype=torch.float32, device=inputs.device)
        with torch.enable_grad():
            # MONAI scores one class index per call; images sharing a target go in one batch.
            for cls in targets.unique().tolist():
                rows = (targets == cls).nonzero().flatten()
                for chunk in rows.split(self._images_per_call or len(rows)):
                    maps[chunk] = cam(x[chunk], class_idx=int(cls)).detach().float()
        return maps


class GradCAMpp(GradCAM):
    """Grad-CAM++ attribution (MONAI's :class:`monai.visualize.GradCAMpp`), same arguments and output as :class:`GradCAM`."""

    _monai_cam = _MonaiGradCAMpp
    # MONAI's Grad-CAM++ multiplies the N class scores into the N×K×h×w gradients, which broadcasts only for N = 1.
    _images_per_call = 1


def _conv_blocks(model: nn.Module) -> list[str]:
    """One name per ``Conv2d`` in registration order: the conv together with its enclosing block when that
    block is an ``nn.Sequential`` without linear layers (e.g. conv → batch norm → activation), so a map is
    read after the block's nonlinearity."""
    modules = dict(model.named_modules())
    blocks = []
    for name, module in modules.items():
        if not isinstance(module, nn.Conv2d):
            continue
        parent = name.rpartition(".")[0]
        if parent and isinstance(modules[parent], nn.Sequential) and not any(
                isinstance(inner, nn.Linear) for inner in modules[parent].modules()):
            name = parent
        if name not in blocks:
            blocks.append(name)
    if not blocks:
        raise ValueError("model: has no Conv2d layer for Grad-CAM; pass target_layer explicitly")
    return blocks


def default_target_layer(model: nn.Module) -> str:
    """The block holding the last ``Conv2d`` (the ``"last"`` layer): see :func:`_conv_blocks`."""
    return _conv_blocks(model)[-1]


def resolution_target_layer(model: nn.Module, input_shape: Sequence[int], min_fraction: float = MIN_MAP_FRACTION) -> str:
    """The deepest conv block whose output map side is at least ``min_fraction`` of the input side.

    Found by one forward pass of zeros shaped ``1×C×H×W`` (``input_shape[1:]``) with forward hooks on every
    conv block; hooks are removed and the model's modes and flags restored, also on error. Falls back to the
    first block when none is that fine.
    """
    blocks = _conv_blocks(model)
    modules = dict(model.named_modules())
    sides: dict[str, tuple[int, int]] = {}

    def record(name: str):
        def hook(_module, _inputs, output) -> None:
            sides[name] = tuple(output.shape[-2:])
        return hook

    handles = [modules[name].register_forward_hook(record(name)) for name in blocks]
    parameter = next(model.parameters(), None)
    probe = torch.zeros((1, *input_shape[1:]), device=parameter.device if parameter is not None else "cpu")
    try:
        with model_guard(model), torch.no_grad():
            model(probe)
    finally:
        for handle in handles:
            handle.remove()
    height, width = input_shape[-2:]
    fine = [name for name in blocks if name in sides
            and sides[name][0] >= min_fraction * height and sides[name][1] >= min_fraction * width]
    return fine[-1] if fine else blocks[0]


def frozen_copy(model: nn.Module) -> nn.Module:
    """A private eval-mode copy with frozen weights: hooks and gradients never touch the user's model."""
    return copy.deepcopy(model).eval().requires_grad_(False)


def resolve_targets(model: nn.Module, inputs: torch.Tensor,
                    target: int | Sequence[int] | torch.Tensor | None) -> torch.Tensor:
    """Target class per image as a long tensor (N) on ``inputs.device``; ``None`` = top-1 class.

    ``model`` must already be in the mode it is evaluated in.
    """
    with torch.no_grad():
        num_classes = model(inputs[:1]).shape[1]
        if target is None:
            return torch.cat([model(chunk).argmax(dim=1) for chunk in inputs.split(32)])
    if isinstance(target, bool):
        raise TypeError("target: expected an int, a sequence of ints or a tensor, got a bool")
    targets = torch.as_tensor(target, device=inputs.device)
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(f"target: expected integer class indices, got {targets.dtype}")
    targets = targets.long().flatten().expand(inputs.shape[0]) if targets.numel() == 1 else targets.long()
    if targets.shape != (inputs.shape[0],):
        raise ValueError(f"target: expected one class per image ({inputs.shape[0]}), got shape {tuple(targets.shape)}")
    if bool(((targets < 0) | (targets >= num_classes)).any()):
        raise ValueError(f"target: class indices must be in [0, {num_classes}), got {targets.tolist()}")
    return targets.clone()


def scale_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Min-max scale each image's map (N×…) to [0, 1]; a constant map becomes all zeros."""
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.amin(dim=1, keepdim=True)
    span = flat.amax(dim=1, keepdim=True) - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)
