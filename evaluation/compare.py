"""Compare localization runs (e.g. FGVis vs Grad-CAM vs occlusion) on the same images.

Each run is scored three ways, per lesion type, on the images all runs share:

* **own threshold**: its own map binarized at its run's threshold (``importance ≥ 4 % · max``);
* **matched area**: its map binarized to the top pixels covering the same fraction of the field of
  view as the *first* run's own-threshold mask on that image (``binarize_top_fraction``), so a blurry
  map cannot win by marking half the retina;
* **chance**: the own-threshold mask (and the matched-area mask) rotated by the seeded random angle
  of :func:`retina_fgvis.evaluation.localization.chance_mask`.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from rich.table import Table

from retina_fgvis.evaluation.localization import (
    LocalizationScorer,
    check_seed,
    check_tolerance,
    percent,
    nan_to_none,
    chance_mask,
    iter_scored_images,
    open_ground_truth,
    open_run,
    own_threshold_detection,
)
from retina_fgvis._io import atomic_write_csv, atomic_write_json
from retina_fgvis.binarize import binarize_top_fraction
from retina_fgvis.datasets import LESION_TYPES

#: The scored settings, in table order.
SETTINGS = ("own_threshold", "matched_area", "chance", "chance_matched_area")
#: Version of comparison.json. Version 1 (no ``format_version`` key) named ``own_threshold``
#: ``seed_threshold``; :func:`read_comparison` upgrades it.
FORMAT_VERSION = 2
_V1_KEYS = {"seed_threshold": "own_threshold"}


def read_comparison(comparison: dict[str, Any]) -> dict[str, Any]:
    """A comparison dict of any version in the current format (version-1 setting names renamed)."""
    if comparison.get("format_version", 1) >= FORMAT_VERSION:
        return comparison

    def upgrade(value: Any) -> Any:
        if isinstance(value, dict):
            return {_V1_KEYS.get(key, key): upgrade(item) for key, item in value.items()}
        if isinstance(value, list):
            return [upgrade(item) for item in value]
        return _V1_KEYS.get(value, value) if isinstance(value, str) else value

    return {**upgrade(comparison), "format_version": FORMAT_VERSION}


def _labels(runs) -> list[str]:
    """Method names, disambiguated by folder name (then by position) where runs share a method."""
    counts = Counter(run.method for run in runs)
    labels = [run.method if counts[run.method] == 1 else f"{run.method} ({run.path.name})" for run in runs]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{index + 1}" for index, label in enumerate(labels)]
    return labels


def compare_runs(runs: Sequence[str | os.PathLike], out_dir: str | os.PathLike, dataset: Any = None,
                 tolerance: int = 0, seed: int = 0, *, progress: bool = False) -> dict[str, Any]:
    """Score several runs side by side; matched area uses the FIRST run's own-threshold area per image.

    Args:
        runs: run folders (the first is the area reference, normally FGVis).
        out_dir: where ``comparison.json`` and ``comparison.csv`` are written (atomically).
        dataset: ground truth, see :func:`retina_fgvis.evaluation.localization.open_ground_truth`
            (``None`` = the first run's recorded data_dir).
        tolerance / seed: as in :func:`retina_fgvis.evaluation.localization.score_run`.

    Returns:
        The comparison dict: ``runs`` (per run: method, label, area fractions and the full metric
        summary of every setting) and ``lesion_sensitivity[label][lesion_type][setting]`` with
        setting in ``own_threshold``, ``matched_area``, ``chance``, ``chance_matched_area``. Only the images
        every run has finished are compared; ``left_out`` lists, per run folder, its finished images that
        were not.
    """
    if isinstance(runs, (str, os.PathLike)) or not runs:
        raise ValueError("runs: give a list of at least one run folder")
    tolerance, seed = check_tolerance(tolerance), check_seed(seed)
    opened = [open_run(run) for run in runs]
    common = sorted(set.intersection(*(set(run.image_ids) for run in opened)))
    if not common:
        raise ValueError(f"runs: the runs {[str(r.path) for r in opened]} share no finished image")
    ground_truth = open_ground_truth(dataset, opened[0])
    scorers = [{setting: LocalizationScorer(tolerance) for setting in SETTINGS} for _ in opened]
    own_areas: list[list[float]] = [[] for _ in opened]
    outcomes: list[list[bool]] = [[] for _ in opened]  # stop rule met, per image (FGVis runs only)
    for image_id, sample, maps, records in iter_scored_images(opened, ground_truth, common, progress, "comparing"):
        reference_area = None
        for index, (run, importance, record) in enumerate(zip(opened, maps, records)):
            detection, area = own_threshold_detection(importance, run.threshold(image_id, record), sample.fov)
            reference_area = area if reference_area is None else reference_area
            matched = binarize_top_fraction(importance, reference_area, fov=sample.fov) & sample.fov
            masks = {
                "own_threshold": detection,
                "matched_area": matched,
                "chance": chance_mask(detection, sample.fov, image_id, seed)[0],
                "chance_matched_area": chance_mask(matched, sample.fov, image_id, seed)[0],
            }
            for setting, mask in masks.items():
                scorers[index][setting].update(mask, sample.lesions)
            own_areas[index].append(area)
            if record.get("success") is not None:
                outcomes[index].append(bool(record["success"]))

    labels = _labels(opened)
    entries, sensitivity, rows = [], {}, []
    for run, label, run_scorers, areas, met in zip(opened, labels, scorers, own_areas, outcomes):
        summaries = {setting: run_scorers[setting].summary() for setting in SETTINGS}
        entries.append({
            "run": str(run.path.resolve()),
            "method": run.method,
            "label": label,
            "threshold": run.config.get("threshold"),
            "area_fraction": sum(areas) / len(areas),
            "matched_area_fraction": sum(own_areas[0]) / len(own_areas[0]),
            "n_success": sum(met) if met else None,  # explanations that met their stop rule
            **summaries,
        })
        sensitivity[label] = {
            t: {setting: summaries[setting]["lesion_sensitivity"][t] for setting in SETTINGS} for t in LESION_TYPES
        }
        for setting in SETTINGS:
            for t in LESION_TYPES:
                rows.append({"method": label, "setting": setting, "lesion_type": t,
                             **{k: summaries[setting][k][t] for k in (
                                 "lesion_sensitivity", "n_lesions", "n_hit", "pixel_sensitivity",
                                 "pixel_precision", "image_detection")},
                             "fp_components_per_image": summaries[setting]["fp_components_per_image"]})
    comparison = nan_to_none({
        "format_version": FORMAT_VERSION,
        "reference": {"run": str(opened[0].path.resolve()), "method": labels[0]},
        "n_images": len(common),
        "image_ids": common,
        # Finished images of a run that another run lacks: not compared.
        "left_out": {str(run.path): sorted(set(run.image_ids) - set(common)) for run in opened
                     if set(run.image_ids) - set(common)},
        "tolerance": tolerance,
        "seed": seed,
        "lesion_types": list(LESION_TYPES),
        "settings": list(SETTINGS),
        "lesion_sensitivity": sensitivity,
        "runs": entries,
    })
    out = Path(out_dir)
    atomic_write_csv(out / "comparison.csv", pd.DataFrame(rows))
    atomic_write_json(out / "comparison.json", comparison)
    return comparison


def comparison_table(comparison: dict[str, Any]) -> Table:
    """A rich table: one row per lesion type, per method the lesion-level sensitivity at its own
    threshold, at matched area and the chance control (rotated own-threshold mask)."""
    reference = comparison["reference"]["method"]
    met = "; ".join(f"{entry['label']}: stop met on {entry['n_success']}" for entry in comparison["runs"]
                    if entry.get("n_success") is not None)
    table = Table(title=f"Lesion-level sensitivity (%), {comparison['n_images']} images" + (f" ({met})" if met else ""),
                  caption=f"own = the method's threshold; matched = {reference}'s area per image; "
                          "chance = the rotated own-threshold mask")
    table.add_column("lesion type", no_wrap=True)
    labels = list(comparison["lesion_sensitivity"])
    for label in labels:
        for heading in ("own", "matched", "chance"):
            table.add_column(f"{label}\n{heading}", justify="right")
    area_row = ["FOV marked"]
    for entry in comparison["runs"]:
        area_row += [percent(entry[key], unit=False) for key in ("area_fraction", "matched_area_fraction")] + [""]
    for lesion_type in comparison["lesion_types"]:
        cells = [lesion_type]
        for label in labels:
            values = comparison["lesion_sensitivity"][label][lesion_type]
            cells += [percent(values[key], unit=False) for key in ("own_threshold", "matched_area", "chance")]
        table.add_row(*cells)
    table.add_row(*area_row, style="dim")
    return table
