"""`retina-fgvis demo`: the whole pipeline, tiny in the default run and full size (timed) with -m slow."""
from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from retina_fgvis.cli import app
from retina_fgvis.cli.demo import run_demo


def test_tiny_demo_writes_comparison_and_report(tmp_path):
    result = run_demo(tmp_path, device="cpu", progress=False, n_train=40, n_test=3, size=64, epochs=1, width=4,
                      max_iter=5)
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert list(comparison["lesion_sensitivity"]) == ["fgvis", "gradcam"] and comparison["n_images"] == 3
    assert result.report == tmp_path / "fgvis" / "report.html" and result.report.is_file()
    for method in ("fgvis", "gradcam"):
        assert json.loads((tmp_path / method / "summary.json").read_text())["method"] == method
    assert result.checkpoint.is_file()


@pytest.mark.slow
def test_full_demo_within_ten_minutes(tmp_path):
    started = time.perf_counter()
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--device", "cpu", "--no-progress"])
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    assert "report:" in result.output and (tmp_path / "fgvis" / "report.html").is_file()
    assert seconds <= 600, seconds
