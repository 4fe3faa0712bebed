"""Hand-checked metric values on the scene of conftest.py."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from retina_fgvis.evaluation.localization import (
    FalsePositiveComponents,
    ImageDetection,
    LesionSensitivity,
    PixelOverlap,
    RunFolderError,
    chance_mask,
    lesion_hits,
    score_run,
    summary_table,
)
from retina_fgvis.datasets import LESION_TYPES

SIZE = 32  # the conftest scene's size

SUMMARY_KEYS = {
    "method", "run", "n_images", "n_unfinished", "threshold", "tolerance", "seed", "area_fraction",
    "lesion_sensitivity", "n_lesions", "n_hit", "pixel_sensitivity", "pixel_precision",
    "image_detection", "n_images_with_lesions", "fp_components_per_image", "chance", "rdr_probability",
    "success", "lesion_sensitivity_ci", "bootstrap",
}


def test_lesion_hits_with_and_without_tolerance(scene, fgvis_maps):
    lesions = scene.samples["image001"].lesions
    detection = fgvis_maps["image001"] >= 0.04
    assert lesion_hits(detection, lesions["hard_exudates"]) == (1, 2)
    assert lesion_hits(detection, lesions["hard_exudates"], tolerance=1) == (1, 2)
    assert lesion_hits(detection, lesions["hard_exudates"], tolerance=2) == (2, 2)   # (20, 22) is 2 px away
    assert lesion_hits(detection, lesions["red_small_dots"]) == (0, 1)               # diagonal pair = 1 lesion


def test_stateful_metrics_pool_update_summary_reset(scene, fgvis_maps):
    first, second = scene.samples["image001"], scene.samples["image002"]
    maps = fgvis_maps
    det1, det2 = maps["image001"] >= 0.04, maps["image002"] >= 0.04
    sens, image_det, pixels, fps = LesionSensitivity(), ImageDetection(), PixelOverlap(), FalsePositiveComponents()
    assert math.isnan(sens.summary()) and math.isnan(image_det.summary())
    assert sens.update(det1, first.lesions["hard_exudates"]) == (1, 2)
    assert sens.update(det2, second.lesions["hard_exudates"]) == (0, 0)
    assert sens.summary() == 0.5
    assert image_det.update(det1, first.lesions["hard_exudates"]) is True
    assert image_det.update(det2, second.lesions["hard_exudates"]) is None
    assert image_det.update(det1, first.lesions["soft_exudates"]) is False
    assert image_det.summary() == 0.5
    assert pixels.update(det1, first.lesions["hard_exudates"]) == (1, 10, 3)
    assert pixels.update(det2, second.lesions["hard_exudates"]) == (0, 0, 4)
    assert pixels.summary() == {"sensitivity": 0.1, "precision": 1 / 7}
    any1 = np.logical_or.reduce(list(first.lesions.values()))
    assert fps.update(det1, any1) == 2                              # (20, 22) and (0, 31) touch nothing
    assert fps.update(det2, np.zeros_like(det2)) == 1
    assert fps.summary() == 1.5
    assert FalsePositiveComponents(tolerance=2).update(det1, any1) == 1
    for metric in (sens, image_det, pixels, fps):
        metric.reset()
    assert math.isnan(sens.summary()) and math.isnan(pixels.summary()["precision"]) and math.isnan(fps.summary())


def test_score_run_writes_hand_checked_csv_and_summary(tmp_path, scene, fgvis_maps, make_run):
    run = make_run(tmp_path / "fgvis", "fgvis", fgvis_maps)
    summary = score_run(run, scene, tolerance=0, seed=3)
    assert [call[1] for call in scene.calls] == [SIZE, SIZE]          # ground truth at the maps' resolution
    on_disk = json.loads((run / "summary.json").read_text())
    assert on_disk == summary
    assert set(summary) == SUMMARY_KEYS
    for key in ("lesion_sensitivity", "pixel_sensitivity", "pixel_precision", "image_detection"):
        assert list(summary[key]) == list(LESION_TYPES)
        assert list(summary["chance"][key]) == list(LESION_TYPES)
    assert summary["method"] == "fgvis" and summary["n_images"] == 2 and summary["threshold"] == 0.04
    assert summary["n_unfinished"] == 0
    assert summary["area_fraction"] == pytest.approx(3.5 / SIZE**2)
    assert summary["lesion_sensitivity"] == {"hard_exudates": 0.5, "soft_exudates": 0.0, "hemorrhages": None,
                                             "red_small_dots": 0.0}
    assert summary["n_lesions"] == {"hard_exudates": 2, "soft_exudates": 1, "hemorrhages": 0, "red_small_dots": 1}
    assert summary["pixel_sensitivity"]["hard_exudates"] == pytest.approx(0.1)
    assert summary["pixel_precision"]["hard_exudates"] == pytest.approx(1 / 7)
    assert summary["image_detection"]["hard_exudates"] == 1.0 and summary["image_detection"]["soft_exudates"] == 0.0
    assert summary["fp_components_per_image"] == 1.5
    assert summary["rdr_probability"] == {"before": pytest.approx(0.85), "after": pytest.approx(0.05)}

    table = pd.read_csv(run / "per_image.csv")
    assert len(table) == 2 * len(LESION_TYPES)
    for column in ("image_id", "lesion_type", "n_lesions", "n_hit", "lesion_sensitivity", "pixel_sensitivity",
                   "pixel_precision", "detected", "chance_hits", "prob_before", "prob_after", "fp_components"):
        assert column in table.columns
    he = table[(table.image_id == "image001") & (table.lesion_type == "hard_exudates")].iloc[0]
    assert (he.n_lesions, he.n_hit, he.lesion_sensitivity, he.fp_components) == (2, 1, 0.5, 2)
    assert bool(he.detected) is True and he.prob_before == pytest.approx(0.9)
    hem = table[(table.image_id == "image001") & (table.lesion_type == "hemorrhages")].iloc[0]
    assert hem.n_lesions == 0 and pd.isna(hem.lesion_sensitivity) and pd.isna(hem.detected)

    tolerant = score_run(run, scene, tolerance=2, seed=3)
    assert tolerant["lesion_sensitivity"]["hard_exudates"] == 1.0
    assert tolerant["fp_components_per_image"] == 1.0


def test_chance_control_is_a_seeded_rotation():
    fov = np.zeros((SIZE, SIZE), bool)
    fov[2:-2, 2:-2] = True
    detection = np.zeros((SIZE, SIZE), bool)
    detection[6:10, 4:8] = True                                     # 16 px, off-centre
    rotated, angle = chance_mask(detection, fov, "image001", seed=0)
    again, same_angle = chance_mask(detection, fov, "image001", seed=0)
    assert np.array_equal(rotated, again) and angle == same_angle
    assert 45 <= angle <= 315
    assert chance_mask(detection, fov, "image001", seed=1)[1] != angle
    assert chance_mask(detection, fov, "image002", seed=0)[1] != angle
    assert not (rotated & ~fov).any()
    assert 8 <= rotated.sum() <= 24 and not (rotated & detection).all()
    centre = (SIZE - 1) / 2                                          # rotation about the centre keeps the radius
    radius = lambda m: np.hypot(*(np.argwhere(m).mean(0) - centre))
    assert radius(rotated) == pytest.approx(radius(detection), abs=1.5)


def test_chance_in_score_run_is_deterministic(tmp_path, scene, fgvis_maps, make_run):
    run = make_run(tmp_path / "fgvis", "fgvis", fgvis_maps)
    first = score_run(run, scene, seed=7)
    csv_first = (run / "per_image.csv").read_text()
    assert score_run(run, scene, seed=7) == first
    assert (run / "per_image.csv").read_text() == csv_first
    assert "chance_angle" in csv_first and set(first["chance"]["lesion_sensitivity"]) == set(LESION_TYPES)


def test_bad_inputs_name_the_argument_or_file(tmp_path, scene, fgvis_maps, make_run):
    with pytest.raises(RunFolderError, match="does not exist"):
        score_run(tmp_path / "missing", scene)
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunFolderError, match="run.json"):
        score_run(tmp_path / "empty", scene)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text('{"epochs": 3}')
    with pytest.raises(RunFolderError, match="not a localization run"):
        score_run(tmp_path / "other", scene)
    run = make_run(tmp_path / "run", "fgvis", fgvis_maps)
    with pytest.raises(ValueError, match="tolerance"):
        score_run(run, scene, tolerance=-1)
    with pytest.raises(ValueError, match="seed"):
        score_run(run, scene, seed=-2)
    summary_before = score_run(run, scene)
    for bad in (0.0, 1.5):
        make_run(run, "fgvis", fgvis_maps, threshold=bad)
        with pytest.raises(RunFolderError, match=r"record\.json.*threshold"):
            score_run(run, scene)
    assert json.loads((run / "summary.json").read_text()) == summary_before   # nothing overwritten
    partial = make_run(tmp_path / "partial", "fgvis", fgvis_maps)
    info = json.loads((partial / "run.json").read_text())
    info["config"]["image_ids"] = ["image001", "image002", "image003"]      # a shard still running
    (partial / "run.json").write_text(json.dumps(info))
    assert score_run(partial, scene)["n_unfinished"] == 1
    unfinished = make_run(tmp_path / "unfinished", "fgvis", fgvis_maps)
    for record in unfinished.glob("images/*/record.json"):
        record.unlink()
    with pytest.raises(RunFolderError, match="no finished images"):
        score_run(unfinished, scene)


def test_failed_explanations_are_counted_and_scored_apart(tmp_path, scene, fgvis_maps, make_run):
    run = make_run(tmp_path / "fgvis", "fgvis", fgvis_maps, failed=("image001",))
    summary = score_run(run, scene)
    assert summary["success"]["n_success"] == 1 and summary["success"]["n_failed"] == 1
    assert summary["success"]["n_below_at_start"] == 0 and summary["success"]["stop_score"] is None  # not in run.json
    # over all images image001's hard exudate counts; over the successful ones (image002 only) there is none
    assert summary["lesion_sensitivity"]["hard_exudates"] == 0.5
    assert summary["success"]["successful"]["n_lesions"]["hard_exudates"] == 0
    assert summary["success"]["successful"]["lesion_sensitivity"]["hard_exudates"] is None
    table = pd.read_csv(run / "per_image.csv")
    assert dict(zip(table.image_id, table.success)) == {"image001": False, "image002": True}
    printed = summary_table(summary)
    assert "stop met on 1 of 2" in printed.title and "sens. (met)" in [c.header for c in printed.columns]


def test_baselines_have_no_stop_rule_to_count(tmp_path, scene, blurry_maps, make_run):
    summary = score_run(make_run(tmp_path / "gradcam", "gradcam", blurry_maps), scene)
    assert summary["success"] is None
    assert pd.read_csv(tmp_path / "gradcam" / "per_image.csv")["success"].isna().all()
