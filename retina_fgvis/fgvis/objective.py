"""The maths of one FGVis step, shared by the engine (eager and compiled) and the diagnostic.

For rows r (an image with a lambda) and the mask ``m`` (R x C x H x W)::

    e       = r + m * (x - r)                                   (= x*m + (1-m)*r, Eq. 1/7)
    L_keep  = -log y_e[c_T] + lam * ||m||_1                     (preservation, generation)
    L_drop  =  y_e[c_T]     + lam * ||1 - m||_1                 (deletion, repression)
    g       = dL/dm / max|dL/dm|                                (per row; g = 0 if dL/dm = 0)
    m      <- clip(m - lr * g, 0, 1)

and the margin of the target logit, ``z[c_T] - max_{k != c_T} z[k]``, with the rule that says when
the drop objective has no gradient left against lambda (:func:`margin_limit`).
"""
from __future__ import annotations

import math

import torch

__all__ = ["MASK_DIMS", "explanation", "game_loss", "gradient_scale", "sgd_update", "logit_margin",
           "margin_limit", "MARGIN_FACTOR"]

MASK_DIMS = (1, 2, 3)
"""The per-row dimensions of a mask (C, H, W)."""

MARGIN_FACTOR = 20.0
"""The drop objective's gradient counts as gone when ``exp(-margin) < MARGIN_FACTOR * lam``."""


def explanation(m: torch.Tensor, diff: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``e = r + m * (x - r)`` with ``diff = x - r`` (R x C x H x W)."""
    return r + m * diff


def game_loss(logits: torch.Tensor, target: torch.Tensor, m: torch.Tensor, lam: torch.Tensor,
              keeps_class: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss (R) and log-probabilities (R x K, float32 or wider) of the game's objective."""
    log_probs = torch.log_softmax(logits.float(), 1)
    log_target = log_probs.gather(1, target[:, None])[:, 0]
    if keeps_class:
        loss = -log_target + lam * m.sum(MASK_DIMS)
    else:
        loss = log_target.exp() + lam * (1 - m).sum(MASK_DIMS)
    return loss, log_probs


def gradient_scale(grad: torch.Tensor) -> torch.Tensor:
    """``max|dL/dm|`` per row (R x 1 x 1 x 1), at least the dtype's smallest normal number.

    A non-finite gradient gives a non-finite scale (``amax`` propagates NaN), so checking the
    scale checks the whole gradient without another pass over it.
    """
    return grad.abs().amax(MASK_DIMS, keepdim=True).clamp_min(torch.finfo(grad.dtype).tiny)


def sgd_update(m: torch.Tensor, grad: torch.Tensor, scale: torch.Tensor, lr: float) -> torch.Tensor:
    """``clip(m - lr * grad / scale, 0, 1)`` (a new tensor)."""
    return (m - lr * grad / scale).clamp_(0, 1)


def logit_margin(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``z[c_T] - max_{k != c_T} z[k]`` per row (R, float32 or wider); ``inf`` for a one-class model."""
    logits = logits.float()
    target_logit = logits.gather(1, target[:, None])[:, 0]
    others = logits.scatter(1, target[:, None], -math.inf)
    return target_logit - others.amax(1)


def margin_limit(lam: torch.Tensor | float) -> torch.Tensor:
    """The largest target-logit margin at which the drop objective still outweighs ``lam``.

    The drop objective's gradient reaches the logits as ``d y/d z = y (1 - y)``, about
    ``exp(-margin)`` for a confident image, while the sparsity term's gradient is ``lam`` per mask
    value.  Below ``exp(-margin) = MARGIN_FACTOR * lam`` the step direction is set by ``lam``, not
    by the class score; at ``lam = 0`` the limit is where ``exp(-margin)`` underflows in float32
    (about 87).  ``lam`` -> ``log(1 / (MARGIN_FACTOR * lam))``, e.g. 20.0 for ``lam = 1e-10``.
    """
    lam = torch.as_tensor(lam, dtype=torch.float64)
    underflow = -math.log(torch.finfo(torch.float32).tiny)
    limit = -torch.log(MARGIN_FACTOR * lam)
    return torch.where(lam > 0, limit.clamp(max=underflow), torch.full_like(lam, underflow))
