"""benchmarks/gpu_bench.py in its --quick smoke mode: every variant writes one well-formed JSON line."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_bench.py"
KEYS = {"model", "size", "variant", "defense", "images", "steps", "status", "device", "torch"}
FIGURES = {"seconds", "images_per_s", "ratio_to_naive", "peak_memory_mib", "max_mask_diff_to_eager"}
VARIANTS = {"naive", "eager", "compiled", "compiled+cuda_graphs"}


def _run(tmp_path, *options):
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main([str(tmp_path), "--quick", "--device", "cpu", *options])
    return [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]


def _check(lines, compiled: bool):
    assert all(KEYS <= set(line) for line in lines)
    assert {line["model"] for line in lines if line["variant"].startswith("search")} == {"fundus_cnn"}
    per_model = [line for line in lines if not line["variant"].startswith("search")]
    assert {(line["model"], line["defense"], line["variant"]) for line in per_model} == {
        (model, defense, variant) for model in ("googlenet", "fundus_cnn") for defense in (True, False)
        for variant in VARIANTS}
    for line in per_model:
        measured = line["variant"] == "naive" or line["variant"] == "eager" or (
            compiled and line["variant"] == "compiled")
        assert (line["status"] == "ok") == measured, line
        if measured:
            assert FIGURES <= set(line) and line["images_per_s"] > 0 and line["seconds"] > 0
            assert line["max_mask_diff_to_eager"] >= 0
        if line["variant"] == "naive":
            assert line["ratio_to_naive"] == 1.0
        if line["variant"] == "eager":
            assert line["max_mask_diff_to_eager"] == 0.0
    searches = {line["variant"] for line in lines if line["variant"].startswith("search")}
    expected = {"search-sequential/eager", "search-batched/eager"}
    assert searches == (expected | {"search-sequential/compiled", "search-batched/compiled"} if compiled else expected)


def test_quick_mode_writes_a_json_line_per_variant(tmp_path):
    _check(_run(tmp_path, "--no-compile"), compiled=False)


@pytest.mark.slow
def test_quick_mode_with_the_compiled_variants(tmp_path):
    _check(_run(tmp_path, "--budget", "1e9"), compiled=True)


def test_variants_after_the_time_budget_are_written_as_skipped(tmp_path):
    lines = _run(tmp_path, "--no-compile", "--budget", "0")
    assert len(lines) == 2 * 2 * 4 + 2
    assert all(line["status"] == "skipped: time budget" or line["status"].startswith("skipped: --no-compile")
               or line["status"] == "skipped: needs CUDA" for line in lines)
    assert not any("images_per_s" in line for line in lines)
