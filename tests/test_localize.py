"""Localization runs on the small semi-synthetic set with the quickly trained model (tests/conftest.py)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from retina_fgvis.evaluation.compare import compare_runs
from retina_fgvis.evaluation.localization import score_run
from retina_fgvis.datasets import LESION_TYPES
from retina_fgvis.datasets.errors import DatasetError
import retina_fgvis.localize as localize_module
from retina_fgvis.localize import LocalizeConfig, localize, parse_shard, run_complete, shard_batches
from retina_fgvis.models.checkpoint import CheckpointError
from retina_fgvis.viz import LESION_COLOURS

#: FGVis: the paper's medical protocol, unchanged (LocalizeConfig's defaults).
FGVIS_STEPS = 500
FGVIS_LAM = 1e-10


def _config(data, checkpoint, out, **overrides) -> LocalizeConfig:
    settings = dict(data_dir=data.root, checkpoint=checkpoint, out=out, dataset="synthetic", device="cpu",
                    progress=False)
    return LocalizeConfig(**{**settings, **overrides})


@pytest.fixture(scope="module")
def runs(synthetic_data, trained_checkpoint, build_once):
    """FGVis and Grad-CAM run folders over the 24 test images, scored and compared (built once per session)."""

    def build(base: Path) -> None:
        fgvis = localize(_config(synthetic_data, trained_checkpoint, base / "fgvis"))
        gradcam = localize(_config(synthetic_data, trained_checkpoint, base / "gradcam", method="gradcam"))
        score_run(fgvis)
        compare_runs([fgvis, gradcam], base / "comparison")

    base = build_once("localize_runs", build)
    return {"fgvis": base / "fgvis", "gradcam": base / "gradcam",
            "summary": json.loads((base / "fgvis" / "summary.json").read_text()),
            "comparison": json.loads((base / "comparison" / "comparison.json").read_text())}


def test_fgvis_masks_reach_the_lesions_well_above_chance(runs):
    summary = runs["summary"]
    types = [t for t in LESION_TYPES if summary["n_lesions"][t]]
    assert types, "the small set must hold lesions"
    hits = sum(summary["n_hit"][t] for t in types)
    chance_hits = sum(summary["chance"]["n_hit"][t] for t in types)
    lesions = sum(summary["n_lesions"][t] for t in types)
    assert hits / lesions >= chance_hits / lesions + 0.10, (hits, chance_hits, lesions, summary)
    for t in types:
        assert summary["lesion_sensitivity"][t] >= summary["chance"]["lesion_sensitivity"][t], (t, summary)


def test_fgvis_beats_gradcam_at_matched_area_on_every_lesion_type(runs):
    sensitivity = runs["comparison"]["lesion_sensitivity"]
    for t in LESION_TYPES:
        fgvis, gradcam = sensitivity["fgvis"][t]["matched_area"], sensitivity["gradcam"][t]["matched_area"]
        if fgvis is None:  # no lesion of this type in the set
            continue
        assert fgvis > gradcam, (t, sensitivity)


def test_summary_json_keys(runs):
    summary = json.loads((runs["fgvis"] / "summary.json").read_text())
    assert summary["method"] == "fgvis" and summary["n_images"] == 24
    assert 0 < summary["area_fraction"] < 1
    for key in ("lesion_sensitivity", "pixel_sensitivity", "pixel_precision", "image_detection"):
        assert set(summary[key]) == set(LESION_TYPES)
    assert set(summary["chance"]["lesion_sensitivity"]) == set(LESION_TYPES)
    assert math.isfinite(summary["fp_components_per_image"])


def test_run_folder_holds_every_per_image_output(runs, trained_checkpoint):
    out = runs["fgvis"]
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["method"] == "fgvis" and config["dataset"] == "synthetic" and config["split"] == "test"
    assert (config["lam"], config["max_iter"]) == (FGVIS_LAM, FGVIS_STEPS)
    assert (config["lr"], config["stop_score"], config["threshold"]) == (0.25, 0.10, 0.04)
    assert config["checkpoint"] == str(Path(trained_checkpoint).resolve())
    assert run_complete(out)
    folders = sorted((out / "images").iterdir())
    assert [f.name for f in folders] == config["image_ids"]
    for folder in folders:
        record = json.loads((folder / "record.json").read_text())
        with np.load(folder / "maps.npz") as maps:
            importance, binary = maps["importance"], maps["binary"]
            assert importance.shape == (128, 128) and importance.dtype == np.float32
            assert maps["mask"].shape == (3, 128, 128) and maps["mask"].dtype == np.float16
            if record["iterations"]:
                np.testing.assert_allclose(importance, 1 - maps["mean_mask"], atol=1e-6)
            else:  # already below the stop score: nothing deleted
                assert not importance.any()
            peak = importance.max()
            np.testing.assert_array_equal(binary, (importance >= 0.04 * peak) & (peak > 0))
        assert record["image_id"] == folder.name and record["method"] == "fgvis"
        assert 0 <= record["prob_after"] <= 1 and 0 <= record["iterations"] <= FGVIS_STEPS
        assert record["lam"] == FGVIS_LAM and record["threshold"] == 0.04
        assert record["stop_score"] == 0.10
        assert record["success"] is (record["prob_after"] < 0.10)  # the stop rule, judged on the final score
        if record["iterations"] < FGVIS_STEPS:  # stopped early: the paper's stop rule was met
            assert record["success"]
        assert cv2.imread(str(folder / "overlay.png")).shape == (128, 128, 3)
        assert (folder / "overlay_thumb.png").is_file()


def test_baseline_records_have_no_fgvis_fields(runs):
    record = json.loads(next((runs["gradcam"] / "images").glob("*/record.json")).read_text())
    assert record["method"] == "gradcam" and record["prob_after"] is None and record["iterations"] is None
    assert record["success"] is None and record["stop_score"] is None  # no stop rule to meet
    with np.load(next((runs["gradcam"] / "images").glob("*/maps.npz"))) as maps:
        assert set(maps.files) == {"importance", "binary"}
        assert 0 <= maps["importance"].min() and maps["importance"].max() <= 1


def test_a_run_where_most_images_fail_warns_once(synthetic_data, trained_checkpoint, tmp_path):
    with pytest.warns(localize_module.StopNotReachedWarning, match="diagnose") as caught:
        out = localize(_config(synthetic_data, trained_checkpoint, tmp_path / "one-step", max_iter=1))
    assert len([w for w in caught if w.category is localize_module.StopNotReachedWarning]) == 1
    summary = score_run(out)
    outcomes = [json.loads(r.read_text())["success"] for r in (out / "images").glob("*/record.json")]
    assert summary["success"]["n_failed"] == outcomes.count(False) > len(outcomes) / 2
    assert summary["success"]["n_success"] == outcomes.count(True)


def test_occlusion_runs_through_the_same_pipeline(synthetic_data, trained_checkpoint, tmp_path):
    out = localize(_config(synthetic_data, trained_checkpoint, tmp_path / "occlusion", method="occlusion",
                           batch_size=2, shard="0/12"))  # one batch of two images keeps it quick
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["method"] == "occlusion" and "lam" not in config and "occlusion_window" in config
    records = sorted((out / "images").glob("*/record.json"))
    assert [r.parent.name for r in records] == ["image001", "image002"]
    for record in records:
        assert json.loads(record.read_text())["method"] == "occlusion"
        with np.load(record.parent / "maps.npz") as maps:
            assert maps["importance"].shape == (128, 128) and maps["importance"].max() == pytest.approx(1.0)


def test_resume_after_a_kill_recomputes_only_unfinished_images(runs, synthetic_data, trained_checkpoint, tmp_path,
                                                               monkeypatch):
    out = tmp_path / "run"
    shutil.copytree(runs["fgvis"], out)
    for name in ("per_image.csv", "summary.json", "report.html"):
        (out / name).unlink(missing_ok=True)
    folders = sorted((out / "images").iterdir())
    # Simulated kill while the second batch (images 9 to 16) was being written: image 10 lost its record
    # (written last), an overlay, and left a temporary file behind; the others are finished.
    killed = [folders[9]]
    (killed[0] / "record.json").unlink()
    (killed[0] / "overlay.png").unlink()
    (killed[0] / ".overlay.png.x1y2.tmp.png").write_bytes(b"half a png")
    kept = [f for f in folders if f not in killed]
    stamps = {f.name: [(f / n).stat().st_mtime_ns for n in ("maps.npz", "record.json")] for f in kept}
    explained = []
    make_explainer = localize_module._explainer

    def counting_explainer(config, classifier):
        explain = make_explainer(config, classifier)
        return lambda x, target: explained.append(len(x)) or explain(x, target)

    monkeypatch.setattr(localize_module, "_explainer", counting_explainer)
    localize(_config(synthetic_data, trained_checkpoint, out))
    assert explained == [8]  # only the batch holding the unfinished image, recomputed as a whole
    assert run_complete(out)
    assert not list(killed[0].glob(".*.tmp*"))
    assert {f.name: [(f / n).stat().st_mtime_ns for n in ("maps.npz", "record.json")] for f in kept} == stamps
    for folder in killed:
        original = runs["fgvis"] / "images" / folder.name
        for name in ("maps.npz", "overlay.png", "overlay_thumb.png"):
            assert (folder / name).read_bytes() == (original / name).read_bytes(), name
        resumed = json.loads((folder / "record.json").read_text())
        first = json.loads((original / "record.json").read_text())
        assert {k: v for k, v in resumed.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}


def test_two_shards_into_one_folder_score_like_one_run(runs, synthetic_data, trained_checkpoint, tmp_path):
    out = tmp_path / "sharded"
    localize(_config(synthetic_data, trained_checkpoint, out, shard="1/2"))
    assert not run_complete(out)
    assert len(list((out / "images").glob("*/record.json"))) == 8  # batch 2 of 3: images 9 to 16
    localize(_config(synthetic_data, trained_checkpoint, out, shard=(0, 2)))
    assert run_complete(out)
    sharded, unsharded = score_run(out), dict(runs["summary"])
    sharded.pop("run"), unsharded.pop("run")
    assert sharded == unsharded
    for folder in sorted((out / "images").iterdir()):
        reference = runs["fgvis"] / "images" / folder.name
        assert (folder / "maps.npz").read_bytes() == (reference / "maps.npz").read_bytes()


def test_torchrun_environment_picks_the_rank_share(monkeypatch):
    ids = [f"image{i:03d}" for i in range(1, 8)]
    assert shard_batches(ids, 3) == [ids[:3], ids[3:6], ids[6:]]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert shard_batches(list(reversed(ids)), 2) == [["image003", "image004"], ["image007"]]
    assert shard_batches(ids, 2, "0/2") == [["image001", "image002"], ["image005", "image006"]]
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "a/b", "1", (2, 1)):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


# ------------------------------------------------------------------------------------------ bad input
def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_checkpoint_that_is_not_a_fundus_classifier(synthetic_data, tmp_path):
    foreign = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, foreign)
    with pytest.raises(CheckpointError, match="resnet.pt"):
        localize(_config(synthetic_data, foreign, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_data_dir_without_diaretdb1(trained_checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    config = LocalizeConfig(data_dir=tmp_path / "empty", checkpoint=trained_checkpoint, out=tmp_path / "out",
                            device="cpu", progress=False)
    with pytest.raises(DatasetError, match="empty"):
        localize(config)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("threshold", [0.0, 1.5, -0.04])
def test_threshold_outside_unit_interval(runs, synthetic_data, trained_checkpoint, threshold):
    before = _snapshot(runs["gradcam"])
    with pytest.raises(ValueError, match="threshold"):
        localize(_config(synthetic_data, trained_checkpoint, runs["gradcam"], method="gradcam", threshold=threshold))
    assert _snapshot(runs["gradcam"]) == before


@pytest.mark.parametrize("change", [{"method": "occlusion"}, {"threshold": 0.1}, {"split": "all"}, {"batch_size": 4}])
def test_output_folder_of_another_run_is_refused_and_kept(runs, synthetic_data, trained_checkpoint, change):
    before = _snapshot(runs["gradcam"])
    overrides = {"method": "gradcam", **change}
    with pytest.raises(ValueError, match="another run"):
        localize(_config(synthetic_data, trained_checkpoint, runs["gradcam"], **overrides))
    assert _snapshot(runs["gradcam"]) == before


def test_resume_or_shard_may_use_other_paths_and_device(runs, synthetic_data, trained_checkpoint, tmp_path):
    # Shards on other machines may see the same checkpoint under another path (it is identified by its SHA-256).
    out = tmp_path / "run"
    shutil.copytree(runs["gradcam"], out)
    moved = shutil.copy(trained_checkpoint, tmp_path / "elsewhere.pt")
    before = _snapshot(out)
    localize(_config(synthetic_data, moved, out, method="gradcam", device="cpu", shard="1/3"))
    assert _snapshot(out) == before  # everything was finished: nothing rewritten, run.json kept


@pytest.mark.parametrize("method, recorded", [
    ("gradcampp", {"gradcam_layer": "features.4.0"}), ("gradient", {}),
    ("smoothgrad", {"smoothgrad_samples": 3, "seed": 0}), ("random", {"random_cell": None, "seed": 0})])
def test_every_baseline_runs_through_the_same_pipeline(method, recorded, synthetic_data, trained_checkpoint, tmp_path):
    out = localize(_config(synthetic_data, trained_checkpoint, tmp_path / method, method=method, batch_size=2,
                           shard="0/12", smoothgrad_samples=3))
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["method"] == method and "lam" not in config and "occlusion_window" not in config
    assert {key: config.get(key) for key in recorded} == recorded
    assert ("gradcam_layer" in config) == (method == "gradcampp")
    for folder in sorted((out / "images").glob("*")):
        assert json.loads((folder / "record.json").read_text())["method"] == method
        with np.load(folder / "maps.npz") as maps:
            assert maps["importance"].min() >= 0 and maps["importance"].max() == pytest.approx(1.0)


def test_gradcam_layer_option(synthetic_data, trained_checkpoint, tmp_path):
    out = localize(_config(synthetic_data, trained_checkpoint, tmp_path / "last", method="gradcam", batch_size=2,
                           shard="0/12", gradcam_layer="last"))
    assert json.loads((out / "run.json").read_text())["config"]["gradcam_layer"] == "features.4.0"
    with pytest.raises(ValueError, match="gradcam_layer"):
        localize(_config(synthetic_data, trained_checkpoint, tmp_path / "bad", method="gradcam", gradcam_layer="nope"))
    assert not (tmp_path / "bad").exists()


def test_output_folder_with_foreign_files_is_refused(synthetic_data, trained_checkpoint, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        localize(_config(synthetic_data, trained_checkpoint, tmp_path, method="gradcam"))
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_bad_settings_name_the_field(synthetic_data, trained_checkpoint, tmp_path):
    for field, value in (("method", "lime"), ("split", "val"), ("batch_size", 0), ("lr", 0.0), ("stop_score", 2.0),
                         ("dataset", "eyepacs"), ("smoothgrad_samples", 0), ("random_cell", 0)):
        with pytest.raises(ValueError, match=field):
            localize(_config(synthetic_data, trained_checkpoint, tmp_path / "out", **{field: value}))
    assert not (tmp_path / "out").exists()


def _photograph_release(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """A DiaretDB1 v2.1 release of one 300×230 photograph (1500×1152 scaled down): a disc cut off at the top
    and bottom, one hemorrhage and one red small dot marked by all four experts.

    Returns the hemorrhage's and the dot's true masks in photograph pixels."""
    from retina_fgvis.datasets.diaretdb1 import N_EXPERTS, V2_GROUNDTRUTH, V2_IMAGES, V2_SPLITS, Marking, expert_xml

    ys, xs = np.mgrid[0:230, 0:300]
    rng = np.random.default_rng(0)
    photo = np.zeros((230, 300, 3), np.uint8)
    disc = (xs - 155) ** 2 + (ys - 115) ** 2 <= 120**2
    photo[disc] = np.clip(np.array([190, 90, 50]) + rng.integers(-10, 10, (230, 300, 1)), 0, 255)[disc]
    hemorrhage = (xs - 200) ** 2 + (ys - 80) ** 2 < 8**2
    dot = (xs - 110) ** 2 + (ys - 150) ** 2 < 2**2
    photo[hemorrhage | dot] = (90, 20, 20)
    (root / V2_IMAGES).mkdir(parents=True)
    (root / V2_GROUNDTRUTH).mkdir()
    cv2.imwrite(str(root / V2_IMAGES / "diaretdb1_image001.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    markings = [Marking("hemorrhages", "High", "circle", (200, 80), (8, 8), representative=(200, 80)),
                Marking("red_small_dots", "High", "circle", (110, 150), (2, 2), representative=(110, 150))]
    for expert in range(1, N_EXPERTS + 1):
        (root / V2_GROUNDTRUTH / f"diaretdb1_image001_{expert:02d}.xml").write_text(
            expert_xml(markings, "diaretdb1_image001.png"))
    (root / V2_SPLITS["test"]).write_text("images/diaretdb1_image001.png\n")
    (root / V2_SPLITS["train"]).write_text("")
    return hemorrhage, dot


def _cyan(overlay: np.ndarray) -> np.ndarray:
    from retina_fgvis.viz import DETECTION_COLOUR

    return np.all(overlay == DETECTION_COLOUR, axis=2)


def test_full_resolution_overlay_maps_the_detection_onto_its_lesion(tmp_path):
    from retina_fgvis.datasets import open_diaretdb1
    from retina_fgvis.localize import full_resolution_overlay

    hemorrhage, dot = _photograph_release(tmp_path / "ddb1")
    dataset = open_diaretdb1(tmp_path / "ddb1")
    sample = dataset.load("image001", size=64)
    # The detection is the hemorrhage as the 64-px classifier input sees it.
    overlay = full_resolution_overlay(dataset, sample, sample.lesions["hemorrhages"])
    assert overlay.shape == (230, 300, 3)
    detected = _cyan(overlay)
    reach = int(np.ceil(sample.geometry.side / 64)) + 1  # one input pixel in photograph pixels, and the outline
    near = cv2.dilate(hemorrhage.astype(np.uint8), np.ones((2 * reach + 1,) * 2, np.uint8)).astype(bool)
    assert detected.any() and not (detected & ~near).any()  # every detection pixel lies on or around the hemorrhage
    ys, xs = np.nonzero(detected)
    assert abs(xs.mean() - 200) <= 2 and abs(ys.mean() - 80) <= 2  # centred on it, not shifted by the crop
    assert not cv2.dilate(dot.astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool)[detected].any()
    red = np.all(overlay == LESION_COLOURS["red_small_dots"], axis=2)
    assert red[np.ix_(range(146, 155), range(106, 115))].any()  # the experts' dot drawn where it is


def test_localize_writes_full_resolution_overlays_linked_from_the_report(tmp_path):
    from retina_fgvis.datasets import open_diaretdb1
    from retina_fgvis.evaluation.report import write_report
    from retina_fgvis.models.checkpoint import save_checkpoint
    from retina_fgvis.models.fundus_cnn import FundusCNN

    _photograph_release(tmp_path / "ddb1")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "model.pt", FundusCNN(width=4),
                                 {"image_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3})
    run = localize(LocalizeConfig(data_dir=tmp_path / "ddb1", checkpoint=checkpoint, out=tmp_path / "run",
                                  method="gradcam", device="cpu", progress=False))
    folder = run / "images" / "image001"
    full = cv2.cvtColor(cv2.imread(str(folder / "overlay_full.png")), cv2.COLOR_BGR2RGB)
    assert full.shape == (230, 300, 3) and cv2.imread(str(folder / "overlay.png")).shape == (64, 64, 3)
    with np.load(folder / "maps.npz") as maps:
        binary = maps["binary"]
    sample = open_diaretdb1(tmp_path / "ddb1").load("image001", size=64)
    mapped = sample.geometry.to_photograph(binary & sample.fov)
    outline = cv2.dilate(mapped.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    assert _cyan(full).any() and not (_cyan(full) & ~outline).any()
    score_run(run, open_diaretdb1(tmp_path / "ddb1"), progress=False)
    html = write_report(run, embed=False).read_text()
    assert '<a href="images/image001/overlay_full.png" target="_blank"' in html


def test_a_run_recorded_before_run_records_had_a_kind_resumes(runs, synthetic_data, trained_checkpoint, tmp_path):
    # Version 0 of run.json: no kind or format version, and no `compile` setting (such runs were eager).
    out = tmp_path / "run"
    shutil.copytree(runs["gradcam"], out)
    info = json.loads((out / "run.json").read_text())
    info["config"].pop("compile")
    (out / "run.json").write_text(json.dumps({"config": info["config"], "environment": info["environment"]}))
    record = next(out.glob("images/*/record.json"))
    record.unlink()  # one image left to do
    localize(_config(synthetic_data, trained_checkpoint, out, method="gradcam"))
    assert record.is_file() and "kind" not in json.loads((out / "run.json").read_text())  # resumed, record kept
