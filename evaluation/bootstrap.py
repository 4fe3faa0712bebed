"""Bootstrap confidence intervals over images.

The unit resampled is the image: lesions of one photograph are not independent (same eye, same camera,
same model behaviour), so resampling lesions would make intervals too narrow. :func:`resample_images`
draws ``n_resamples`` index vectors of ``n_images`` images with replacement from a generator seeded with
``seed``; every statistic of a comparison is evaluated on the same resamples (a paired bootstrap).
The interval is the percentile interval: the ``(1 − level)/2`` and ``(1 + level)/2`` quantiles of the
statistic over the resamples where it is defined (a resample without a lesion of a type has no sensitivity
for it).
"""
from __future__ import annotations

import math

import numpy as np

from retina_fgvis.checks import check_int

__all__ = ["LEVEL", "N_RESAMPLES", "percentile_interval", "pooled_ratio_interval", "resample_images",
           "intervals_overlap"]

#: Resamples per interval.
N_RESAMPLES = 1000
#: Coverage of the intervals.
LEVEL = 0.95


def resample_images(n_images: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Image indices, ``n_resamples × n_images`` ints in ``[0, n_images)``, drawn with replacement (seeded)."""
    check_int("n_images", n_images, minimum=1)
    check_int("n_resamples", n_resamples, minimum=1)
    check_int("seed", seed, minimum=0)
    return np.random.default_rng(seed).integers(0, n_images, size=(n_resamples, n_images))


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """``(low, high)`` percentile interval of the finite ``samples`` (NaN, NaN when there is none)."""
    if not 0 < float(level) < 1:
        raise ValueError(f"level: expected a coverage in (0, 1), got {level!r}")
    values = np.asarray(samples, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def pooled_ratio_interval(numerators: np.ndarray, denominators: np.ndarray, resamples: np.ndarray,
                          level: float = LEVEL) -> tuple[float, float]:
    """Interval of the pooled ratio ``Σ numerator / Σ denominator`` over the images of each resample.

    Args:
        numerators, denominators: one value per image (e.g. lesions hit and lesions of a type), length n.
        resamples: B×n image indices from :func:`resample_images`.
    """
    numerators, denominators = np.asarray(numerators, float), np.asarray(denominators, float)
    top, bottom = numerators[resamples].sum(axis=1), denominators[resamples].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(bottom > 0, top / np.where(bottom > 0, bottom, 1), np.nan)
    return percentile_interval(ratios, level)


def intervals_overlap(first: tuple[float, float] | None, second: tuple[float, float] | None) -> bool | None:
    """Whether two closed intervals share a point; ``None`` when either is missing or undefined."""
    if first is None or second is None or not all(
            value is not None and math.isfinite(value) for value in (*first, *second)):
        return None
    return bool(first[0] <= second[1] and second[0] <= first[1])
