"""``retina-fgvis demo``: the main job end to end on the built-in semi-synthetic set
(:func:`retina_fgvis.pipelines.run_demo`, with ``--control`` also :func:`~retina_fgvis.pipelines.run_control`)."""
from __future__ import annotations

from pathlib import Path

import typer

from retina_fgvis.cli._app import BAD_INPUT, app, console, fail
from retina_fgvis.pipelines import CONTROL_RULE, run_demo


@app.command("demo")
def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", help="Folder for the data, model, runs and report."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, ..."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
    control: bool = typer.Option(False, "--control", help="Also run the known-evidence control (OUT/control): a set "
                                 "whose RDR label one lesion type decides, FGVis's sensitivity on it vs the others "
                                 "vs chance."),
    control_rule: str = typer.Option(CONTROL_RULE, "--control-rule", help="The control's label rule, TYPE:k (RDR iff "
                                     "at least k lesions of TYPE)."),
) -> None:
    """Build the semi-synthetic set, train, localize with FGVis and Grad-CAM, compare, write the report."""
    try:
        result = run_demo(out, device=device, progress=progress, control=control_rule if control else None)
    except BAD_INPUT as error:
        fail(error)
    if result.control is not None:
        console.print(f"control: {result.control.out / 'control.json'}", soft_wrap=True)
    console.print(f"comparison: {result.out / 'comparison.json'}", soft_wrap=True)
    console.print(f"report: {result.report}  ({result.seconds / 60:.1f} min)", soft_wrap=True)
