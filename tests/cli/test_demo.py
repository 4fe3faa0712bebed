"""`retina-fgvis demo`: the whole pipeline, tiny in the default run and full size with -m slow."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from retina_fgvis.cli import app
from retina_fgvis.pipelines import run_control, run_demo


def test_tiny_demo_writes_comparison_and_report(tmp_path):
    result = run_demo(tmp_path, device="cpu", progress=False, n_train=40, n_test=3, size=64, epochs=1, width=4,
                      max_iter=5)
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert list(comparison["lesion_sensitivity"]) == ["fgvis", "gradcam"] and comparison["n_images"] == 3
    assert result.report == tmp_path / "fgvis" / "report.html" and result.report.is_file()
    for method in ("fgvis", "gradcam"):
        assert json.loads((tmp_path / method / "summary.json").read_text())["method"] == method
    assert result.checkpoint.is_file()


def test_tiny_control_records_the_rule_and_its_result(tmp_path):
    result = run_control(tmp_path, "hemorrhages:1", device="cpu", progress=False, n_train=40, n_test=3, size=64,
                         epochs=1, width=4, max_iter=5)
    control = json.loads((tmp_path / "control.json").read_text())
    assert control == result.control and control["rule"] == "hemorrhages:1" and control["n_images"] == 3
    assert {row["role"] for row in control["lesion_types"].values()} == {"deciding", "independent"}
    assert json.loads((tmp_path / "data" / "synthetic.json").read_text())["config"]["label_rule"]["rule"] == "hemorrhages:1"


def test_demo_refuses_a_bad_control_rule_before_running(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--control", "--control-rule", "x:1"])
    assert result.exit_code == 2 and "label_rule" in result.output and not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_full_demo_explains_with_the_paper_protocol(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--device", "cpu", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and (tmp_path / "fgvis" / "report.html").is_file()
    success = json.loads((tmp_path / "fgvis" / "summary.json").read_text())["success"]
    assert success["n_success"] >= 0.9 * (success["n_success"] + success["n_failed"]), success
