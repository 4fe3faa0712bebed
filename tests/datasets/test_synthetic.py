"""The semi-synthetic set: deterministic, readable by the real readers, consistent ground truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from skimage.measure import label, regionprops

from retina_fgvis.datasets import LESION_TYPES, generate_synthetic, load_eyepacs_table, open_diaretdb1, read_rgb
from retina_fgvis.datasets.synthetic import dr_grade

SETTINGS = {"n_train": 14, "n_test": 6, "size": 96, "seed": 3}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "set", **SETTINGS)


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != "synthetic.json"}


def test_generation_is_deterministic_for_a_seed(synth, tmp_path):
    again = generate_synthetic(tmp_path / "again", **SETTINGS)
    assert _files(synth.root) == _files(again.root)
    other = generate_synthetic(tmp_path / "other", **{**SETTINGS, "seed": 4, "n_train": 0, "n_test": 1})
    name = "diaretdb1/images/diaretdb1_image001.png"
    assert (other.root / name).read_bytes() != (synth.root / name).read_bytes()


def test_training_images_in_eyepacs_layout(synth):
    table = load_eyepacs_table(synth.eyepacs)
    images = pd.read_csv(synth.images_csv)
    train = images[images["set"] == "train"].set_index("image")
    assert len(table) == SETTINGS["n_train"]
    assert table["level"].tolist() == train.loc[table["image"], "grade"].tolist()
    assert table["label"].tolist() == train.loc[table["image"], "rdr"].tolist()
    assert (table.groupby("patient")["eye"].apply(sorted).map(tuple) == ("left", "right")).all()  # both eyes
    image = read_rgb(table["path"].iloc[0])
    assert image.shape == (96, 120, 3)


def test_grades_follow_from_lesions(synth):
    images = pd.read_csv(synth.images_csv)
    for _, row in images.iterrows():
        counts = {lesion: row[f"n_{lesion}"] for lesion in LESION_TYPES}
        assert row["grade"] == dr_grade(counts) and row["rdr"] == int(row["grade"] >= 2)
    assert dr_grade({}) == 0 and dr_grade({"red_small_dots": 3}) == 1 and dr_grade({"red_small_dots": 6}) == 2
    assert dr_grade({"hemorrhages": 8}) == 3 and dr_grade({"hemorrhages": 10, "soft_exudates": 3}) == 4


def test_both_layouts_load_to_the_same_masks(synth):
    v2, v1 = open_diaretdb1(synth.diaretdb1, rule="official"), open_diaretdb1(synth.diaretdb1_v1)
    assert (v2.version, v1.version) == ("2.1", "1.1")
    ids = v2.image_ids("test")
    assert ids == v1.image_ids("test") == [f"image{i:03d}" for i in range(1, SETTINGS["n_test"] + 1)]
    union = open_diaretdb1(synth.diaretdb1, min_experts=1)
    for image_id in ids:
        a, b = v2.load(image_id, size=96), v1.load(image_id, size=96)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.fov, b.fov)  # the shipped fmask.tif is the painted disc
        for lesion in LESION_TYPES:
            np.testing.assert_array_equal(a.lesions[lesion], b.lesions[lesion])
        marked = union.load(image_id, size=96)
        assert all((marked.lesions[t] >= a.lesions[t]).all() for t in LESION_TYPES)


def test_red_dots_stay_small_and_lesions_are_visible(synth):
    ds = open_diaretdb1(synth.diaretdb1)
    widths, contrast = [], []
    for image_id in ds.image_ids("test"):
        sample = ds.load(image_id, size=SETTINGS["size"])
        assert sample.image.shape == (96, 96, 3)
        for region in regionprops(label(sample.lesions["red_small_dots"])):
            y0, x0, y1, x1 = region.bbox
            widths.append(max(y1 - y0, x1 - x0))
        dark = sample.lesions["hemorrhages"]
        if dark.any():
            green = sample.image[..., 1].astype(float)
            contrast.append(green[sample.fov & ~dark].mean() - green[dark].mean())
    assert widths and max(widths) <= 6
    assert contrast and min(contrast) > 0  # hemorrhage ground truth lies on darker pixels


def test_invalid_settings(tmp_path):
    with pytest.raises(ValueError, match="n_test"):
        generate_synthetic(tmp_path, n_train=0, n_test=1000)
    with pytest.raises(ValueError, match="size"):
        generate_synthetic(tmp_path, n_train=2, n_test=0, size=8)
    with pytest.raises(ValueError, match="nothing to generate"):
        generate_synthetic(tmp_path, n_train=0, n_test=0)


def test_label_rule_decides_the_label_alone(tmp_path):
    import json

    from retina_fgvis.datasets.synthetic import LabelRule, _rule_counts, read_label_rule

    paths = generate_synthetic(tmp_path / "control", n_train=8, n_test=4, size=64, seed=5, label_rule="hemorrhages:2")
    rule = read_label_rule(paths.root)
    assert rule == LabelRule("hemorrhages", 2)
    assert json.loads((paths.root / "synthetic.json").read_text())["config"]["label_rule"]["rule"] == "hemorrhages:2"
    images = pd.read_csv(paths.images_csv)
    assert (images["rdr"] == (images["n_hemorrhages"] >= 2)).all() and (images["grade"] == 2 * images["rdr"]).all()
    table = load_eyepacs_table(paths.eyepacs)
    assert table["label"].tolist() == images.set_index("image").loc[table["image"], "rdr"].tolist()
    test = images[images["set"] == "test"].reset_index(drop=True)
    for index, row in test.iterrows():  # every drawn lesion is painted and counted
        assert {t: row[f"n_{t}"] for t in LESION_TYPES} == _rule_counts(rule, 5, 1, index)
    assert read_label_rule(generate_synthetic(tmp_path / "plain", n_train=0, n_test=1, size=64).root) is None


def test_label_rule_draws_the_other_types_independently_of_the_label():
    from retina_fgvis.datasets.synthetic import LabelRule

    rule = LabelRule.parse("red_small_dots:3")
    for seed in range(300):
        positive = rule.counts(np.random.default_rng(seed), True)
        negative = rule.counts(np.random.default_rng(seed), False)
        assert positive["red_small_dots"] >= 3 > negative["red_small_dots"] >= 0
        assert rule.rdr(positive) and not rule.rdr(negative)
        # Same random draws, other label: every other type is exactly the same, so none carries the label.
        assert {t: v for t, v in positive.items() if t != "red_small_dots"} == \
               {t: v for t, v in negative.items() if t != "red_small_dots"}
    draws = [rule.counts(np.random.default_rng(seed), True) for seed in range(300)]
    assert all(0.3 < np.mean([d[t] > 0 for d in draws]) < 0.7 for t in LESION_TYPES if t != "red_small_dots")
    assert str(rule) == "red_small_dots:3" and LabelRule.parse("hard_exudates") == LabelRule("hard_exudates", 1)


@pytest.mark.parametrize("text", ["optic_disc:1", "red_small_dots:0", "red_small_dots:x"])
def test_bad_label_rule_names_the_argument(tmp_path, text):
    with pytest.raises(ValueError, match="label_rule"):
        generate_synthetic(tmp_path / "bad", n_train=0, n_test=1, size=64, label_rule=text)
    assert not (tmp_path / "bad").exists()
