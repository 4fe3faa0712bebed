"""``retina-fgvis diagnose``: the defense diagnostic of a fundus classifier on DiaretDB1 images.

Before optimising: does the reference alone already score above the stop value, is the margin too
large for lambda; during the first steps: how much of the true gradient the defense lets through.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from retina_fgvis.cli._app import BAD_INPUT, app, console, fail


class Dataset(str, Enum):
    diaretdb1 = "diaretdb1"
    synthetic = "synthetic"


class Split(str, Enum):
    test = "test"
    train = "train"
    all = "all"


SUMMARY_CSV = "diagnosis.csv"
CALLS_CSV = "diagnosis_calls.csv"


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
    dataset: Dataset = typer.Option(Dataset.diaretdb1, "--dataset", help="diaretdb1 | synthetic (read only)."),
    split: Split = typer.Option(Split.test, "--split", help="test | train | all"),
    images: int = typer.Option(8, "--images", help="First N images of the split."),
    steps: str = typer.Option("0,20", "--steps", help="Step counts measured, comma-separated (0 = start)."),
    lam: float = typer.Option(1e-10, "--lam", help="FGVis λ."),
    lr: float = typer.Option(0.25, "--lr", help="FGVis learning rate."),
    stop_score: float = typer.Option(0.10, "--stop-score", help="Deletion stops once the class score is below this."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    out: Optional[Path] = typer.Option(None, "--out", help=f"Folder for {SUMMARY_CSV} and {CALLS_CSV}."),
) -> None:
    """Per image: class score, reference score, margin; per step: share of units inside their bounds and
    the defended-vs-undefended gradient cosine and norm ratio."""
    from retina_fgvis._io import atomic_write_csv, locked_folder
    from retina_fgvis.checks import check_int
    from retina_fgvis.datasets.diaretdb1 import open_diaretdb1
    from retina_fgvis.fgvis import ScoreBelow
    from retina_fgvis.fgvis.diagnose import diagnose_defense
    from retina_fgvis.models.checkpoint import load_classifier
    from retina_fgvis.runtime import resolve_device

    try:
        measured = parse_steps(steps)
        check_int("--images", images, minimum=1)
        stop = ScoreBelow(stop_score)
        if out is not None and out.exists() and not out.is_dir():
            raise ValueError(f"--out: {out} exists and is not a folder")
        classifier = load_classifier(checkpoint, resolve_device(device))
        root = data_dir / "diaretdb1" if dataset is Dataset.synthetic else data_dir
        database = open_diaretdb1(root)
        ids = database.image_ids(split.value)[:images]
        pictures = [database.load(image_id, size=classifier.image_size,
                                  graham=bool(classifier.meta.get("graham", False))).image for image_id in ids]
        diagnosis = diagnose_defense(
            classifier.model, classifier.prepare(pictures), int(classifier.meta["positive_class"]),
            lr=lr, lam=lam, steps=measured, stop=stop, normalization=classifier.normalization)
    except BAD_INPUT as error:
        fail(error)
    summary = diagnosis.summary(ids)
    positive = int(classifier.meta["positive_class"])
    names = list(classifier.meta.get("class_names") or [])
    console.print(_table(summary, names[positive] if positive < len(names) else f"class {positive}"))
    console.print(f"{len(diagnosis.call_names)} defended nonlinearity calls; inside = mean share of units inside "
                  "their bounds, cos / ratio = defended vs undefended gradient of the loss w.r.t. the mask.",
                  soft_wrap=True)
    for note in diagnosis.findings(ids):
        console.print(f"[yellow]warning:[/yellow] {note}", soft_wrap=True, highlight=False)
    if out is not None:
        try:
            with locked_folder(out, name="--out"):
                atomic_write_csv(out / SUMMARY_CSV, summary)
                atomic_write_csv(out / CALLS_CSV, diagnosis.to_frame(ids))
        except BAD_INPUT as error:
            fail(error)
        console.print(f"tables: {out / SUMMARY_CSV}, {out / CALLS_CSV}", soft_wrap=True)
