"""Input-gradient baselines with FGVis's call shape, built on MONAI's :class:`monai.visualize.VanillaGrad`
and :class:`monai.visualize.SmoothGrad`.

For target class c with logit ``y_c`` and input ``x`` (N×C×H×W):

* :class:`VanillaGradient` (Simonyan et al., 2014): ``g = ∂y_c/∂x``;
* :class:`SmoothGradient` (Smilkov et al., 2017): ``g = sqrt(mean_s (∂y_c/∂x |_{x + ε_s})²)`` over ``n_samples``
  noisy copies, ``ε_s ~ N(0, σ²)`` with ``σ = noise · (max x − min x)`` of that image.

The map is ``max_channels |g|`` (N×1×H×W), scaled per image to [0, 1] (high = important). MONAI computes one
image at a time, so the batch is looped over. The SmoothGrad noise comes from a generator seeded with ``seed``
for every image, so an image's map does not depend on the batch it is in.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from monai.visualize import SmoothGrad, VanillaGrad
from torch import nn

from retina_fgvis.attribution.gradcam import frozen_copy, resolve_targets, scale_per_image
from retina_fgvis.checks import check_int
from retina_fgvis.fgvis.engine import check_inputs

__all__ = ["SmoothGradient", "VanillaGradient"]


class VanillaGradient:
    """Gradient saliency: ``VanillaGradient(model).attribute(x, target) -> N×1×H×W`` in [0, 1].

    Args:
        model: classifier, ``model(x)`` returns logits N×C.

    The gradients are taken on a private copy of the model (eval mode, parameters frozen), so the caller's
    model keeps no hooks and its mode, ``requires_grad`` flags and ``.grad`` fields are untouched.
    """

    def __init__(self, model: nn.Module):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
        self.model = model

    def _saliency(self, net: nn.Module) -> VanillaGrad:
        return VanillaGrad(net)

    def attribute(self, inputs: torch.Tensor, target: int | Sequence[int] | torch.Tensor | None = None) -> torch.Tensor:
        """Gradient maps for ``inputs``: the per-pixel max over channels of ``|∂y[c_T]/∂x|``, scaled per image.

        ``inputs`` (N×C×H×W, any device) and ``target`` as for :meth:`GradCAM.attribute
        <retina_fgvis.attribution.GradCAM.attribute>`; returns N×1×H×W float32 in [0, 1] on ``inputs.device``.
        """
        check_inputs(inputs)
        net = frozen_copy(self.model)
        x = inputs.detach()
        targets = resolve_targets(net, x, target)
        saliency = self._saliency(net)
        maps = torch.zeros((x.shape[0], 1, *x.shape[2:]), dtype=torch.float32, device=x.device)
        with torch.enable_grad():
            for row in range(x.shape[0]):
                with self._noise(x.device):
                    grad = saliency(x[row:row + 1].clone(), index=int(targets[row]))
                maps[row, 0] = grad[0].abs().amax(dim=0).float()
        return scale_per_image(maps)

    def _noise(self, device: torch.device) -> contextlib.AbstractContextManager:
        """Context for one image's gradient; the vanilla gradient draws no noise."""
        return contextlib.nullcontext()


class SmoothGradient(VanillaGradient):
    """SmoothGrad saliency: ``SmoothGradient(model).attribute(x, target) -> N×1×H×W`` in [0, 1].

    Args:
        model: classifier, ``model(x)`` returns logits N×C.
        n_samples: noisy copies per image.
        noise: noise standard deviation as a fraction of each image's value range (MONAI's ``stdev_spread``).
        seed: seed of the noise, the same for every image.
    """

    def __init__(self, model: nn.Module, n_samples: int = 25, noise: float = 0.15, seed: int = 0):
        super().__init__(model)
        check_int("n_samples", n_samples, minimum=1)
        check_int("seed", seed, minimum=0)
        if not float(noise) >= 0:
            raise ValueError(f"noise: expected a fraction of the value range ≥ 0, got {noise!r}")
        self.n_samples = n_samples
        self.noise = float(noise)
        self.seed = seed

    def _saliency(self, net: nn.Module) -> SmoothGrad:
        return SmoothGrad(net, stdev_spread=self.noise, n_samples=self.n_samples, magnitude=True, verbose=False)

    @contextlib.contextmanager
    def _noise(self, device: torch.device) -> Iterator[None]:
        # MONAI draws from the global generator; a forked, seeded one leaves the caller's stream as it was.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(self.seed)
            yield
