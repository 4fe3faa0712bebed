"""`retina-fgvis evaluate score|compare|report` on a tiny semi-synthetic DiaretDB1 (real files on disk)."""
import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from retina_fgvis.runs import RunFolder, RunKind
from retina_fgvis._io import atomic_save_npz, atomic_write_json
from retina_fgvis.cli import app
from retina_fgvis.datasets import LESION_TYPES, generate_synthetic, open_diaretdb1

SIZE = 64


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """Two 64 px test images in the DiaretDB1 layouts, and two runs: an oracle map (the lesions) and a
    map that highlights only what lies outside the field of view."""
    root = tmp_path_factory.mktemp("eval-cli")
    paths = generate_synthetic(root / "synth", n_train=0, n_test=2, size=SIZE, seed=1)
    dataset = open_diaretdb1(paths.diaretdb1)
    runs = {}
    for method in ("fgvis", "gradcam"):
        folder = root / method
        RunFolder(folder, RunKind.LOCALIZE).write_info({"method": method, "dataset": "synthetic", "data_dir": str(paths.root),
                                "split": "test", "threshold": 0.04})
        for image_id in dataset.image_ids("test"):
            sample = dataset.load(image_id, size=SIZE)
            if method == "fgvis":
                importance = np.logical_or.reduce(list(sample.lesions.values())).astype(np.float32)
            else:
                importance = (~sample.fov).astype(np.float32)
            atomic_save_npz(folder / "images" / image_id / "maps.npz", importance=importance)
            atomic_write_json(folder / "images" / image_id / "record.json", {
                "image_id": image_id, "method": method, "prob_before": 0.9, "prob_after": 0.05,
                "iterations": 12, "lam": 1e-10, "threshold": 0.04, "seconds": 0.2})
        runs[method] = folder
    return paths, runs


def _invoke(*args: str):
    return CliRunner().invoke(app, ["evaluate", *map(str, args)], env={"COLUMNS": "160"})


def test_score_compare_report(tiny_set, tmp_path):
    paths, runs = tiny_set
    result = _invoke("score", runs["fgvis"], "--data-dir", paths.root, "--dataset", "synthetic")
    assert result.exit_code == 0, result.output
    assert "hard_exudates" in result.output and "summary.json" in result.output
    summary = json.loads((runs["fgvis"] / "summary.json").read_text())
    present = [t for t in LESION_TYPES if summary["n_lesions"][t] > 0]
    assert present and all(summary["lesion_sensitivity"][t] == 1.0 for t in present)   # the oracle finds all
    assert all(summary["pixel_sensitivity"][t] == 1.0 for t in present)
    assert sum(summary["chance"]["n_hit"].values()) < sum(summary["n_lesions"].values())  # rotated: misses some

    # Without --data-dir the run's recorded data dir and dataset kind are used: same numbers.
    assert _invoke("score", runs["fgvis"]).exit_code == 0
    assert json.loads((runs["fgvis"] / "summary.json").read_text()) == summary
    # The v1.1 layout of the same images is read as well.
    assert _invoke("score", runs["fgvis"], "--data-dir", paths.diaretdb1_v1).exit_code == 0

    result = _invoke("compare", runs["fgvis"], runs["gradcam"], "--out", tmp_path / "cmp", "--resamples", "50")
    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comparison["bootstrap"]["n_resamples"] == 50
    assert "FROC ROC score" in result.output and "gradcam vs fgvis:" in result.output    # FROC table, overlaps
    assert (tmp_path / "cmp" / "froc.csv").is_file() and (tmp_path / "cmp" / "froc_scores.csv").is_file()
    assert list(comparison["lesion_sensitivity"]) == ["fgvis", "gradcam"]
    for t in present:   # outside the FOV nothing counts: the border map detects nothing at its threshold
        assert comparison["lesion_sensitivity"]["gradcam"][t]["own_threshold"] == 0.0
    fgvis_entry, border_entry = comparison["runs"]
    assert border_entry["area_fraction"] == 0.0
    assert border_entry["matched_area_fraction"] == fgvis_entry["area_fraction"] > 0
    assert "matched" in result.output

    result = _invoke("report", runs["fgvis"], "--comparison", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    html = (runs["fgvis"] / "report.html").read_text()
    assert html.count('<img class="thumb"') == 4                      # heat maps stand in for missing overlays


def test_errors_are_one_red_line_and_exit_2(tiny_set, tmp_path):
    paths, runs = tiny_set
    result = _invoke("score", tmp_path / "nowhere", "--data-dir", paths.root)
    assert result.exit_code == 2 and "nowhere" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    result = _invoke("score", runs["fgvis"], "--data-dir", tmp_path)
    assert result.exit_code == 2 and str(tmp_path) in result.output.replace("\n", "")
    result = _invoke("score", runs["fgvis"], "--tolerance", "-3")
    assert result.exit_code == 2 and "tolerance" in result.output
    result = _invoke("report", tmp_path)
    assert result.exit_code == 2 and "error" in result.output
    assert _invoke("score", runs["fgvis"], "--dataset", "eyepacs").exit_code == 2
    result = _invoke("compare", runs["fgvis"], "--out", tmp_path / "cmp", "--resamples", "0")
    assert result.exit_code == 2 and "n_resamples" in result.output and not (tmp_path / "cmp").exists()


def _copy_run(source, folder, **config):
    """A copy of run folder ``source`` with ``config`` entries added to its run.json."""
    shutil.copytree(source, folder)
    info = json.loads((folder / "run.json").read_text())
    RunFolder(folder, RunKind.LOCALIZE).write_info({**info["config"], **config})
    return folder


def test_score_refuses_maps_of_another_size(tiny_set, tmp_path):
    _, runs = tiny_set
    run = _copy_run(runs["fgvis"], tmp_path / "run", image_size=SIZE)
    maps = sorted((run / "images").glob("*/maps.npz"))[0]
    atomic_save_npz(maps, importance=np.ones((10, 10), np.float32))
    (run / "summary.json").unlink(missing_ok=True)
    result = _invoke("score", run)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "the importance map is 10×10, the run's images are 64×64" in result.output.replace("\n", "")
    assert not (run / "summary.json").exists()


def test_compare_names_the_images_it_left_out(tiny_set, tmp_path):
    _, runs = tiny_set
    partial = _copy_run(runs["gradcam"], tmp_path / "partial")
    (sorted((partial / "images").glob("*/record.json"))[-1]).unlink()  # an unfinished image
    result = _invoke("compare", runs["fgvis"], partial, "--out", tmp_path / "cmp")
    assert result.exit_code == 0, result.output
    comparison = json.loads((tmp_path / "cmp" / "comparison.json").read_text())
    assert comparison["left_out"] == {str(runs["fgvis"]): ["image002"]} and comparison["n_images"] == 1
    assert "left out 1 image(s)" in result.output and "image002" in result.output


def test_a_run_folder_written_before_run_records_had_a_kind_still_scores_and_reports(tiny_set, tmp_path):
    _, runs = tiny_set
    old = tmp_path / "old"
    shutil.copytree(runs["fgvis"], old)
    info = json.loads((old / "run.json").read_text())
    # version 0: {"config", "environment"}, no kind or format version
    (old / "run.json").write_text(json.dumps({"config": info["config"], "environment": info["environment"]}))
    assert _invoke("score", old).exit_code == 0
    new_summary = json.loads((old / "summary.json").read_text())
    assert _invoke("score", runs["fgvis"]).exit_code == 0
    assert new_summary == {**json.loads((runs["fgvis"] / "summary.json").read_text()), "run": str(old.resolve())}
    assert _invoke("report", old).exit_code == 0 and (old / "report.html").is_file()
