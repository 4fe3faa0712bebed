"""The lambda line search of Sec. A2: sequential or batched over lambda, same answer.

From the largest lambda down, the first lambda whose result meets the stop rule (by default
:class:`~retina_fgvis.fgvis.stops.ClassShift`) is accepted for that image; higher lambda gives
sparser masks (Fig. A2), so the first success is the sparsest.  An image with no success gets
the smallest lambda's result with ``success=False``.

Both strategies call ``run(row_image, row_lam) -> dict of per-row tensors`` (one row = one
image optimised with one lambda; the dict holds at least ``"success"``).  Every row is
optimised independently from the same seeded start, so both pick the same lambda.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from retina_fgvis.checks import check_int

Run = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def lambda_grid(start: float = 1e-4, stop: float = 1e-10, num: int = 13) -> list[float]:
    """``num`` log-spaced values from ``start`` to ``stop`` (default 1e-4, 10^-4.5, ..., 1e-10).

    The paper says "equally spaced"; linear spacing would put 12 of 13 values above 8e-6,
    so the grid is equally spaced in log10.
    """
    if not (start > 0 and stop > 0 and math.isfinite(start) and math.isfinite(stop)):
        raise ValueError(f"lam_grid: start and stop must be finite and > 0, got {start}, {stop}")
    check_int("lam_grid num", num, minimum=1)
    if num == 1:
        return [float(start)]
    a, b = math.log10(start), math.log10(stop)
    return [10 ** (a + (b - a) * i / (num - 1)) for i in range(num)]


def check_grid(grid: Sequence[float] | torch.Tensor) -> list[float]:
    """Validate a lambda grid and order it largest first."""
    try:
        values = [float(v) for v in (grid.tolist() if isinstance(grid, torch.Tensor) else grid)]
    except (TypeError, ValueError):
        raise TypeError("lam_grid: expected a sequence of floats") from None
    if not values:
        raise ValueError("lam_grid: is empty")
    if not all(math.isfinite(v) and v >= 0 for v in values):
        raise ValueError(f"lam_grid: values must be finite and >= 0, got {values}")
    return sorted(values, reverse=True)


def _empty_like_rows(results: dict[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {k: v.new_empty((n,) + tuple(v.shape[1:])) for k, v in results.items()}


def search_sequential(run: Run, n_images: int, grid: Sequence[float], device) -> dict[str, torch.Tensor]:
    """One lambda at a time, only over the images not accepted yet.  Adds ``"lam"`` (n)."""
    pending = torch.arange(n_images, device=device)
    out: dict[str, torch.Tensor] | None = None
    for k, lam in enumerate(grid):
        res = run(pending, torch.full((len(pending),), lam, device=device, dtype=torch.float64))
        if out is None:
            out = _empty_like_rows(res, n_images)
            out["lam"] = torch.empty(n_images, device=device, dtype=torch.float64)
        res["lam"] = torch.full((len(pending),), lam, device=device, dtype=torch.float64)
        accept = res["success"] | (k == len(grid) - 1)
        for key, value in res.items():
            out[key][pending[accept]] = value[accept]
        pending = pending[~accept]
        if len(pending) == 0:
            break
    return out


def search_batched(run: Run, n_images: int, grid: Sequence[float], device) -> dict[str, torch.Tensor]:
    """All images x lambdas as rows of one run (chunked by the engine's batch_size)."""
    k = len(grid)
    lams = torch.tensor(list(grid), device=device, dtype=torch.float64)
    row_image = torch.arange(n_images, device=device).repeat_interleave(k)
    row_lam = lams.repeat(n_images)
    res = run(row_image, row_lam)
    res["lam"] = row_lam
    success = res["success"].view(n_images, k)
    # argmax returns the first maximum: the largest lambda that succeeded.
    first = torch.where(success.any(1), success.to(torch.uint8).argmax(1), k - 1)
    pick = torch.arange(n_images, device=device) * k + first
    return {key: value[pick] for key, value in res.items()}
