"""``retina-fgvis demo``: the main job end to end on the built-in semi-synthetic set.

Builds the set, trains a small classifier, localizes the lesions with FGVis and with Grad-CAM,
scores and compares both, and writes the HTML report; sized to finish within about ten minutes on
two CPU cores. :func:`run_demo` is the same pipeline for a notebook.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from retina_fgvis.cli._app import app
from retina_fgvis.cli.localize import console, fail
from retina_fgvis.localize import LocalizeConfig, localize

#: Sizes of the demo: semi-synthetic set, classifier and the two localization runs.
DEMO_DATA = {"n_train": 300, "n_test": 16, "size": 128, "seed": 0}
DEMO_TRAINING = {"epochs": 8, "width": 8, "batch_size": 16, "lr": 3e-3}


@dataclass
class DemoResult:
    """Where the demo wrote everything, its comparison and how long it took."""

    out: Path
    checkpoint: Path
    runs: dict[str, Path]
    comparison: dict[str, Any]
    report: Path
    seconds: float


def run_demo(out: str | Path = "demo_out", device: str = "auto", progress: bool = True) -> DemoResult:
    """Synthetic set -> trained classifier -> FGVis and Grad-CAM runs -> comparison and report.

    Layout: ``out/data`` (the set), ``out/model`` (training run, ``best.pt``), ``out/fgvis`` and
    ``out/gradcam`` (run folders, scored), ``out/comparison.json`` and ``out/fgvis/report.html``.
    Every step resumes: a rerun into the same folder reuses what is finished.
    """
    from evaluation.compare import compare_runs, comparison_table
    from evaluation.localization import score_run, summary_table
    from evaluation.report import write_report
    from training import TrainConfig, train

    started = time.perf_counter()
    out = Path(out)
    data = out / "data"
    # Training builds the set into ``data``; a rerun resumes the training run where it stopped.
    checkpoint = train(TrainConfig(
        dataset="synthetic", data_dir=data, out=out / "model", image_size=DEMO_DATA["size"],
        n_train=DEMO_DATA["n_train"], n_test=DEMO_DATA["n_test"], seed=DEMO_DATA["seed"], device=device,
        resume=(out / "model" / "last.pt").is_file(), progress=progress, **DEMO_TRAINING)).best_checkpoint
    runs = {}
    for method in ("fgvis", "gradcam"):
        runs[method] = localize(LocalizeConfig(data_dir=data, checkpoint=checkpoint, out=out / method,
                                               dataset="synthetic", method=method, device=device, progress=progress))
        summary = score_run(runs[method], progress=progress)
        console.print(summary_table(summary))
    comparison = compare_runs([runs["fgvis"], runs["gradcam"]], out, progress=progress)
    console.print(comparison_table(comparison))
    report = write_report(runs["fgvis"], comparison=comparison)
    return DemoResult(out=out, checkpoint=checkpoint, runs=runs, comparison=comparison, report=report,
                      seconds=time.perf_counter() - started)


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for the data, model, runs and report."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Build the semi-synthetic set, train, localize with FGVis and Grad-CAM, compare, write the report."""
    try:
        result = run_demo(out, device=device, progress=progress)
    except ValueError as error:
        fail(error)
    console.print(f"comparison: {result.out / 'comparison.json'}", soft_wrap=True)
    console.print(f"report: {result.report}  ({result.seconds / 60:.1f} min)", soft_wrap=True)
