"""Failure behaviour at the command line (docs/failure.md): concurrency, checks before writing, OS errors.

Every refusal is one red line and exit code 2, and leaves the folders it names byte-identical.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retina_fgvis.cli import app

runner = CliRunner()
CLI = str(Path(sys.executable).parent / "retina-fgvis")


def _localize(data_dir, checkpoint, out, *extra: str) -> list[str]:
    return ["localize", "--dataset", "synthetic", "--data-dir", str(data_dir), "--checkpoint", str(checkpoint),
            "--out", str(out), "--device", "cpu", "--no-progress", *extra]


def _refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
    for fragment in fragments:
        assert fragment in result.output, result.output


# ------------------------------------------------------------------------------------------ concurrency
def test_localize_is_refused_while_another_process_holds_the_folder(synthetic_data, trained_checkpoint, tmp_path,
                                                                    hold_folder, snapshot):
    out = tmp_path / "run"
    holder = hold_folder(out)
    before = snapshot(out)
    result = runner.invoke(app, _localize(synthetic_data.root, trained_checkpoint, out, "--method", "gradcam"))
    _refused(result, f"is in use by pid {holder.pid}")
    assert snapshot(out) == before


def test_two_concurrent_localize_processes_one_runs_the_other_is_refused(synthetic_data, trained_checkpoint,
                                                                         tmp_path):
    out = tmp_path / "run"
    # A stop value no explanation reaches keeps the first process at work for all its steps (about 10 s on
    # 2 cores), so the second, started once the first holds the folder, meets it still running.
    settings = ("--max-iter", "100", "--stop-score", "1e-12")
    args = _localize(synthetic_data.root, trained_checkpoint, out, *settings)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    while not (out / ".retina-fgvis.holder.json").is_file():  # the second starts once the first holds the folder
        assert first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = subprocess.run([CLI, *args], capture_output=True, text=True, env=env)
    first_out, first_err = first.communicate()
    assert first.returncode == 0, first_err
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"is in use by pid {first.pid}" in second.stderr and "retina-fgvis localize" in second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    single = tmp_path / "single"
    alone = runner.invoke(app, _localize(synthetic_data.root, trained_checkpoint, single, *settings))
    assert alone.exit_code == 0, alone.output

    def contents(folder: Path) -> dict[str, object]:
        files = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            name = str(path.relative_to(folder))
            if path.suffix == ".json":
                value = json.loads(path.read_text())
                for volatile in ("seconds", "run", "environment"):
                    value.pop(volatile, None)
                files[name] = value
            elif path.suffix != ".html":  # the report embeds timings
                files[name] = path.read_bytes()
        return files

    assert contents(out) == contents(single)


# ------------------------------------------------------------------------------------------ checks before writing
def test_localize_non_finite_lambda_is_refused_before_run_json(synthetic_data, trained_checkpoint, tmp_path):
    result = runner.invoke(app, _localize(synthetic_data.root, trained_checkpoint, tmp_path / "run", "--lam", "inf"))
    _refused(result, "lam: expected a finite number >= 0, got inf")
    assert not (tmp_path / "run").exists()


def test_the_data_folder_is_part_of_the_run_identity(synthetic_data, trained_checkpoint, tmp_path, snapshot):
    out = tmp_path / "run"
    first = runner.invoke(app, _localize(synthetic_data.root, trained_checkpoint, out, "--method", "gradcam"))
    assert first.exit_code == 0, first.output
    other = tmp_path / "other"
    shutil.copytree(synthetic_data.root / "diaretdb1", other / "diaretdb1")
    shutil.copy(synthetic_data.root / "synthetic.json", other)
    before = snapshot(out)
    result = runner.invoke(app, _localize(other, trained_checkpoint, out, "--method", "gradcam"))
    _refused(result, "holds another run's results (data_dir")
    assert snapshot(out) == before


def test_localize_reads_a_synthetic_set_and_never_creates_one(trained_checkpoint, tmp_path):
    (tmp_path / "data").mkdir()
    result = runner.invoke(app, _localize(tmp_path / "data", trained_checkpoint, tmp_path / "run"))
    _refused(result, "no semi-synthetic set here", "retina-fgvis synth")
    assert list((tmp_path / "data").iterdir()) == [] and not (tmp_path / "run").exists()


def test_synth_reuses_the_same_set_and_refuses_another(tmp_path, snapshot):
    out = tmp_path / "set"
    settings = ["--n-train", "4", "--n-test", "2", "--size", "64"]
    assert runner.invoke(app, ["synth", str(out), *settings]).exit_code == 0
    before = {str(p): p.stat().st_mtime_ns for p in out.rglob("*")}
    again = runner.invoke(app, ["synth", str(out), *settings])
    assert again.exit_code == 0 and "reused, nothing rewritten" in again.output
    assert {str(p): p.stat().st_mtime_ns for p in out.rglob("*")} == before
    content = snapshot(out)
    other = runner.invoke(app, ["synth", str(out), "--n-train", "2", "--n-test", "1", "--size", "64"])
    _refused(other, "synthetic.json holds another run's results (n_test 2 vs 1, n_train 4 vs 2)")
    assert snapshot(out) == content


def test_synth_refuses_a_foreign_folder_and_a_negative_seed(tmp_path, snapshot):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    _refused(runner.invoke(app, ["synth", str(tmp_path / "mine"), "--n-train", "2", "--n-test", "1"]),
             "is not empty and holds no synthetic.json")
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    _refused(runner.invoke(app, ["synth", str(tmp_path / "s"), "--seed", "-1"]), "seed: expected an integer >= 0")
    assert not (tmp_path / "s").exists()


# ------------------------------------------------------------------------------------------ OS errors
def test_out_that_is_a_regular_file(synthetic_data, trained_checkpoint, tmp_path):
    out = tmp_path / "file"
    out.write_text("not a folder")
    eyepacs = synthetic_data.root / "eyepacs"
    commands = {
        "localize": _localize(synthetic_data.root, trained_checkpoint, out, "--method", "gradcam"),
        "train": ["train", "--dataset", "synthetic", "--data-dir", str(synthetic_data.root), "--out", str(out),
                  "--device", "cpu", "--no-progress"],
        "synth": ["synth", str(out), "--n-train", "2", "--n-test", "1"],
        "prepare": ["prepare", "eyepacs", str(eyepacs), str(out), "--workers", "1"],
        "compare": ["evaluate", "compare", str(tmp_path / "a"), "--out", str(out)],
        "demo": ["demo", "--out", str(out), "--device", "cpu"],
        "explain": ["explain", str(_photo(tmp_path)), "--model", "efficientnet_lite0", "--image-size", "64",
                    "--device", "cpu", "--max-iter", "1", "--out", str(out)],
    }
    for name, args in commands.items():
        result = runner.invoke(app, args)
        _refused(result, f"{out} is a file, not a folder")
        assert out.read_text() == "not a folder", name


def _photo(folder: Path) -> Path:
    import skimage.data
    from PIL import Image

    Image.fromarray(skimage.data.chelsea()).save(folder / "chelsea.png")
    return folder / "chelsea.png"


def test_out_below_a_regular_file_names_the_path(synthetic_data, trained_checkpoint, tmp_path):
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, _localize(synthetic_data.root, trained_checkpoint, tmp_path / "file" / "run",
                                          "--method", "gradcam"))
    _refused(result, f"out: cannot write to {tmp_path / 'file' / 'run'} (Not a directory)")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out(synthetic_data, trained_checkpoint, tmp_path):
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        for args in (_localize(synthetic_data.root, trained_checkpoint, out, "--method", "gradcam"),
                     ["synth", str(out), "--n-train", "2", "--n-test", "1"]):
            _refused(runner.invoke(app, args), str(out), "Permission denied")
    finally:
        out.chmod(0o755)
    assert list(out.iterdir()) == []


def test_report_on_a_summary_missing_keys(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"config": {"method": "fgvis"}}))
    (run / "summary.json").write_text(json.dumps({"n_images": 2}))
    (run / "per_image.csv").write_text("image_id\nimage001\n")
    result = runner.invoke(app, ["evaluate", "report", str(run)])
    _refused(result, "summary.json lacks", "retina-fgvis evaluate score")
    assert sorted(p.name for p in run.iterdir()) == ["per_image.csv", "run.json", "summary.json"]


def test_garbage_checkpoint_is_one_line(synthetic_data, tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"PK\x03\x04 not really a zip" * 20)
    result = runner.invoke(app, _localize(synthetic_data.root, garbage, tmp_path / "run"))
    _refused(result, "garbage.pt: not a readable checkpoint file")
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(b"\x80\x04\x95 definitely not a checkpoint")
    _refused(runner.invoke(app, _localize(synthetic_data.root, pickled, tmp_path / "run")), "pickled.pt")
    assert not (tmp_path / "run").exists()
