"""Baseline attribution methods with FGVis's call shape.

``Method(model, ...).attribute(inputs N×C×H×W, target=None|int|list|Tensor) -> N×1×H×W`` in [0, 1],
high = important, on the inputs' device; the caller's model is left as it was (no hooks, modes and
``requires_grad`` flags restored). :class:`RandomMap` takes no model: it is the control.
"""
from retina_fgvis.attribution.gradcam import (GradCAM, GradCAMpp, default_target_layer,
                                              resolution_target_layer)
from retina_fgvis.attribution.gradients import SmoothGradient, VanillaGradient
from retina_fgvis.attribution.occlusion import Occlusion
from retina_fgvis.attribution.random_map import RandomMap

__all__ = ["GradCAM", "GradCAMpp", "Occlusion", "RandomMap", "SmoothGradient", "VanillaGradient",
           "default_target_layer", "resolution_target_layer"]
