"""FROC curves and the ROC score on the conftest scene and on hand-made counts."""
import math

import numpy as np
import pytest

from retina_fgvis.datasets import LESION_TYPES
from retina_fgvis.evaluation.bootstrap import resample_images
from retina_fgvis.evaluation.froc import FROCCurve, ROC_FP_RATES, roc_score
from retina_fgvis.evaluation.localization import LocalizationScorer


def test_roc_score_equals_a_hand_computation():
    # Points (FP/image, sensitivity), deliberately unsorted, with a dominated point (3, 0.5) and a tie at 1.
    fp = [2.0, 0.5, 1.0, 1.0, 3.0, 6.0]
    sens = [0.8, 0.4, 0.5, 0.6, 0.5, 1.0]
    # Curve after the rule: (0, 0), (0.5, 0.4), (1, 0.6), (2, 0.8), (3, 0.8), (6, 1.0), flat after 6.
    at = {1 / 8: 0.1, 1 / 4: 0.2, 1 / 2: 0.4, 1: 0.6, 2: 0.8, 4: 0.8 + 0.2 / 3, 8: 1.0}
    assert roc_score(fp, sens) == pytest.approx(sum(at[r] for r in ROC_FP_RATES) / 7)
    assert roc_score([0.0, 10.0], [0.5, 0.5]) == pytest.approx(0.5)        # a point at 0 FP needs no origin
    assert math.isnan(roc_score([1.0, 2.0], [math.nan, math.nan]))        # no lesion of that type


@pytest.mark.parametrize("sweep", ["relative", "area"])
def test_froc_points_are_monotone_and_match_the_single_point_scorer(sweep, scene, fgvis_maps, blurry_maps):
    for maps in (fgvis_maps, blurry_maps):
        curve = FROCCurve(sweep)
        for image_id, sample in scene.samples.items():
            curve.update(maps[image_id], sample.fov, sample.lesions)
        summary = curve.summary()
        assert summary["sweep"] == sweep and len(summary["fp_per_image"]) == len(curve.operating_points)
        for lesion_type in LESION_TYPES:
            values = np.array(summary["lesion_types"][lesion_type]["sensitivity"], float)
            if lesion_type == "hemorrhages":                               # none in the scene
                assert np.isnan(values).all() and summary["lesion_types"][lesion_type]["roc_score"] is not None
                continue
            assert (np.diff(values) >= 0).all(), (lesion_type, values)    # looser point, never fewer hits
            assert 0 <= summary["lesion_types"][lesion_type]["roc_score"] <= 1
    # The relative point 0.04 is the paper's binarization: same counts as the single-threshold scorer.
    curve, scorer = FROCCurve("relative", [0.04]), LocalizationScorer()
    for image_id, sample in scene.samples.items():
        curve.update(fgvis_maps[image_id], sample.fov, sample.lesions)
        scorer.update(fgvis_maps[image_id] >= 0.04 * fgvis_maps[image_id].max(), sample.lesions)
    summary, expected = curve.summary(), scorer.summary()
    assert summary["fp_per_image"] == [expected["fp_components_per_image"]]
    for lesion_type in ("hard_exudates", "soft_exudates", "red_small_dots"):
        assert summary["lesion_types"][lesion_type]["sensitivity"] == [expected["lesion_sensitivity"][lesion_type]]


def test_froc_on_the_scene_by_hand(scene, fgvis_maps):
    # image001: thresholds ≥ 0.6 keep only (6, 6) (a hard exudate hit, no FP); 0.5 … 0.02 add (20, 22), which
    # misses the single-pixel exudate at 2 px, and (0, 31): 2 FP; image002: its 2×2 block is 1 FP throughout.
    curve = FROCCurve("relative", [0.9, 0.5, 0.02], tolerance=0)
    for image_id, sample in scene.samples.items():
        curve.update(fgvis_maps[image_id], sample.fov, sample.lesions)
    summary = curve.summary()
    assert summary["fp_per_image"] == [0.5, 1.5, 1.5]
    assert summary["lesion_types"]["hard_exudates"]["sensitivity"] == [0.5, 0.5, 0.5]
    tolerant = FROCCurve("relative", [0.9, 0.5], tolerance=2)
    for image_id, sample in scene.samples.items():
        tolerant.update(fgvis_maps[image_id], sample.fov, sample.lesions)
    assert tolerant.summary()["lesion_types"]["hard_exudates"]["sensitivity"] == [0.5, 1.0]
    assert tolerant.summary()["fp_per_image"] == [0.5, 1.0]               # (20, 22) now touches a lesion


def test_froc_score_interval_contains_the_estimate_and_is_reproducible(scene, fgvis_maps, blurry_maps):
    curve = FROCCurve("area")
    for image_id, sample in scene.samples.items():
        curve.update(blurry_maps[image_id], sample.fov, sample.lesions)
        curve.update(fgvis_maps[image_id], sample.fov, sample.lesions)    # 4 "images"
    resamples = resample_images(curve.n_images, 200, seed=3)
    interval = curve.score_interval(resamples)
    for lesion_type in ("hard_exudates", "soft_exudates"):
        low, high = interval[lesion_type]
        assert low <= curve.summary()["lesion_types"][lesion_type]["roc_score"] <= high
    assert curve.score_interval(resample_images(curve.n_images, 200, seed=3)) == interval
    assert all(math.isnan(v) for v in interval["hemorrhages"])


def test_bad_froc_settings_raise():
    with pytest.raises(ValueError, match="sweep"):
        FROCCurve("roc")
    with pytest.raises(ValueError, match="operating_points"):
        FROCCurve("area", [])
    with pytest.raises(ValueError, match="no image"):
        FROCCurve().summary()


def test_a_flat_map_gains_nothing_from_marking_the_whole_retina(scene):
    # Without the cap, a constant-ish map at loose thresholds is one component touching every lesion: all hits,
    # no false positive. Both sweeps mark at most 20 % of the FOV.
    flat = {image_id: np.linspace(1.0, 0.99, 32 * 32, dtype=np.float32).reshape(32, 32) for image_id in scene.samples}
    for sweep in ("relative", "area"):
        curve = FROCCurve(sweep, [0.01] if sweep == "relative" else [0.5])
        for image_id, sample in scene.samples.items():
            curve.update(flat[image_id], sample.fov, sample.lesions)
        hits, _, _ = curve.counts()
        assert hits.sum() < 5                                              # top 20 %: rows 0–6, few lesions
