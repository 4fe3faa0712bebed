"""Bootstrap intervals over images: contain the estimate, reproducible with the seed, paired across methods."""
import math

import numpy as np
import pytest

from retina_fgvis.evaluation.bootstrap import (intervals_overlap, percentile_interval, pooled_ratio_interval,
                                               resample_images)
from retina_fgvis.evaluation.localization import score_run


def test_resamples_are_seeded_and_in_range():
    first = resample_images(7, 50, seed=2)
    assert first.shape == (50, 7) and first.min() >= 0 and first.max() < 7
    np.testing.assert_array_equal(first, resample_images(7, 50, seed=2))
    assert not np.array_equal(first, resample_images(7, 50, seed=3))
    with pytest.raises(ValueError, match="n_resamples"):
        resample_images(7, 0)


def test_pooled_ratio_interval_contains_the_estimate_and_is_reproducible():
    rng = np.random.default_rng(0)
    lesions = rng.integers(0, 6, 30)
    hits = rng.binomial(lesions, 0.4)
    estimate = hits.sum() / lesions.sum()
    low, high = pooled_ratio_interval(hits, lesions, resample_images(30, 500, seed=1))
    assert low <= estimate <= high and 0 < high - low < 0.5
    assert (low, high) == pooled_ratio_interval(hits, lesions, resample_images(30, 500, seed=1))
    # Every resampled statistic of a constant ratio is that ratio.
    assert pooled_ratio_interval(2 * lesions, 4 * lesions, resample_images(30, 100)) == (0.5, 0.5)
    assert all(math.isnan(v) for v in pooled_ratio_interval(np.zeros(3), np.zeros(3), resample_images(3, 10)))


def test_percentile_interval_and_overlap():
    assert percentile_interval(np.arange(101.0), level=0.9) == pytest.approx((5.0, 95.0))
    assert percentile_interval([np.nan, 1.0, 1.0]) == (1.0, 1.0)
    with pytest.raises(ValueError, match="level"):
        percentile_interval([1.0], level=1.0)
    assert intervals_overlap((0.1, 0.3), (0.3, 0.5)) is True
    assert intervals_overlap((0.1, 0.2), (0.3, 0.5)) is False
    assert intervals_overlap((0.1, None), (0.3, 0.5)) is None and intervals_overlap(None, (0, 1)) is None


def test_score_run_intervals(tmp_path, scene, fgvis_maps, make_run):
    run = make_run(tmp_path / "fgvis", "fgvis", fgvis_maps)
    summary = score_run(run, scene, seed=4, n_resamples=300)
    assert summary["bootstrap"] == {"unit": "image", "n_resamples": 300, "seed": 4, "level": 0.95}
    for t in ("hard_exudates", "soft_exudates", "red_small_dots"):
        low, high = summary["lesion_sensitivity_ci"][t]
        assert low <= summary["lesion_sensitivity"][t] <= high
        low, high = summary["chance"]["lesion_sensitivity_ci"][t]
        assert low <= summary["chance"]["lesion_sensitivity"][t] <= high
    assert summary["lesion_sensitivity_ci"]["hemorrhages"] == [None, None]
    assert score_run(run, scene, seed=4, n_resamples=300)["lesion_sensitivity_ci"] == summary["lesion_sensitivity_ci"]
