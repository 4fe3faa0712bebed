"""``retina-fgvis synth`` and ``retina-fgvis prepare eyepacs``: thin wrappers over the dataset functions."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from retina_fgvis.cli._app import BAD_INPUT, app, console, default, fail
from retina_fgvis.datasets.prepare import prepare_eyepacs
from retina_fgvis.datasets.synthetic import create_synthetic_set, generate_synthetic

prepare_app = typer.Typer(help="Preprocess a dataset once (FOV crop, square, resize, optional Graham).", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")


@app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Output folder (created)."),
    n_train: int = typer.Option(default(generate_synthetic, "n_train"), "--n-train", help="Training images (EyePACS layout, both eyes per patient)."),
    n_test: int = typer.Option(default(generate_synthetic, "n_test"), "--n-test", help="Test images (both DiaretDB1 layouts)."),
    size: int = typer.Option(default(generate_synthetic, "size"), "--size", help="Fundus disc diameter in pixels."),
    seed: int = typer.Option(default(generate_synthetic, "seed"), "--seed", help="Random seed; the same seed gives the same files."),
    label_rule: Optional[str] = typer.Option(None, "--label-rule", help="Known-evidence control, TYPE:k: RDR iff at "
                                             "least k lesions of TYPE (e.g. red_small_dots:1), the other types drawn "
                                             "independently of the label; default: the DR grade decides."),
) -> None:
    """Write the built-in semi-synthetic fundus set (see retina_fgvis.datasets.synthetic.generate_synthetic).

    A folder holding the same set (same settings) is reused as it is; any other non-empty folder is refused.
    """
    try:
        paths, written = create_synthetic_set(out, n_train=n_train, n_test=n_test, size=size, seed=seed,
                                              label_rule=label_rule)
    except BAD_INPUT as error:
        fail(error)
    lines = ([f"{out} already holds this set (same settings): reused, nothing rewritten"] if not written else []) + [
        f"EyePACS layout:        {paths.eyepacs}", f"DiaretDB1 v2.1 layout: {paths.diaretdb1}",
        f"DiaretDB1 v1.1 layout: {paths.diaretdb1_v1}", f"per-image grades:      {paths.images_csv}"]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)


@prepare_app.command("eyepacs")
def prepare_eyepacs_command(
    src: Path = typer.Argument(..., help="EyePACS folder (images in it or in train/, test/; label CSVs)."),
    dst: Path = typer.Argument(..., help="Output folder, same layout, PNG images."),
    size: int = typer.Option(default(prepare_eyepacs, "size"), "--size", help="Output side in pixels."),
    graham: bool = typer.Option(default(prepare_eyepacs, "graham"), "--graham/--no-graham", help="Graham local-average-colour normalisation."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: one per CPU; 1: no pool)."),
) -> None:
    """Crop, square and resize every EyePACS image once; rerun to finish an interrupted run."""
    try:
        summary = prepare_eyepacs(src, dst, size=size, graham=graham, workers=workers, progress=True)
    except BAD_INPUT as error:
        fail(error)
    colour = "red" if summary.failed else "green"
    console.print(f"[{colour}]{summary}[/{colour}]", highlight=False, soft_wrap=True)
