"""``retina-fgvis evaluate score|compare|report``: thin wrappers over ``evaluation``."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from retina_fgvis.evaluation.compare import compare_runs, comparison_table, interval_table, overlap_lines
from retina_fgvis.evaluation.localization import diaretdb1_root, score_run, summary_table
from retina_fgvis.evaluation.report import write_report
from retina_fgvis._io import locked_folder
from retina_fgvis.cli._app import BAD_INPUT, app, console, default, fail
from retina_fgvis.cli.localize import Dataset
from retina_fgvis.localize import LocalizeConfig

evaluate_app = typer.Typer(
    help="Score localization runs against the experts' lesion markings, compare methods, write the HTML report.",
    no_args_is_help=True,
)
app.add_typer(evaluate_app, name="evaluate")

_DATA_DIR_HELP = ("DiaretDB1 folder (v1.1 or v2.1 layout; for --dataset synthetic the folder written by "
                  "`retina-fgvis synth`). Default: the data_dir recorded in the run.")


def _ground_truth(dataset: Dataset, data_dir: Optional[Path]) -> Optional[Path]:
    """What ``score_run``/``compare_runs`` take as ``dataset``: ``None`` = the run's recorded data dir."""
    return None if data_dir is None else diaretdb1_root(data_dir, dataset.value)



@evaluate_app.command("score")
def score(
    run: Path = typer.Argument(..., help="Run folder written by `retina-fgvis localize`."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    dataset: Dataset = typer.Option(Dataset(default(LocalizeConfig, "dataset")), "--dataset", help="Layout of --data-dir."),
    tolerance: int = typer.Option(default(score_run, "tolerance"), "--tolerance", help="A lesion counts as hit within this many pixels."),
    seed: int = typer.Option(default(score_run, "seed"), "--seed", help="Seed of the chance control's rotation angles."),
) -> None:
    """Score a run: RUN/per_image.csv and RUN/summary.json, and print the table."""
    try:
        with locked_folder(run, name="run"):
            summary = score_run(run, _ground_truth(dataset, data_dir), tolerance=tolerance, seed=seed, progress=True)
    except BAD_INPUT as error:
        fail(error)
    console.print(summary_table(summary))
    if summary["n_unfinished"]:
        console.print(f"[yellow]note:[/yellow] {summary['n_unfinished']} image(s) of the run are not finished yet "
                       "and were not scored")
    console.print(f"wrote {run / 'per_image.csv'} and {run / 'summary.json'}", highlight=False)


@evaluate_app.command("compare")
def compare(
    runs: List[Path] = typer.Argument(..., help="Run folders; the first sets the matched area (normally FGVis)."),
    out: Path = typer.Option(..., "--out", help="Folder for comparison.json and comparison.csv."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    dataset: Dataset = typer.Option(Dataset(default(LocalizeConfig, "dataset")), "--dataset", help="Layout of --data-dir."),
    tolerance: int = typer.Option(default(compare_runs, "tolerance"), "--tolerance", help="A lesion counts as hit within this many pixels."),
    seed: int = typer.Option(default(compare_runs, "seed"), "--seed", help="Seed of the chance control's rotation angles and of the bootstrap."),
    resamples: int = typer.Option(default(compare_runs, "n_resamples"), "--resamples", help="Bootstrap resamples of the images (95 % intervals)."),
) -> None:
    """Compare runs side by side: own threshold, matched area, chance, FROC and ROC scores with bootstrap
    intervals; writes OUT/comparison.json, comparison.csv, froc.csv, froc_scores.csv."""
    try:
        with locked_folder(out):
            comparison = compare_runs(runs, out, _ground_truth(dataset, data_dir), tolerance=tolerance, seed=seed,
                                      n_resamples=resamples, progress=True)
    except BAD_INPUT as error:
        fail(error)
    console.print(comparison_table(comparison))
    console.print(interval_table(comparison))
    for line in overlap_lines(comparison):
        console.print(line, highlight=False)
    for run, image_ids in comparison.get("left_out", {}).items():
        console.print(f"[yellow]note:[/yellow] left out {len(image_ids)} image(s) of {run} that not every run has "
                      f"finished: {', '.join(image_ids)}", highlight=False, soft_wrap=True)
    console.print(f"wrote {out / 'comparison.json'}, comparison.csv, froc.csv and froc_scores.csv", highlight=False)


@evaluate_app.command("report")
def report(
    run: Path = typer.Argument(..., help="A scored run folder (after `retina-fgvis evaluate score`)."),
    comparison: Optional[Path] = typer.Option(None, "--comparison", help="comparison.json (or its folder) to include."),
    link_images: bool = typer.Option(False, "--link-images",
                                     help="Link the run's PNGs by relative path instead of embedding them."),
) -> None:
    """Write RUN/report.html: one static page for clinicians (no server needed)."""
    try:
        with locked_folder(run, name="run"):
            path = write_report(run, comparison, embed=not link_images)
    except KeyError as error:
        fail(ValueError(f"run: {run / 'summary.json'} lacks {error}; score the run again with "
                        f"`retina-fgvis evaluate score {run}`"))
    except BAD_INPUT as error:
        fail(error)
    console.print(f"wrote {path}", highlight=False)
