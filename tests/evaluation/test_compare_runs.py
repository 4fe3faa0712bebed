"""compare_runs on the conftest scene: a sharp FGVis-like map vs a blurry CAM-like map."""
import json

import numpy as np
import pandas as pd
import pytest

from retina_fgvis.evaluation.compare import FORMAT_VERSION, SETTINGS, compare_runs, comparison_table, read_comparison
from retina_fgvis.evaluation.localization import RunFolderError, chance_mask, lesion_hits
from retina_fgvis.binarize import binarize_top_fraction
from retina_fgvis.datasets import LESION_TYPES


def test_matched_area_mask_is_the_top_pixels_of_the_fov(scene, blurry_maps):
    area = 3 / 32**2                                                       # FGVis marks 3 px on image001
    matched = binarize_top_fraction(blurry_maps["image001"], area, fov=scene.samples["image001"].fov)
    assert matched.sum() == 3 and matched[25:27, 5:7].sum() == 3          # the 3 px nearest the peak


def test_compare_runs_side_by_side(tmp_path, scene, fgvis_maps, blurry_maps, make_run):
    fgvis = make_run(tmp_path / "fgvis", "fgvis", fgvis_maps)
    cam = make_run(tmp_path / "gradcam", "gradcam", blurry_maps)
    comparison = compare_runs([fgvis, cam], tmp_path / "cmp", scene, seed=0)
    assert json.loads((tmp_path / "cmp" / "comparison.json").read_text()) == comparison
    assert comparison["reference"]["method"] == "fgvis" and comparison["n_images"] == 2
    sens = comparison["lesion_sensitivity"]
    assert list(sens) == ["fgvis", "gradcam"]
    for label in sens:
        assert list(sens[label]) == list(LESION_TYPES)
        assert all(set(sens[label][t]) == set(SETTINGS) for t in LESION_TYPES)
    # FGVis: its own area is the matched area, so both settings agree.
    assert sens["fgvis"]["hard_exudates"]["own_threshold"] == sens["fgvis"]["hard_exudates"]["matched_area"] == 0.5
    # The blurry map marks most of the image at 4 % of its max and touches everything ...
    assert [sens["gradcam"][t]["own_threshold"] for t in LESION_TYPES] == [1.0, 1.0, None, 1.0]
    # ... but at FGVis's area only the soft exudate under its peak.
    assert [sens["gradcam"][t]["matched_area"] for t in LESION_TYPES] == [0.0, 1.0, None, 0.0]
    runs = {entry["method"]: entry for entry in comparison["runs"]}
    assert runs["fgvis"]["area_fraction"] == pytest.approx(3.5 / 32**2)
    assert runs["gradcam"]["matched_area_fraction"] == pytest.approx(3.5 / 32**2)
    assert runs["gradcam"]["area_fraction"] > 0.5
    assert runs["gradcam"]["matched_area"]["n_hit"]["soft_exudates"] == 1
    # Chance: each own-threshold mask rotated by the seeded angle of its image, scored the same way.
    hits = lesions = 0
    for image_id, sample in scene.samples.items():
        rotated, _ = chance_mask(fgvis_maps[image_id] >= 0.04, sample.fov, image_id, seed=0)
        hit, total = lesion_hits(rotated, sample.lesions["hard_exudates"])
        hits, lesions = hits + hit, lesions + total
    assert sens["fgvis"]["hard_exudates"]["chance"] == hits / lesions
    table = pd.read_csv(tmp_path / "cmp" / "comparison.csv")
    assert len(table) == 2 * len(SETTINGS) * len(LESION_TYPES)
    rendered = comparison_table(comparison)
    assert rendered.row_count == len(LESION_TYPES) + 1 and len(rendered.columns) == 1 + 2 * 3


def test_compare_runs_bad_inputs(tmp_path, scene, fgvis_maps, make_run):
    fgvis = make_run(tmp_path / "fgvis", "fgvis", fgvis_maps)
    with pytest.raises(ValueError, match="runs"):
        compare_runs([], tmp_path / "cmp", scene)
    with pytest.raises(RunFolderError, match="missing"):
        compare_runs([fgvis, tmp_path / "missing"], tmp_path / "cmp", scene)
    other = make_run(tmp_path / "other", "gradcam", {"image003": np.ones((32, 32), np.float32)})
    with pytest.raises(ValueError, match="share no finished image"):
        compare_runs([fgvis, other], tmp_path / "cmp", scene)
    assert not (tmp_path / "cmp").exists()


def test_duplicate_methods_get_distinct_labels(tmp_path, scene, fgvis_maps, make_run):
    first = make_run(tmp_path / "a", "fgvis", fgvis_maps)
    second = make_run(tmp_path / "b", "fgvis", fgvis_maps)
    comparison = compare_runs([first, second], tmp_path / "cmp", scene)
    assert list(comparison["lesion_sensitivity"]) == ["fgvis (a)", "fgvis (b)"]
    assert comparison["lesion_sensitivity"]["fgvis (a)"] == comparison["lesion_sensitivity"]["fgvis (b)"]
    same_name = make_run(tmp_path / "c" / "a", "fgvis", fgvis_maps)
    labels = list(compare_runs([first, same_name], tmp_path / "cmp", scene)["lesion_sensitivity"])
    assert labels == ["fgvis (a) #1", "fgvis (a) #2"]


def test_a_version_1_comparison_reads_as_the_current_format(tmp_path, scene, fgvis_maps, blurry_maps, make_run):
    comparison = compare_runs([make_run(tmp_path / "fgvis", "fgvis", fgvis_maps),
                               make_run(tmp_path / "gradcam", "gradcam", blurry_maps)], tmp_path / "cmp", scene)
    assert comparison["format_version"] == FORMAT_VERSION
    # Version 1 had no format_version and called the own-threshold setting "seed_threshold".
    old = json.loads(json.dumps(comparison).replace('"own_threshold"', '"seed_threshold"'))
    del old["format_version"]
    assert read_comparison(old) == comparison
    assert read_comparison(comparison) is comparison


def test_comparison_has_froc_and_bootstrap_intervals(tmp_path, scene, fgvis_maps, blurry_maps, make_run):
    from retina_fgvis.evaluation.compare import interval_table, overlap_lines
    from retina_fgvis.evaluation.froc import SWEEPS

    runs = [make_run(tmp_path / "fgvis", "fgvis", fgvis_maps), make_run(tmp_path / "gradcam", "gradcam", blurry_maps)]
    comparison = compare_runs(runs, tmp_path / "cmp", scene, seed=5, n_resamples=200)
    assert comparison["bootstrap"] == {"unit": "image", "n_resamples": 200, "seed": 5, "level": 0.95}
    for label in ("fgvis", "gradcam"):
        for t in ("hard_exudates", "soft_exudates"):
            for setting in SETTINGS:
                low, high = comparison["lesion_sensitivity_ci"][label][t][setting]
                assert low <= comparison["lesion_sensitivity"][label][t][setting] <= high
            for sweep in SWEEPS:
                entry = comparison["froc"][label][sweep]["lesion_types"][t]
                assert entry["roc_score_ci"][0] <= entry["roc_score"] <= entry["roc_score_ci"][1]
        assert comparison["lesion_sensitivity_ci"][label]["hemorrhages"]["own_threshold"] == [None, None]
    overlap = comparison["intervals_overlap"]
    assert list(overlap) == ["gradcam"] and set(overlap["gradcam"]["hard_exudates"]) == {
        "own_threshold", "matched_area", "froc_relative", "froc_area"}
    assert overlap["gradcam"]["hemorrhages"]["own_threshold"] is None
    again = compare_runs(runs, tmp_path / "again", scene, seed=5, n_resamples=200)
    assert again["lesion_sensitivity_ci"] == comparison["lesion_sensitivity_ci"] and again["froc"] == comparison["froc"]
    points = pd.read_csv(tmp_path / "cmp" / "froc.csv")
    assert len(points) == 2 * len(LESION_TYPES) * sum(len(p) for p in SWEEPS.values())
    assert len(pd.read_csv(tmp_path / "cmp" / "froc_scores.csv")) == 2 * len(SWEEPS) * len(LESION_TYPES)
    assert {"ci_low", "ci_high"} <= set(pd.read_csv(tmp_path / "cmp" / "comparison.csv").columns)
    assert interval_table(comparison).row_count == 2 * 4 and len(interval_table(comparison).columns) == 2 + 4
    (line,) = overlap_lines(comparison)
    assert line.startswith("gradcam vs fgvis:")
