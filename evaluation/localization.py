"""Score localization run folders against the experts' lesion markings.

Protocol (stated in full in ``docs/evaluation.md``; the paper leaves it open):

* **Binarization.** Each importance map (H×W, high = important) is binarized at the run's own
  threshold, ``importance ≥ threshold · max`` (default 4 %), and restricted to the field of view (FOV).
* **Lesions.** For each lesion type, a lesion is an 8-connected component of the consensus mask
  (``skimage.measure.label``, connectivity 2). It is *hit* when the binarized mask, dilated by
  ``tolerance`` pixels (a disk), touches at least one of its pixels.
* **Metrics per lesion type**, pooled over images: lesion-level sensitivity ``Σ hits / Σ lesions``;
  pixel-level sensitivity ``Σ |B ∩ L| / Σ |L|`` and precision ``Σ |B ∩ L| / Σ |B|`` (no tolerance);
  image-level detection = images with ≥ 1 hit / images with ≥ 1 lesion of that type.
  False-positive components: 8-connected components of ``B`` touching no lesion of any type, per image.
* **Chance control.** The same binarized mask rotated about the image centre by a seeded random angle
  in [45°, 315°] (nearest neighbour), restricted to the FOV, scored the same way.
* **Intervals.** Every lesion sensitivity (and its chance control) gets a 95 % bootstrap interval over
  images (:mod:`retina_fgvis.evaluation.bootstrap`, resamples seeded with ``seed``).
* **Success.** For a method with a stop rule (FGVis), ``summary["success"]`` counts the explanations
  that met it and repeats the lesion sensitivity (and its chance control) over those images only;
  ``None`` for the baselines.

The metrics are small stateful objects (``update`` per image, ``summary`` pooled, ``reset``).
"""
from __future__ import annotations

import contextlib
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
from rich.table import Table
from skimage import measure, transform

from retina_fgvis._io import atomic_write_csv, atomic_write_json
from retina_fgvis.binarize import binarize_relative, check_threshold
from retina_fgvis.datasets import LESION_TYPES, open_diaretdb1
from retina_fgvis.evaluation.bootstrap import LEVEL, N_RESAMPLES, pooled_ratio_interval, resample_images
from retina_fgvis.runs import RunFolder, RunFolderError, RunKind
from retina_fgvis.runtime import progress_bar

#: Smallest rotation of the chance control, in degrees (a near-zero angle would not be chance).
CHANCE_MIN_ANGLE = 45.0


# --------------------------------------------------------------------------------------------
# Shared mask helpers
# --------------------------------------------------------------------------------------------
def check_tolerance(tolerance: int) -> int:
    """Validate a hit tolerance in pixels (a whole number ≥ 0); ``ValueError`` naming ``tolerance``."""
    if isinstance(tolerance, bool) or int(tolerance) != tolerance or tolerance < 0:
        raise ValueError(f"tolerance: must be a non-negative whole number of pixels, got {tolerance!r}")
    return int(tolerance)


def dilate(mask: np.ndarray, tolerance: int) -> np.ndarray:
    """Dilate a bool H×W mask by a disk of radius ``tolerance`` px (identity for 0)."""
    mask = np.asarray(mask, dtype=bool)
    if tolerance == 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * tolerance + 1, 2 * tolerance + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def lesion_hits(detection: np.ndarray, lesions: np.ndarray, tolerance: int = 0) -> tuple[int, int]:
    """``(hit, total)``: 8-connected components of ``lesions`` touched by ``detection`` dilated by ``tolerance`` px."""
    labels = measure.label(np.asarray(lesions, dtype=bool), connectivity=2)
    touched = np.unique(labels[dilate(detection, tolerance) & (labels > 0)])
    return int(touched.size), int(labels.max())


def check_seed(seed: int) -> int:
    """Validate a chance-control seed (an integer ≥ 0); ``ValueError`` naming ``seed``."""
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
    return int(seed)


def chance_mask(detection: np.ndarray, fov: np.ndarray, image_id: str, seed: int = 0) -> tuple[np.ndarray, float]:
    """The chance control for one image: ``detection`` rotated about the image centre, restricted to ``fov``.

    The angle is drawn uniformly from [45°, 315°] by a generator seeded with ``(seed, crc32(image_id))``,
    so it is the same for every method scored on that image with that seed.

    Returns:
        (bool H×W rotated mask, angle in degrees counter-clockwise).
    """
    rng = np.random.default_rng([check_seed(seed), zlib.crc32(str(image_id).encode("utf-8"))])
    angle = float(rng.uniform(CHANCE_MIN_ANGLE, 360.0 - CHANCE_MIN_ANGLE))
    rotated = transform.rotate(np.asarray(detection, dtype=bool), angle, order=0, preserve_range=True)
    return rotated.astype(bool) & np.asarray(fov, dtype=bool), angle


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else math.nan


# --------------------------------------------------------------------------------------------
# Stateful metrics (update per image, summary over all images seen, reset)
# --------------------------------------------------------------------------------------------
class LesionSensitivity:
    """Lesion-level sensitivity pooled over images: ``Σ hits / Σ lesions`` (NaN before any lesion)."""

    def __init__(self, tolerance: int = 0) -> None:
        self.tolerance = check_tolerance(tolerance)
        self.reset()

    def reset(self) -> None:
        self.hits = 0
        self.lesions = 0

    def update(self, detection: np.ndarray, lesions: np.ndarray) -> tuple[int, int]:
        """Add one image (bool H×W detection and consensus mask); returns its ``(hits, lesions)``."""
        hit, total = lesion_hits(detection, lesions, self.tolerance)
        self.hits += hit
        self.lesions += total
        return hit, total

    def summary(self) -> float:
        return _ratio(self.hits, self.lesions)


class ImageDetection:
    """Image-level detection: images with ≥ 1 lesion hit / images with ≥ 1 lesion (NaN before any)."""

    def __init__(self, tolerance: int = 0) -> None:
        self.tolerance = check_tolerance(tolerance)
        self.reset()

    def reset(self) -> None:
        self.detected = 0
        self.positive = 0

    def update(self, detection: np.ndarray, lesions: np.ndarray) -> bool | None:
        """Add one image; returns whether a lesion was hit, ``None`` when it has no lesion of this type."""
        hit, total = lesion_hits(detection, lesions, self.tolerance)
        if total == 0:
            return None
        self.positive += 1
        self.detected += hit > 0
        return hit > 0

    def summary(self) -> float:
        return _ratio(self.detected, self.positive)


class PixelOverlap:
    """Pixel-level sensitivity ``Σ|B∩L| / Σ|L|`` and precision ``Σ|B∩L| / Σ|B|``, pooled over images."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.overlap = 0
        self.lesion_pixels = 0
        self.detected_pixels = 0

    def update(self, detection: np.ndarray, lesions: np.ndarray) -> tuple[int, int, int]:
        """Add one image; returns its ``(|B∩L|, |L|, |B|)``."""
        detection = np.asarray(detection, dtype=bool)
        lesions = np.asarray(lesions, dtype=bool)
        counts = int((detection & lesions).sum()), int(lesions.sum()), int(detection.sum())
        self.overlap += counts[0]
        self.lesion_pixels += counts[1]
        self.detected_pixels += counts[2]
        return counts

    def summary(self) -> dict[str, float]:
        return {
            "sensitivity": _ratio(self.overlap, self.lesion_pixels),
            "precision": _ratio(self.overlap, self.detected_pixels),
        }


class FalsePositiveComponents:
    """Mean number per image of detection components (8-connected) touching no lesion of any type."""

    def __init__(self, tolerance: int = 0) -> None:
        self.tolerance = check_tolerance(tolerance)
        self.reset()

    def reset(self) -> None:
        self.false_positives = 0
        self.images = 0

    def update(self, detection: np.ndarray, any_lesion: np.ndarray) -> int:
        """Add one image (detection, union of all lesion masks); returns its false-positive component count."""
        labels = measure.label(np.asarray(detection, dtype=bool), connectivity=2)
        touching = np.unique(labels[dilate(any_lesion, self.tolerance) & (labels > 0)])
        count = int(labels.max()) - int(touching.size)
        self.false_positives += count
        self.images += 1
        return count

    def summary(self) -> float:
        return _ratio(self.false_positives, self.images)


class LocalizationScorer:
    """Every metric above, per lesion type, for one binarization of one method."""

    def __init__(self, tolerance: int = 0, lesion_types: Sequence[str] = LESION_TYPES) -> None:
        self.tolerance = check_tolerance(tolerance)
        self.lesion_types = tuple(lesion_types)
        self.sensitivity = {t: LesionSensitivity(tolerance) for t in self.lesion_types}
        self.image_detection = {t: ImageDetection(tolerance) for t in self.lesion_types}
        self.pixels = {t: PixelOverlap() for t in self.lesion_types}
        self.false_positives = FalsePositiveComponents(tolerance)

    def reset(self) -> None:
        for metric in (*self.sensitivity.values(), *self.image_detection.values(), *self.pixels.values()):
            metric.reset()
        self.false_positives.reset()

    def update(self, detection: np.ndarray, lesions: Mapping[str, np.ndarray]) -> tuple[dict[str, dict[str, Any]], int]:
        """Add one image.

        Args:
            detection: bool H×W binarized map (already restricted to the FOV).
            lesions: ``{lesion_type: bool H×W}`` consensus masks; a missing type counts as no lesion.

        Returns:
            (``{lesion_type: per-image values}``, false-positive component count of this image).
        """
        detection = np.asarray(detection, dtype=bool)
        empty = np.zeros_like(detection)
        per_type: dict[str, dict[str, Any]] = {}
        for lesion_type in self.lesion_types:
            mask = np.asarray(lesions.get(lesion_type, empty), dtype=bool)
            if mask.shape != detection.shape:
                raise ValueError(f"lesions[{lesion_type!r}]: shape {mask.shape} differs from the map's "
                                 f"{detection.shape}")
            hit, total = self.sensitivity[lesion_type].update(detection, mask)
            overlap, lesion_pixels, detected_pixels = self.pixels[lesion_type].update(detection, mask)
            per_type[lesion_type] = {
                "n_lesions": total,
                "n_hit": hit,
                "lesion_sensitivity": _ratio(hit, total),
                "pixel_sensitivity": _ratio(overlap, lesion_pixels),
                "pixel_precision": _ratio(overlap, detected_pixels),
                "detected": self.image_detection[lesion_type].update(detection, mask),
                "lesion_pixels": lesion_pixels,
                "overlap_pixels": overlap,
            }
        any_lesion = np.logical_or.reduce([np.asarray(lesions.get(t, empty), bool) for t in self.lesion_types])
        return per_type, self.false_positives.update(detection, any_lesion)

    def summary(self) -> dict[str, Any]:
        pixel = {t: self.pixels[t].summary() for t in self.lesion_types}
        return {
            "lesion_sensitivity": {t: self.sensitivity[t].summary() for t in self.lesion_types},
            "n_lesions": {t: self.sensitivity[t].lesions for t in self.lesion_types},
            "n_hit": {t: self.sensitivity[t].hits for t in self.lesion_types},
            "pixel_sensitivity": {t: pixel[t]["sensitivity"] for t in self.lesion_types},
            "pixel_precision": {t: pixel[t]["precision"] for t in self.lesion_types},
            "image_detection": {t: self.image_detection[t].summary() for t in self.lesion_types},
            "n_images_with_lesions": {t: self.image_detection[t].positive for t in self.lesion_types},
            "fp_components_per_image": self.false_positives.summary(),
        }


# --------------------------------------------------------------------------------------------
# Run folders and ground truth
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalizationRun:
    """Read-only view of a run folder written by :func:`retina_fgvis.localize.localize`.

    Layout (:class:`~retina_fgvis.runs.RunFolder`, docs/run-folders.md): ``run.json``,
    ``images/<id>/maps.npz`` (``importance`` H×W float) and ``images/<id>/record.json``. Only images
    with both files are finished and scored.
    """

    folder: RunFolder
    config: dict[str, Any]
    image_ids: tuple[str, ...]

    @property
    def path(self) -> Path:
        return self.folder.path

    @property
    def n_unfinished(self) -> int:
        """Images listed in ``run.json`` (``image_ids``) without a finished record, e.g. shards still running."""
        return len(set(self.config.get("image_ids") or ()) - set(self.image_ids))

    @property
    def method(self) -> str:
        return str(self.config.get("method", self.path.name))

    def image_dir(self, image_id: str) -> Path:
        return self.folder.item_dir(image_id)

    def record(self, image_id: str) -> dict[str, Any]:
        return self.folder.item_record(image_id)

    def importance(self, image_id: str) -> np.ndarray:
        """The H×W float32 importance map (high = important)."""
        path = self.image_dir(image_id) / "maps.npz"
        importance = self.folder.read_map(image_id, "importance").astype(np.float32)
        if importance.ndim != 2:
            raise RunFolderError(f"{path}: importance must be H×W, got shape {importance.shape}")
        size = self.config.get("image_size")
        if size is not None and importance.shape != (size, size):
            raise RunFolderError(f"{path}: the importance map is {importance.shape[0]}×{importance.shape[1]}, "
                                 f"the run's images are {size}×{size} (run.json image_size)")
        return importance

    def threshold(self, image_id: str, record: Mapping[str, Any] | None = None) -> float:
        """The relative binarization threshold of one image: its record's, else the run config's."""
        record = self.record(image_id) if record is None else record
        value = record.get("threshold", self.config.get("threshold"))
        source = self.image_dir(image_id) / "record.json" if "threshold" in record else self.folder.record_path
        if value is None:
            raise RunFolderError(f"{source}: no binarization threshold recorded")
        try:
            return check_threshold(value)
        except (TypeError, ValueError) as error:
            raise RunFolderError(f"{source}: {error}") from None


def open_run(run_dir: str | os.PathLike) -> LocalizationRun:
    """Open a localization run folder (also one written before run records had a kind);
    :class:`RunFolderError` naming the path if it is not one."""
    folder = RunFolder(run_dir, RunKind.LOCALIZE, name="run")
    if not folder.path.is_dir():
        raise RunFolderError(f"run folder {folder.path}: does not exist or is not a folder")
    try:
        info = folder.read_info(required=True)
    except RunFolderError as error:
        raise RunFolderError(f"{error}; not a localization run") from None
    if info.kind != folder.kind:
        raise RunFolderError(f"{folder.record_path}: not a localization run (a {info.kind or 'unknown'} run)")
    finished = folder.finished_items()
    if not finished:
        raise RunFolderError(f"run folder {folder.path}: no finished images under {folder.path / 'images'}")
    return LocalizationRun(folder=folder, config=info.config, image_ids=tuple(finished))


def diaretdb1_root(data_dir: str | os.PathLike, kind: str = "diaretdb1") -> Path:
    """The DiaretDB1 folder of a data dir: itself for ``kind="diaretdb1"``; for ``kind="synthetic"`` the
    ``diaretdb1`` folder (v2.1 layout) of a set written by ``generate_synthetic`` / ``retina-fgvis synth``."""
    if kind not in ("diaretdb1", "synthetic"):
        raise ValueError(f"dataset: expected 'diaretdb1' or 'synthetic', got {kind!r}")
    path = Path(data_dir)
    return path / "diaretdb1" if kind == "synthetic" and (path / "diaretdb1").is_dir() else path


def open_ground_truth(dataset: Any, run: LocalizationRun | None = None) -> Any:
    """The DiaretDB1-style dataset to score against.

    Args:
        dataset: an opened dataset (anything with ``load(image_id, size=...)`` returning a sample with
            ``fov`` and ``lesions``, e.g. :func:`retina_fgvis.datasets.open_diaretdb1`'s), a path to a
            DiaretDB1 release (v1.1 or v2.1 layout), or ``None``: the ``data_dir`` and ``dataset``
            (diaretdb1 | synthetic) recorded in ``run``'s config.
    """
    if dataset is not None and callable(getattr(dataset, "load", None)):
        return dataset
    if dataset is None:
        if run is None or not run.config.get("data_dir"):
            raise ValueError("dataset: not given and the run's config records no data_dir")
        dataset = diaretdb1_root(run.config["data_dir"], run.config.get("dataset", "diaretdb1"))
    return open_diaretdb1(Path(dataset))


def _load_sample(ground_truth: Any, image_id: str, shape: tuple[int, ...]):
    if len(shape) != 2 or shape[0] != shape[1]:
        raise RunFolderError(f"image {image_id}: maps must be square H×W at the model's resolution, got {shape}")
    sample = ground_truth.load(image_id, size=shape[0])
    if np.shape(sample.fov) != shape:
        raise ValueError(f"image {image_id}: ground truth is {np.shape(sample.fov)}, maps are {shape}")
    return sample


def iter_scored_images(
    runs: Sequence[LocalizationRun], ground_truth: Any, image_ids: Sequence[str], progress: bool, description: str
) -> Iterator[tuple[str, Any, list[np.ndarray], list[dict[str, Any]]]]:
    """Yield ``(image_id, sample, [importance per run], [record per run])`` with a progress bar."""
    bar = progress_bar(transient=True)
    with bar if progress else contextlib.nullcontext():
        task = bar.add_task(description, total=len(image_ids), status="")
        for image_id in image_ids:
            maps = [run.importance(image_id) for run in runs]
            shapes = {m.shape for m in maps}
            if len(shapes) != 1:
                raise ValueError(f"image {image_id}: runs disagree on the map size {sorted(shapes)}")
            sample = _load_sample(ground_truth, image_id, maps[0].shape)
            yield image_id, sample, maps, [run.record(image_id) for run in runs]
            bar.update(task, advance=1, status=image_id)


def own_threshold_detection(importance: np.ndarray, threshold: float, fov: np.ndarray) -> tuple[np.ndarray, float]:
    """Own-threshold detection (``importance ≥ threshold · max``) restricted to the FOV, and its FOV fraction."""
    fov = np.asarray(fov, dtype=bool)
    detection = binarize_relative(importance, threshold) & fov
    return detection, _ratio(detection.sum(), fov.sum())


# --------------------------------------------------------------------------------------------
# score_run
# --------------------------------------------------------------------------------------------
def nan_to_none(value: Any) -> Any:
    """Replace NaN by ``None`` in nested dicts/lists (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def score_run(run_dir: str | os.PathLike, dataset: Any = None, tolerance: int = 0, seed: int = 0,
              *, n_resamples: int = N_RESAMPLES, progress: bool = False) -> dict[str, Any]:
    """Score one localization run against the consensus lesion masks (protocol: module docstring).

    Args:
        run_dir: run folder written by ``retina_fgvis.localize``.
        dataset: ground truth, see :func:`open_ground_truth` (``None`` = the run's recorded data_dir).
        tolerance: hit tolerance in pixels (disk dilation of the binarized mask), ≥ 0.
        seed: seed of the chance-control rotation angles and of the bootstrap.
        n_resamples: bootstrap resamples of the images.
        progress: show a progress bar.

    Writes ``run_dir/per_image.csv`` (one row per image × lesion type) and ``run_dir/summary.json``
    atomically, and returns the summary dict (NaN written as ``null``: no lesion of that type).
    """
    tolerance = check_tolerance(tolerance)
    seed = check_seed(seed)
    run = open_run(run_dir)
    ground_truth = open_ground_truth(dataset, run)
    scorer, chance_scorer = LocalizationScorer(tolerance), LocalizationScorer(tolerance)
    # The same scores over the explanations that met their stop rule only (FGVis): a failed deletion's
    # mask is where the search ended, not evidence the model needed.
    met_scorer, met_chance_scorer = LocalizationScorer(tolerance), LocalizationScorer(tolerance)
    rows, areas, probs, thresholds, outcomes = [], [], [], set(), []
    for image_id, sample, (importance,), (record,) in iter_scored_images(
        [run], ground_truth, run.image_ids, progress, f"scoring {run.method}"
    ):
        threshold = run.threshold(image_id, record)
        detection, area = own_threshold_detection(importance, threshold, sample.fov)
        rotated, angle = chance_mask(detection, sample.fov, image_id, seed)
        per_type, fp = scorer.update(detection, sample.lesions)
        chance, _ = chance_scorer.update(rotated, sample.lesions)
        success = record.get("success")
        outcomes.append((success, record.get("iterations")))
        if success:
            met_scorer.update(detection, sample.lesions)
            met_chance_scorer.update(rotated, sample.lesions)
        areas.append(area)
        thresholds.add(threshold)
        probs.append((record.get("prob_before", math.nan), record.get("prob_after", math.nan)))
        for lesion_type, values in per_type.items():
            rows.append({
                "image_id": image_id,
                "lesion_type": lesion_type,
                **values,
                "chance_hits": chance[lesion_type]["n_hit"],
                "chance_sensitivity": chance[lesion_type]["lesion_sensitivity"],
                "chance_detected": chance[lesion_type]["detected"],
                "prob_before": record.get("prob_before"),
                "prob_after": record.get("prob_after"),
                "iterations": record.get("iterations"),
                "success": success,
                "threshold": threshold,
                "area_fraction": area,
                "detected_pixels": int(detection.sum()),
                "fp_components": fp,
                "chance_angle": angle,
            })
    frame = pd.DataFrame(rows)
    for column in ("detected", "chance_detected", "success"):
        frame[column] = frame[column].astype("boolean")
    atomic_write_csv(run.path / "per_image.csv", frame)
    resamples = resample_images(len(run.image_ids), n_resamples, seed)
    by_type = {t: group.set_index("image_id").loc[list(run.image_ids)] for t, group in frame.groupby("lesion_type")}

    def intervals(hits: str) -> dict[str, list[float]]:
        return {t: list(pooled_ratio_interval(by_type[t][hits], by_type[t]["n_lesions"], resamples))
                for t in LESION_TYPES}

    prob_before, prob_after = (np.asarray(column, dtype=float) for column in zip(*probs))
    chance_summary = chance_scorer.summary()
    judged = [(success, iterations) for success, iterations in outcomes if success is not None]
    success_summary = None
    if judged:  # a method with a stop rule (FGVis); baselines have none
        met, met_chance = met_scorer.summary(), met_chance_scorer.summary()
        n_success = sum(bool(success) for success, _ in judged)
        success_summary = {
            "n_success": n_success, "n_failed": len(judged) - n_success,
            # already below the stop value: nothing deleted, an empty mask (counted as successes)
            "n_below_at_start": sum(bool(success) and iterations == 0 for success, iterations in judged),
            "stop_score": run.config.get("stop_score"),
            "successful": {key: met[key] for key in ("lesion_sensitivity", "n_hit", "n_lesions")}
            | {"chance_lesion_sensitivity": met_chance["lesion_sensitivity"]},
        }
    summary = {
        "method": run.method,
        "run": str(run.path.resolve()),
        "n_images": len(run.image_ids),
        "n_unfinished": run.n_unfinished,
        "threshold": thresholds.pop() if len(thresholds) == 1 else run.config.get("threshold"),
        "tolerance": tolerance,
        "seed": seed,
        "area_fraction": float(np.nanmean(areas)),
        **scorer.summary(),
        "chance": {key: chance_summary[key] for key in (
            "lesion_sensitivity", "n_hit", "pixel_sensitivity", "pixel_precision", "image_detection",
            "fp_components_per_image")} | {"min_angle": CHANCE_MIN_ANGLE,
                                            "lesion_sensitivity_ci": intervals("chance_hits")},
        "lesion_sensitivity_ci": intervals("n_hit"),
        "bootstrap": {"unit": "image", "n_resamples": n_resamples, "seed": seed, "level": LEVEL},
        "rdr_probability": {"before": _nanmean(prob_before), "after": _nanmean(prob_after)},
        "success": success_summary,
    }
    summary = nan_to_none(summary)
    atomic_write_json(run.path / "summary.json", summary)
    return summary


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def percent(value: Any, unit: bool = True) -> str:
    """A fraction as ``"12.3 %"`` (``"12.3"`` without ``unit``); ``"–"`` for ``None``/NaN (no lesion of that type)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100 * value:.1f} %" if unit else f"{100 * value:.1f}"


def with_interval(interval: Sequence[float | None] | None) -> str:
    """``" [12.0–30.5]"`` (in %) for a ``[low, high]`` interval; ``""`` when there is none or it is undefined."""
    if not interval or any(value is None or math.isnan(value) for value in interval):
        return ""
    return f" [{percent(interval[0], unit=False)}–{percent(interval[1], unit=False)}]"


def summary_table(summary: Mapping[str, Any]) -> Table:
    """A rich table of one run's ``summary.json``: one row per lesion type, values in %."""
    success = summary.get("success")
    met = (f", stop met on {success['n_success']} of {success['n_success'] + success['n_failed']}"
           if success else "")
    table = Table(title=f"{summary['method']}: {summary['n_images']} images{met}, "
                        f"{percent(summary['area_fraction'])} of the FOV marked, "
                        f"{summary['fp_components_per_image']:.1f} false-positive components / image",
                  caption="sens. = lesion-level sensitivity; chance = the rotated mask's; "
                          + ("sens. (met) = over the explanations that met the stop rule; " if success else "")
                          + "values in %"
                          + (f"; [{summary['bootstrap']['level']:.0%} bootstrap interval over images]"
                             if "bootstrap" in summary else ""))
    table.add_column("lesion type", no_wrap=True)
    columns = ["lesions", "hit", "sens.", "chance"] + (["sens. (met)", "chance (met)"] if success else [])
    for column in columns + ["pixel sens.", "pixel prec.", "image det."]:
        table.add_column(column, justify="right")
    for lesion_type in summary["lesion_sensitivity"]:
        met_cells = [percent(success["successful"][key][lesion_type], unit=False)
                     for key in ("lesion_sensitivity", "chance_lesion_sensitivity")] if success else []
        table.add_row(
            lesion_type,
            str(summary["n_lesions"][lesion_type]),
            str(summary["n_hit"][lesion_type]),
            *(percent(value, unit=False) + with_interval(interval) for value, interval in (
                (summary["lesion_sensitivity"][lesion_type],
                 summary.get("lesion_sensitivity_ci", {}).get(lesion_type)),
                (summary["chance"]["lesion_sensitivity"][lesion_type],
                 summary["chance"].get("lesion_sensitivity_ci", {}).get(lesion_type)),
            )),
            *met_cells,
            *(percent(value, unit=False) for value in (
                summary["pixel_sensitivity"][lesion_type],
                summary["pixel_precision"][lesion_type],
                summary["image_detection"][lesion_type],
            )),
        )
    return table
