"""``retina-fgvis demo``: the main job end to end on the built-in semi-synthetic set.

Builds the set, trains a small classifier, localizes the lesions with FGVis and with Grad-CAM,
scores and compares both, and writes the HTML report (measured: 16.8 min on two shared CPU cores,
docs/localize.md). :func:`run_demo` is the same pipeline for a notebook.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from retina_fgvis._io import locked_folder
from retina_fgvis.cli._app import BAD_INPUT, app, console, fail
from retina_fgvis.cli.data_commands import create_synthetic_set
from retina_fgvis.localize import LocalizeConfig, localize

@dataclass
class DemoResult:
    """Where the demo wrote everything, its comparison and how long it took."""

    out: Path
    checkpoint: Path
    runs: dict[str, Path]
    comparison: dict[str, Any]
    report: Path
    seconds: float


def run_demo(out: str | Path = "demo_out", device: str = "auto", progress: bool = True, *,
             n_train: int = 600, n_test: int = 24, size: int = 128, epochs: int | None = None,
             width: int | None = None, max_iter: int = 500, seed: int = 0) -> DemoResult:
    """Synthetic set -> trained classifier -> FGVis and Grad-CAM runs -> comparison and report.

    Args:
        out: folder for everything: ``data/`` (the set), ``model/`` (training run, ``best.pt``), ``fgvis/``
            and ``gradcam/`` (scored run folders), ``comparison.json`` and ``fgvis/report.html``.
        device: torch device for training and localization (``"auto"``: CUDA if present).
        n_train, n_test, size: semi-synthetic set (training images, DiaretDB1-layout test images, pixels).
        epochs, width: classifier training epochs and :class:`FundusCNN` width (``None``: ``train``'s defaults).
        max_iter: FGVis step limit (everything else is the paper's medical protocol, λ = 1e-10 included).
        seed: seeds the set, the training and FGVis.

    Every step resumes: a rerun into the same folder continues the training and the runs where they stopped.
    """
    from retina_fgvis.evaluation.compare import compare_runs, comparison_table
    from retina_fgvis.evaluation.localization import score_run, summary_table
    from retina_fgvis.evaluation.report import write_report
    from retina_fgvis.training import TrainConfig, train

    started = time.perf_counter()
    out = Path(out)
    data = out / "data"
    with locked_folder(out):
        # The demo is the one pipeline that creates a set itself (the same as `retina-fgvis synth`) and says so.
        _, written = create_synthetic_set(data, n_train=n_train, n_test=n_test, size=size, seed=seed,
                                          progress=progress)
        console.print(f"demo: {'wrote' if written else 'reusing'} the semi-synthetic set in {data}", soft_wrap=True)
        # A rerun resumes the training run.
        checkpoint = train(TrainConfig(
            dataset="synthetic", data_dir=data, out=out / "model", image_size=size, epochs=epochs, width=width,
            seed=seed, device=device, resume=(out / "model" / "last.pt").is_file(), progress=progress)).best_checkpoint
        runs = {}
        for method in ("fgvis", "gradcam"):
            runs[method] = localize(LocalizeConfig(
                data_dir=data, checkpoint=checkpoint, out=out / method, dataset="synthetic", method=method,
                device=device, max_iter=max_iter, seed=seed, progress=progress))
            console.print(summary_table(score_run(runs[method], progress=progress)))
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
    except BAD_INPUT as error:
        fail(error)
    console.print(f"comparison: {result.out / 'comparison.json'}", soft_wrap=True)
    console.print(f"report: {result.report}  ({result.seconds / 60:.1f} min)", soft_wrap=True)
