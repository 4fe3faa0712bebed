"""Reference images ``r`` for the removal operator ``e = x*m + (1-m)*r`` (Eq. 1/7).

All references live in the model's (normalised) input space, like the inputs ``x``
(N x C x H x W):

* ``"zero"``  -- ``r = 0`` in the normalised space, i.e. the data's mean colour in pixels.
  This is the paper's choice (Sec. A3.1) and the one Table A1 implies: from a black image,
  ``x*m`` can only create evidence because black is not zero after normalisation.
* ``"black"`` -- pixel black, ``r_c = (0 - mean_c) / std_c``; needs ``normalization``.
* ``"noise"`` -- i.i.d. zero-mean Gaussian noise around the zero reference, standard
  deviation ``noise_std`` in pixel units of the [0, 1] range (default 8/255, the paper's
  sigma_n = 8), divided by ``std_c`` when ``normalization`` is given.
* ``"blur"``  -- the image blurred with a Gaussian of ``blur_sigma`` pixels (blur commutes with
  the per-channel affine normalisation, so it is done in model space).
* a tensor of shape C x H x W, 1 x C x H x W or N x C x H x W.

Random references are a function of ``seed`` and the image shape only, so one image gives the
same reference whatever batch it is in.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torchvision.transforms.v2.functional as TF

REFERENCES = ("zero", "black", "noise", "blur")
#: The references that need no parameters: what ``explain`` and the studies offer by name.
IMAGE_REFERENCES = REFERENCES[:2]


def check_normalization(normalization) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """Validate ``(mean, std)`` (per-channel sequences, images scaled to [0, 1]); ``None`` passes."""
    if normalization is None:
        return None
    try:
        mean, std = normalization
        mean = tuple(float(v) for v in mean)
        std = tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise TypeError("normalization: expected (mean, std), two sequences of per-channel floats") from None
    if len(mean) != len(std) or not mean:
        raise ValueError(f"normalization: mean has {len(mean)} values, std {len(std)}; need one per channel")
    if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
        raise ValueError("normalization: mean must be finite and std finite and > 0")
    return mean, std


def _per_channel(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def make_reference(
    reference: str | torch.Tensor,
    inputs: torch.Tensor,
    *,
    normalization=None,
    noise_std: float = 8 / 255,
    blur_sigma: float = 5.0,
    seed: int = 0,
) -> torch.Tensor:
    """The reference for ``inputs`` (N x C x H x W): a tensor broadcast to N x C x H x W.

    Raises ``ValueError`` naming ``reference`` (unknown name, wrong shape) or ``normalization``
    (missing for ``"black"``, wrong channel count).
    """
    normalization = check_normalization(normalization)
    n, c, h, w = inputs.shape
    if normalization is not None and len(normalization[0]) != c:
        raise ValueError(f"normalization: has {len(normalization[0])} channels, inputs have {c}")
    if isinstance(reference, torch.Tensor):
        ref = reference
        if ref.dim() == 3:
            ref = ref.unsqueeze(0)
        if ref.dim() != 4 or ref.shape[1:] != inputs.shape[1:] or ref.shape[0] not in (1, n):
            raise ValueError(
                f"reference: shape {tuple(reference.shape)} does not fit inputs {tuple(inputs.shape)}; "
                f"expected {c}x{h}x{w}, 1x{c}x{h}x{w} or {n}x{c}x{h}x{w}")
        if not ref.is_floating_point() or not torch.isfinite(ref).all():
            raise ValueError("reference: must be a finite floating-point tensor")
        return ref.to(device=inputs.device, dtype=inputs.dtype).expand(n, c, h, w)
    if reference == "zero":
        return inputs.new_zeros(1, 1, 1, 1).expand(n, c, h, w)
    if reference == "black":
        if normalization is None:
            raise ValueError("normalization: reference='black' needs normalization=(mean, std)")
        mean, std = normalization
        black = -_per_channel(mean, inputs) / _per_channel(std, inputs)
        return black.expand(n, c, h, w)
    if reference == "noise":
        generator = torch.Generator().manual_seed(seed)
        noise = torch.randn((1, c, h, w), generator=generator, dtype=torch.float64)
        noise = (noise * noise_std).to(device=inputs.device, dtype=inputs.dtype)
        if normalization is not None:
            noise = noise / _per_channel(normalization[1], inputs)
        return noise.expand(n, c, h, w)
    if reference == "blur":
        # Odd kernel of about 3 sigma per side, smaller than the image (reflect padding).
        radius = min(math.ceil(3 * blur_sigma), h - 1, w - 1)
        return TF.gaussian_blur(inputs, kernel_size=[2 * radius + 1] * 2, sigma=[blur_sigma] * 2)
    raise ValueError(f"reference: {reference!r} is not one of {REFERENCES} or a tensor")
