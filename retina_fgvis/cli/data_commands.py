"""``retina-fgvis synth`` and ``retina-fgvis prepare eyepacs``: thin wrappers over the dataset functions."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from retina_fgvis._io import is_housekeeping, locked_folder
from retina_fgvis.cli._app import BAD_INPUT, app, fail

prepare_app = typer.Typer(help="Preprocess a dataset once (FOV crop, square, resize, optional Graham).", no_args_is_help=True)
app.add_typer(prepare_app, name="prepare")


def create_synthetic_set(out: str | Path, *, n_train: int, n_test: int, size: int, seed: int,
                         progress: bool = True):
    """Write the semi-synthetic set into ``out``, or reuse the same set already there.

    ``out`` must be new, empty, or hold a finished set (``synthetic.json``) of the same settings, which
    is reused as it is (nothing rewritten). Anything else is refused before a byte is written.

    Returns:
        (:class:`~retina_fgvis.datasets.synthetic.SyntheticPaths`, whether the set was written now).
    """
    from retina_fgvis.datasets.synthetic import SyntheticPaths, generate_synthetic

    out = Path(out)
    wanted = {"n_train": n_train, "n_test": n_test, "size": size, "seed": seed}
    with locked_folder(out):
        marker = out / "synthetic.json"
        if marker.is_file():
            try:
                stored = json.loads(marker.read_text(encoding="utf-8"))["config"]
                differing = [f"{key} {stored.get(key)!r} vs {value!r}" for key, value in wanted.items()
                             if stored.get(key) != value]
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                raise ValueError(f"out: {marker} is not a synthetic set record; choose another folder") from None
            if differing:
                raise ValueError(f"out: {out} holds another synthetic set ({', '.join(differing)}); "
                                 f"choose another folder or delete it")
            return SyntheticPaths.of(out), False
        if any(not is_housekeeping(entry) for entry in out.iterdir()):
            raise ValueError(f"out: {out} is not empty and holds no finished synthetic set (no synthetic.json); "
                             f"choose an empty or new folder (an interrupted synth: delete the folder and rerun)")
        return generate_synthetic(out, n_train=n_train, n_test=n_test, size=size, seed=seed, progress=progress), True


@app.command("synth")
def synth(
    out: Path = typer.Argument(..., help="Output folder (created)."),
    n_train: int = typer.Option(400, "--n-train", help="Training images (EyePACS layout, both eyes per patient)."),
    n_test: int = typer.Option(40, "--n-test", help="Test images (both DiaretDB1 layouts)."),
    size: int = typer.Option(256, "--size", help="Fundus disc diameter in pixels."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same files."),
) -> None:
    """Write the built-in semi-synthetic fundus set (see retina_fgvis.datasets.synthetic.generate_synthetic).

    A folder holding the same set (same settings) is reused as it is; any other non-empty folder is refused.
    """
    try:
        paths, written = create_synthetic_set(out, n_train=n_train, n_test=n_test, size=size, seed=seed)
    except BAD_INPUT as error:
        fail(error)
    console = Console(soft_wrap=True, highlight=False)
    if not written:
        console.print(f"{out} already holds this set (same settings): reused, nothing rewritten")
    console.print(f"EyePACS layout:        {paths.eyepacs}")
    console.print(f"DiaretDB1 v2.1 layout: {paths.diaretdb1}")
    console.print(f"DiaretDB1 v1.1 layout: {paths.diaretdb1_v1}")
    console.print(f"per-image grades:      {paths.images_csv}")


@prepare_app.command("eyepacs")
def prepare_eyepacs_command(
    src: Path = typer.Argument(..., help="EyePACS folder (images in it or in train/, test/; label CSVs)."),
    dst: Path = typer.Argument(..., help="Output folder, same layout, PNG images."),
    size: int = typer.Option(512, "--size", help="Output side in pixels."),
    graham: bool = typer.Option(False, "--graham/--no-graham", help="Graham local-average-colour normalisation."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Worker processes (default: one per CPU; 1: no pool)."),
) -> None:
    """Crop, square and resize every EyePACS image once; rerun to finish an interrupted run."""
    from retina_fgvis.datasets.prepare import prepare_eyepacs

    try:
        summary = prepare_eyepacs(src, dst, size=size, graham=graham, workers=workers, progress=True)
    except BAD_INPUT as error:
        fail(error)
    colour = "red" if summary.failed else "green"
    Console(soft_wrap=True).print(f"[{colour}]{summary}[/{colour}]", highlight=False)
