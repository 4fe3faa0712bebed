"""One validation rule for the explained classes, shared by FGVis and the baselines.

``target`` is ``None`` (each image's most likely class on the clean input), an int, or N ints
(sequence or integer tensor).  :func:`check_target` checks everything that does not need the
model (type, count, sign); :func:`check_class_range` checks the upper bound once the model's
number of classes is known.
"""
from __future__ import annotations

import torch

from retina_fgvis.checks import is_integer

__all__ = ["TOP_CLASS", "check_target", "check_class_range"]

TOP_CLASS = -1
"""Stands for "the clean image's most likely class" in a checked target tensor."""


def check_target(target, n: int, device=None) -> torch.Tensor:
    """N long class indices on ``device``; ``None`` gives N times :data:`TOP_CLASS`.

    Raises ``TypeError`` (not integers) or ``ValueError`` (wrong count, negative) naming ``target``.
    """
    if target is None:
        return torch.full((n,), TOP_CLASS, dtype=torch.long, device=device)
    if isinstance(target, bool) or (isinstance(target, torch.Tensor) and target.is_floating_point()):
        raise TypeError(f"target: expected int class indices, got {target!r}")
    if is_integer(target):
        values = torch.full((n,), int(target), dtype=torch.long)
    else:
        try:
            values = torch.as_tensor(target).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"target: expected None, an int, or {n} ints") from None
        if values.is_floating_point() or values.dtype == torch.bool or values.is_complex():
            raise TypeError(f"target: expected int class indices, got dtype {values.dtype}")
        if values.numel() == 1:
            values = values.expand(n)
        if values.numel() != n:
            raise ValueError(f"target: has {values.numel()} entries for {n} images")
    if (values < 0).any():
        raise ValueError(f"target: class indices must be >= 0, got {values.tolist()}")
    return values.to(device=device, dtype=torch.long)


def check_class_range(targets: torch.Tensor, classes: int) -> None:
    """``ValueError`` naming ``target`` if an index (other than :data:`TOP_CLASS`) is >= ``classes``."""
    if (targets >= classes).any():
        raise ValueError(f"target: class indices must be < {classes} (the model's classes), "
                         f"got {targets.unique().tolist()}")
