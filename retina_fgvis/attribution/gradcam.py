"""Grad-CAM baseline with FGVis's call shape, built on MONAI's :class:`monai.visualize.GradCAM`.

For target class c and a convolutional layer with activations ``A`` (N×K×h×w)::

    α_k = mean_{i,j} ∂y_c / ∂A_k[i, j]          (y_c: the class logit)
    cam = ReLU(Σ_k α_k · A_k)                    (N×1×h×w)

``cam`` is upsampled bilinearly to the input size and scaled per image to [0, 1] with
**high = important**. (MONAI's default post-processing maps (min, max) to (1, 0), the opposite
direction, so it is replaced here.)
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from monai.visualize import GradCAM as _MonaiGradCAM
from torch import nn

from retina_fgvis.fgvis.engine import check_inputs

__all__ = ["GradCAM", "default_target_layer", "resolve_targets", "scale_per_image"]


class GradCAM:
    """Grad-CAM attribution: ``GradCAM(model).attribute(x, target) -> N×1×H×W`` in [0, 1].

    Args:
        model: classifier, ``model(x)`` returns logits N×C.
        target_layer: name of the module (as in ``model.named_modules()``) whose output is used;
            ``None`` = :func:`default_target_layer` (the block holding the last ``Conv2d``).

    The maps are computed on a private copy of the model (put in eval mode, parameters frozen), so
    the caller's model keeps no hooks and its mode, ``requires_grad`` flags and ``.grad`` fields are
    untouched.
    """

    def __init__(self, model: nn.Module, target_layer: str | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        names = dict(model.named_modules())
        if target_layer is None:
            target_layer = default_target_layer(model)
        elif target_layer not in names or target_layer == "":
            raise ValueError(f"target_layer: {target_layer!r} is not a submodule name of the model")
        self.model = model
        self.target_layer = target_layer

    def attribute(self, inputs: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Grad-CAM maps for ``inputs``.

        Args:
            inputs: N×C×H×W float tensor in the model's input space, any device.
            target: class per image: ``None`` (most likely class), an int, or N ints (list or tensor).

        Returns:
            N×1×H×W float32 tensor in [0, 1] (high = important) on ``inputs.device``.
        """
        check_inputs(inputs)
        net = copy.deepcopy(self.model).eval().requires_grad_(False)
        # The input carries the gradient, so the target layer is reached even with frozen weights.
        x = inputs.detach().clone().requires_grad_(True)
        targets = resolve_targets(net, x, target)
        cam = _MonaiGradCAM(net, target_layers=self.target_layer, postprocessing=scale_per_image)
        maps = torch.zeros((x.shape[0], 1, *x.shape[2:]), dtype=torch.float32, device=inputs.device)
        with torch.enable_grad():
            # MONAI scores one class index per call; images sharing a target go in one batch.
            for cls in targets.unique().tolist():
                rows = (targets == cls).nonzero().flatten()
                maps[rows] = cam(x[rows], class_idx=int(cls)).detach().float()
        return maps


def default_target_layer(model: nn.Module) -> str:
    """The module whose output Grad-CAM uses when none is given.

    The last ``Conv2d`` in registration order, taken together with its enclosing block when that block
    is an ``nn.Sequential`` without linear layers (e.g. conv → batch norm → activation), so the map is
    read after the block's nonlinearity.
    """
    modules = dict(model.named_modules())
    convs = [name for name, module in modules.items() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValueError("model: has no Conv2d layer for Grad-CAM; pass target_layer explicitly")
    name = convs[-1]
    parent = name.rpartition(".")[0]
    if parent and isinstance(modules[parent], nn.Sequential) and not any(
            isinstance(module, nn.Linear) for module in modules[parent].modules()):
        return parent
    return name


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
