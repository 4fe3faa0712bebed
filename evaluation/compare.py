"""Compare localization runs (e.g. FGVis vs Grad-CAM vs occlusion) on the same images.

Each run is scored three ways, per lesion type, on the images all runs share:

* **own threshold**: its own map binarized at its run's threshold (``importance ≥ 4 % · max``);
* **matched area**: its map binarized to the top pixels covering the same fraction of the field of
  view as the *first* run's own-threshold mask on that image (``binarize_top_fraction``), so a blurry
  map cannot win by marking half the retina;
* **chance**: the own-threshold mask (and the matched-area mask) rotated by the seeded random angle
  of :func:`retina_fgvis.evaluation.localization.chance_mask`.

Each run also gets FROC curves per lesion type over both sweeps of :mod:`retina_fgvis.evaluation.froc`
(relative threshold and area) with their ROC scores. Every lesion sensitivity and every ROC score gets a
bootstrap 95 % interval (:mod:`retina_fgvis.evaluation.bootstrap`; the same ``seed``-ed image resamples for
all runs), and ``intervals_overlap`` says, for each run after the first, per lesion type and setting, whether
its interval overlaps the first run's (``False``: the intervals are disjoint).
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
    with_interval,
)
from retina_fgvis._io import atomic_write_csv, atomic_write_json
from retina_fgvis.binarize import binarize_top_fraction
from retina_fgvis.checks import check_int
from retina_fgvis.datasets import LESION_TYPES
from retina_fgvis.evaluation.bootstrap import LEVEL, N_RESAMPLES, intervals_overlap, pooled_ratio_interval, \
    resample_images
from retina_fgvis.evaluation.froc import ROC_FP_RATES, SWEEPS, FROCCurve

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
                 tolerance: int = 0, seed: int = 0, *, n_resamples: int = N_RESAMPLES,
                 progress: bool = False) -> dict[str, Any]:
    """Score several runs side by side; matched area uses the FIRST run's own-threshold area per image.

    Args:
        runs: run folders (the first is the area reference, normally FGVis).
        out_dir: where ``comparison.json`` and ``comparison.csv`` are written (atomically).
        dataset: ground truth, see :func:`retina_fgvis.evaluation.localization.open_ground_truth`
            (``None`` = the first run's recorded data_dir).
        tolerance / seed: as in :func:`retina_fgvis.evaluation.localization.score_run`; ``seed`` also seeds
            the bootstrap.
        n_resamples: bootstrap resamples of the images.

    Returns:
        The comparison dict: ``runs`` (per run: method, label, area fractions and the full metric
        summary of every setting), ``lesion_sensitivity[label][lesion_type][setting]`` with
        setting in ``own_threshold``, ``matched_area``, ``chance``, ``chance_matched_area``,
        ``lesion_sensitivity_ci`` (same keys, ``[low, high]``), ``froc[label][sweep]`` (the
        :meth:`FROCCurve.summary` plus ``roc_score_ci`` per lesion type), ``intervals_overlap`` and
        ``bootstrap`` (its settings). Also writes ``froc.csv`` (one row per curve point) and
        ``froc_scores.csv``. Only the images every run has finished are compared; ``left_out`` lists, per
        run folder, its finished images that were not.
    """
    if isinstance(runs, (str, os.PathLike)) or not runs:
        raise ValueError("runs: give a list of at least one run folder")
    tolerance, seed = check_tolerance(tolerance), check_seed(seed)
    check_int("n_resamples", n_resamples, minimum=1)
    opened = [open_run(run) for run in runs]
    common = sorted(set.intersection(*(set(run.image_ids) for run in opened)))
    if not common:
        raise ValueError(f"runs: the runs {[str(r.path) for r in opened]} share no finished image")
    ground_truth = open_ground_truth(dataset, opened[0])
    scorers = [{setting: LocalizationScorer(tolerance) for setting in SETTINGS} for _ in opened]
    curves = [{sweep: FROCCurve(sweep, tolerance=tolerance) for sweep in SWEEPS} for _ in opened]
    # Per run, setting and lesion type: (hits, lesions) of every image, for the bootstrap.
    counts: list[dict[str, dict[str, list[tuple[int, int]]]]] = [
        {setting: {t: [] for t in LESION_TYPES} for setting in SETTINGS} for _ in opened]
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
                per_type, _ = scorers[index][setting].update(mask, sample.lesions)
                for t in LESION_TYPES:
                    counts[index][setting][t].append((per_type[t]["n_hit"], per_type[t]["n_lesions"]))
            for curve in curves[index].values():
                curve.update(importance, sample.fov, sample.lesions)
            own_areas[index].append(area)
            if record.get("success") is not None:
                outcomes[index].append(bool(record["success"]))

    labels = _labels(opened)
    resamples = resample_images(len(common), n_resamples, seed)
    entries, sensitivity, intervals, froc, rows, froc_rows, score_rows = [], {}, {}, {}, [], [], []
    for run, label, run_scorers, areas, met, run_counts, run_curves in zip(
            opened, labels, scorers, own_areas, outcomes, counts, curves):
        summaries = {setting: run_scorers[setting].summary() for setting in SETTINGS}
        intervals[label] = {t: {setting: list(pooled_ratio_interval(*zip(*run_counts[setting][t]), resamples))
                                for setting in SETTINGS} for t in LESION_TYPES}
        froc[label] = {}
        for sweep, curve in run_curves.items():
            summary, score_ci = curve.summary(), curve.score_interval(resamples)
            for t in LESION_TYPES:
                summary["lesion_types"][t]["roc_score_ci"] = list(score_ci[t])
                score_rows.append({"method": label, "sweep": sweep, "lesion_type": t,
                                   "roc_score": summary["lesion_types"][t]["roc_score"],
                                   "ci_low": score_ci[t][0], "ci_high": score_ci[t][1]})
                for point, fp, value in zip(summary["operating_points"], summary["fp_per_image"],
                                            summary["lesion_types"][t]["sensitivity"]):
                    froc_rows.append({"method": label, "sweep": sweep, "operating_point": point, "lesion_type": t,
                                      "fp_per_image": fp, "lesion_sensitivity": value})
            froc[label][sweep] = summary
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
                             "ci_low": intervals[label][t][setting][0], "ci_high": intervals[label][t][setting][1],
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
        "bootstrap": {"unit": "image", "n_resamples": n_resamples, "seed": seed, "level": LEVEL},
        "lesion_sensitivity_ci": intervals,
        "froc": froc,
        "roc_fp_rates": list(ROC_FP_RATES),
    })
    comparison["intervals_overlap"] = _overlaps(comparison)
    out = Path(out_dir)
    atomic_write_csv(out / "froc.csv", pd.DataFrame(froc_rows))
    atomic_write_csv(out / "froc_scores.csv", pd.DataFrame(score_rows))
    atomic_write_csv(out / "comparison.csv", pd.DataFrame(rows))
    atomic_write_json(out / "comparison.json", comparison)
    return comparison


#: The measures with intervals (compared in ``intervals_overlap``), in table order, and their short names.
INTERVAL_MEASURES = {"own_threshold": "sens., own", "matched_area": "sens., matched", "froc_relative": "ROC, relative",
                     "froc_area": "ROC, area"}
OVERLAP_KEYS = tuple(INTERVAL_MEASURES)


def _overlaps(comparison: dict[str, Any]) -> dict[str, dict[str, dict[str, bool | None]]]:
    """For each run after the first: per lesion type and :data:`OVERLAP_KEYS`, whether its interval meets the first's."""
    labels = list(comparison["lesion_sensitivity"])
    return {label: {t: {key: intervals_overlap(_measure(comparison, labels[0], t, key)[1],
                                               _measure(comparison, label, t, key)[1])
                        for key in OVERLAP_KEYS} for t in comparison["lesion_types"]} for label in labels[1:]}


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


def interval_table(comparison: dict[str, Any]) -> Table:
    """A rich table, one row per method × measure (sensitivity at its own threshold, at matched area, ROC score
    of each FROC sweep), one column per lesion type: the value and its bootstrap interval, in %."""
    boot = comparison["bootstrap"]
    rates = ", ".join(f"{rate:g}" for rate in comparison["roc_fp_rates"])
    table = Table(title=f"Lesion sensitivity and FROC ROC score (%), {comparison['n_images']} images, "
                        f"[{boot['level']:.0%} bootstrap interval]",
                  caption=f"ROC score = mean lesion sensitivity at {rates} false-positive components per image; "
                          "relative = threshold sweep, area = FOV-fraction sweep; intervals over images, "
                          f"{boot['n_resamples']} resamples, seed {boot['seed']}")
    table.add_column("method", no_wrap=True)
    table.add_column("measure", no_wrap=True)
    for lesion_type in comparison["lesion_types"]:
        table.add_column(lesion_type, justify="right")
    for label in comparison["froc"]:
        for key, name in INTERVAL_MEASURES.items():
            cells = []
            for lesion_type in comparison["lesion_types"]:
                value, interval = _measure(comparison, label, lesion_type, key)
                cells.append(percent(value, unit=False) + with_interval(interval))
            table.add_row(label if key == "own_threshold" else "", name, *cells,
                          end_section=key == "froc_area")
    return table



def _measure(comparison: dict[str, Any], label: str, lesion_type: str, key: str) -> tuple[Any, Any]:
    """``(value, [low, high])`` of one measure of :data:`INTERVAL_MEASURES`."""
    if key.startswith("froc_"):
        entry = comparison["froc"][label][key.removeprefix("froc_")]["lesion_types"][lesion_type]
        return entry["roc_score"], entry["roc_score_ci"]
    return (comparison["lesion_sensitivity"][label][lesion_type][key],
            comparison["lesion_sensitivity_ci"][label][lesion_type][key])


#: How :func:`overlap_lines` names the interval pairs.
OVERLAP_NAMES = {"own_threshold": "sensitivity at its own threshold", "matched_area": "sensitivity at matched area",
                 "froc_relative": "ROC score, relative sweep", "froc_area": "ROC score, area sweep"}


def overlap_lines(comparison: dict[str, Any]) -> list[str]:
    """One sentence per run after the first: where its intervals and the first run's are disjoint."""
    reference = comparison["reference"]["method"]
    lines = []
    for label, per_type in comparison.get("intervals_overlap", {}).items():
        disjoint, judged = [], 0
        for lesion_type, keys in per_type.items():
            for key, overlap in keys.items():
                judged += overlap is not None
                if overlap is False:
                    first, other = (_measure(comparison, name, lesion_type, key)[0] for name in (reference, label))
                    better = reference if first > other else label
                    disjoint.append(f"{lesion_type} {OVERLAP_NAMES[key]} ({better} higher)")
        if disjoint:
            lines.append(f"{label} vs {reference}: intervals disjoint for " + "; ".join(disjoint)
                         + f"; they overlap for the other {judged - len(disjoint)} of {judged}.")
        else:
            lines.append(f"{label} vs {reference}: all {judged} intervals overlap (no difference shown).")
    return lines
