"""Baseline attribution methods with FGVis's call shape.

``Method(model, ...).attribute(inputs N×C×H×W, target=None|int|list|Tensor) -> N×1×H×W`` in [0, 1],
high = important, on the inputs' device; the caller's model is left as it was.
"""
from retina_fgvis.attribution.gradcam import GradCAM, default_target_layer
from retina_fgvis.attribution.occlusion import Occlusion

__all__ = ["GradCAM", "Occlusion", "default_target_layer"]
