"""``retina-fgvis diagnose``: the defense diagnostic of a fundus classifier on DiaretDB1 images.

Before optimising: does the reference alone already score above the stop value, is the margin too
large for lambda; during the first steps: how much of the true gradient the defense lets through.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from retina_fgvis.cli._app import BAD_INPUT, app, console, default, fail
from retina_fgvis.cli.localize import Dataset, Split
from retina_fgvis.localize import LocalizeConfig
from retina_fgvis.pipelines import DIAGNOSIS_CALLS_CSV, DIAGNOSIS_CSV, diagnose_checkpoint


def parse_steps(text: str) -> tuple[int, ...]:
    """``"0,20"`` -> ``(0, 20)``; ``ValueError`` naming ``--steps``."""
    try:
        steps = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--steps: expected comma-separated integers >= 0 such as 0,20, got {text!r}") from None
    if min(steps) < 0:
        raise ValueError(f"--steps: expected integers >= 0, got {text!r}")
    return steps


def _table(summary, class_name: str) -> Table:
    """One row per image and step; the image's own columns on its first row."""
    table = Table(title=f"FGVis defense diagnostic (deletion of {class_name})")
    for name in ("image", f"P({class_name})", "reference", "margin", "step", "inside", "cos", "ratio"):
        table.add_column(name, justify="left" if name == "image" else "right")
    for image, rows in summary.groupby("image", sort=False):
        for k, row in enumerate(rows.itertuples()):
            # Red: the stop rule does not hold even on the reference alone.
            reference = f"[red]{row.reference_score:.3f}[/red]" if row.reference_blocks_stop else f"{row.reference_score:.3f}"
            own = [str(image), f"{row.score:.3f}", reference, f"{row.margin:.1f}"] if k == 0 else [""] * 4
            table.add_row(*own, str(row.step), f"{row.mean_inside:.3f}", f"{row.cosine:+.3f}",
                          f"{row.norm_ratio:.2g}")
    return table


@app.command("diagnose")
def diagnose_command(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Classifier checkpoint from `retina-fgvis train`."),
    data_dir: Path = typer.Option(..., "--data-dir", help="DiaretDB1 folder; for synthetic: the set's folder."),
    dataset: Dataset = typer.Option(Dataset(default(LocalizeConfig, "dataset")), "--dataset",
                                    help="Layout of --data-dir (read only)."),
    split: Split = typer.Option(Split(default(LocalizeConfig, "split")), "--split", help="Which images of the dataset."),
    images: int = typer.Option(default(diagnose_checkpoint, "images"), "--images", help="First N images of the split."),
    steps: str = typer.Option(",".join(map(str, default(diagnose_checkpoint, "steps"))), "--steps", help="Step counts measured, comma-separated (0 = start)."),
    lam: float = typer.Option(default(LocalizeConfig, "lam"), "--lam", help="FGVis λ."),
    lr: float = typer.Option(default(LocalizeConfig, "lr"), "--lr", help="FGVis learning rate."),
    stop_score: float = typer.Option(default(LocalizeConfig, "stop_score"), "--stop-score", help="Deletion stops once the class score is below this."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    out: Optional[Path] = typer.Option(None, "--out", help=f"Folder for {DIAGNOSIS_CSV} and {DIAGNOSIS_CALLS_CSV}."),
) -> None:
    """Per image: class score, reference score, margin; per step: share of units inside their bounds and
    the defended-vs-undefended gradient cosine and norm ratio."""
    try:
        result = diagnose_checkpoint(checkpoint, data_dir, dataset=dataset.value, split=split.value, images=images,
                                     steps=parse_steps(steps), lam=lam, lr=lr, stop_score=stop_score, device=device,
                                     out=out)
    except BAD_INPUT as error:
        fail(error)
    console.print(_table(result.summary, result.class_name))
    console.print(f"{result.n_calls} defended nonlinearity calls; inside = mean share of units inside "
                  "their bounds, cos / ratio = defended vs undefended gradient of the loss w.r.t. the mask.",
                  soft_wrap=True)
    for note in result.findings:
        console.print(f"[yellow]warning:[/yellow] {note}", soft_wrap=True, highlight=False)
    if out is not None:
        console.print(f"tables: {out / DIAGNOSIS_CSV}, {out / DIAGNOSIS_CALLS_CSV}", soft_wrap=True)
