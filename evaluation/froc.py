"""FROC curves per lesion type and the Retinopathy Online Challenge score.

A localization map is binarized at a sweep of operating points, each restricted to the field of view (FOV):

* ``"relative"``: ``importance ≥ t · max`` for the thresholds :data:`RELATIVE_THRESHOLDS` (strict to loose),
  within the top :data:`MAX_AREA` of the FOV;
* ``"area"``: the top ``a · |FOV|`` pixels (:func:`retina_fgvis.binarize.binarize_top_fraction`) for the
  area fractions :data:`AREA_FRACTIONS`, the same for every method (a threshold-free comparison).

Neither sweep marks more than :data:`MAX_AREA` (20 %) of an image's FOV: a map binarized to most of the
retina is one component touching every lesion, all hits and no false positive, which would make the
flattest map (a random one) the best.

At each operating point, pooled over images: lesion-level **sensitivity** per lesion type (``Σ hits / Σ lesions``,
a lesion is an 8-connected component of the consensus mask, hit when the detection dilated by ``tolerance``
pixels touches it) against the mean number per image of **false-positive components** (8-connected components
of the detection touching no lesion of any type, after the same dilation of the lesions). These are the rules of
:mod:`retina_fgvis.evaluation.localization`; the false-positive axis is shared by all lesion types, so a
detection on a hemorrhage is no false positive of the exudate curve.

Both sweeps nest their detections (a looser point marks a superset of pixels), so sensitivity never falls as
the point loosens; the false-positive count may (components merge).

**ROC score** (Niemeijer et al., "Retinopathy Online Challenge", IEEE TMI 2010): the mean sensitivity at
1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per image, read off the curve by this rule:

1. points sorted by false positives per image; at each the best sensitivity of any point with at most that
   many false positives (the curve is made non-decreasing, as an operating point with fewer false positives
   and more hits dominates);
2. the origin (0 FP, sensitivity 0: nothing detected) is added;
3. sensitivity is interpolated linearly in false positives per image between neighbouring points, and held
   at the last point's value beyond the largest false-positive rate measured (no extrapolation).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from skimage import measure

from retina_fgvis.binarize import binarize_relative, binarize_top_fraction
from retina_fgvis.datasets import LESION_TYPES
from retina_fgvis.evaluation.bootstrap import LEVEL, percentile_interval
from retina_fgvis.evaluation.localization import check_tolerance, dilate

__all__ = ["AREA_FRACTIONS", "FROCCurve", "MAX_AREA", "RELATIVE_THRESHOLDS", "ROC_FP_RATES", "SWEEPS", "roc_score"]

#: Relative thresholds (fraction of each map's maximum), strict to loose; 0.04 is the paper's.
RELATIVE_THRESHOLDS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.07, 0.04, 0.02, 0.01)
#: Area fractions of the FOV, strict to loose.
AREA_FRACTIONS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
SWEEPS = {"relative": RELATIVE_THRESHOLDS, "area": AREA_FRACTIONS}
#: Largest share of an image's FOV a sweep point may mark.
MAX_AREA = AREA_FRACTIONS[-1]
#: False positives per image at which the Retinopathy Online Challenge reads the sensitivity.
ROC_FP_RATES = (1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8)


def roc_score(fp_per_image: Sequence[float], sensitivity: Sequence[float],
              fp_rates: Sequence[float] = ROC_FP_RATES) -> float:
    """Mean sensitivity at ``fp_rates`` on the FROC curve ``(fp_per_image, sensitivity)`` (rule: module docstring).

    NaN when no point has a defined sensitivity (no lesion of that type).
    """
    fp, sens = np.asarray(fp_per_image, float), np.asarray(sensitivity, float)
    keep = np.isfinite(fp) & np.isfinite(sens)
    if not keep.any():
        return math.nan
    fp, sens = fp[keep], sens[keep]
    order = np.argsort(fp, kind="stable")
    fp, sens = fp[order], np.maximum.accumulate(sens[order])
    # Equal false-positive rates: the running maximum makes the last of each group the best.
    rates, last = np.unique(fp[::-1], return_index=True)
    best = sens[::-1][last]
    if rates[0] > 0:
        rates, best = np.concatenate([[0.0], rates]), np.concatenate([[0.0], best])
    return float(np.mean(np.interp(np.asarray(fp_rates, float), rates, best)))


class FROCCurve:
    """FROC curves of one method over one sweep: ``update`` per image, ``summary`` pooled, ``reset``.

    Args:
        sweep: ``"relative"`` or ``"area"`` (see the module docstring).
        operating_points: the sweep's thresholds or area fractions, strict to loose (default: :data:`SWEEPS`).
        tolerance: hit tolerance in pixels.
        lesion_types: the types scored.

    Per-image counts are kept (``hits`` n×P×T, ``lesions`` n×T, ``false_positives`` n×P) so that the
    bootstrap can resample images (:meth:`score_interval`).
    """

    def __init__(self, sweep: str = "relative", operating_points: Sequence[float] | None = None,
                 tolerance: int = 0, lesion_types: Sequence[str] = LESION_TYPES) -> None:
        if sweep not in SWEEPS:
            raise ValueError(f"sweep: expected one of {', '.join(SWEEPS)}, got {sweep!r}")
        self.sweep = sweep
        self.operating_points = tuple(float(p) for p in (SWEEPS[sweep] if operating_points is None
                                                         else operating_points))
        if not self.operating_points:
            raise ValueError("operating_points: give at least one")
        self.tolerance = check_tolerance(tolerance)
        self.lesion_types = tuple(lesion_types)
        self.reset()

    def reset(self) -> None:
        self._hits: list[np.ndarray] = []
        self._lesions: list[np.ndarray] = []
        self._false_positives: list[np.ndarray] = []

    def _detection(self, importance: np.ndarray, point: float, fov: np.ndarray, cap: np.ndarray) -> np.ndarray:
        """One point's detection; ``cap`` = the top :data:`MAX_AREA` of the FOV."""
        if not importance.max() > 0:  # an empty map detects nothing at any point (as binarize_relative rules)
            return np.zeros(importance.shape, bool)
        if self.sweep == "relative":
            return binarize_relative(importance, point) & cap
        return binarize_top_fraction(importance, min(point, MAX_AREA), fov=fov) & fov

    def update(self, importance: np.ndarray, fov: np.ndarray, lesions: Mapping[str, np.ndarray]) -> None:
        """Add one image: H×W importance map (high = important), bool FOV, ``{lesion_type: bool H×W}`` masks."""
        importance = np.asarray(importance, dtype=np.float32)
        fov = np.asarray(fov, dtype=bool)
        empty = np.zeros(importance.shape, bool)
        labels = [measure.label(np.asarray(lesions.get(t, empty), bool), connectivity=2) for t in self.lesion_types]
        any_lesion = dilate(np.logical_or.reduce([label > 0 for label in labels]), self.tolerance)
        hits = np.zeros((len(self.operating_points), len(self.lesion_types)), int)
        false_positives = np.zeros(len(self.operating_points), int)
        cap = binarize_top_fraction(importance, MAX_AREA, fov=fov) & fov if self.sweep == "relative" else None
        for index, point in enumerate(self.operating_points):
            detection = self._detection(importance, point, fov, cap)
            reach = dilate(detection, self.tolerance)
            for column, label in enumerate(labels):
                hits[index, column] = np.unique(label[reach & (label > 0)]).size
            components = measure.label(detection, connectivity=2)
            false_positives[index] = int(components.max()) - np.unique(components[any_lesion & (components > 0)]).size
        self._hits.append(hits)
        self._lesions.append(np.array([int(label.max()) for label in labels]))
        self._false_positives.append(false_positives)

    @property
    def n_images(self) -> int:
        return len(self._hits)

    def counts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-image ``(hits n×P×T, lesions n×T, false positives n×P)``."""
        if not self._hits:
            raise ValueError("FROCCurve: no image added yet")
        return np.stack(self._hits), np.stack(self._lesions), np.stack(self._false_positives)

    def _curves(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For B×n image index resamples: (sensitivity B×P×T, false positives per image B×P)."""
        hits, lesions, false_positives = self.counts()
        pooled_hits = hits[images].sum(axis=1)
        pooled_lesions = lesions[images].sum(axis=1)[:, None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            sensitivity = np.where(pooled_lesions > 0, pooled_hits / np.maximum(pooled_lesions, 1), np.nan)
        return sensitivity, false_positives[images].sum(axis=1) / images.shape[1]

    def summary(self) -> dict[str, Any]:
        """``{"sweep", "operating_points", "fp_per_image": [P], "lesion_types": {type: {"sensitivity": [P],
        "roc_score"}}}`` over all images added (NaN sensitivity: no lesion of that type)."""
        sensitivity, false_positives = self._curves(np.arange(self.n_images)[None])
        per_type = {}
        for column, lesion_type in enumerate(self.lesion_types):
            curve = sensitivity[0, :, column]
            per_type[lesion_type] = {"sensitivity": curve.tolist(),
                                     "roc_score": roc_score(false_positives[0], curve)}
        return {"sweep": self.sweep, "operating_points": list(self.operating_points),
                "fp_per_image": false_positives[0].tolist(), "lesion_types": per_type}

    def score_interval(self, resamples: np.ndarray, level: float = LEVEL) -> dict[str, tuple[float, float]]:
        """Bootstrap interval of each lesion type's ROC score over B×n image resamples (``resample_images``)."""
        sensitivity, false_positives = self._curves(np.asarray(resamples))
        return {lesion_type: percentile_interval(
                    [roc_score(fp, curve[:, column]) for fp, curve in zip(false_positives, sensitivity)], level)
                for column, lesion_type in enumerate(self.lesion_types)}
