"""``retina-fgvis localize``: lesion maps for a dataset, then (once every shard is done) scores and a report."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from retina_fgvis.cli._app import BAD_INPUT, app, choice, console, default, fail
from retina_fgvis.localize import DATASETS, METHODS, SPLITS, LocalizeConfig, localize, run_complete
from retina_fgvis.pipelines import score_and_report

Dataset = choice("Dataset", DATASETS)
Split = choice("Split", SPLITS)
Method = choice("Method", METHODS)


def _default(field: str):
    return default(LocalizeConfig, field)


@app.command("localize")
def localize_command(
    data_dir: Path = typer.Option(..., "--data-dir", help="DiaretDB1 folder (v1.1 or v2.1); for synthetic: a set written by `retina-fgvis synth`."),
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Classifier checkpoint from `retina-fgvis train`."),
    out: Path = typer.Option(..., "--out", help="Run folder (resumable; shards share it)."),
    dataset: Dataset = typer.Option(Dataset(_default("dataset")), "--dataset", help="Layout of --data-dir."),
    split: Split = typer.Option(Split(_default("split")), "--split", help="Which images of the dataset."),
    method: Method = typer.Option(Method(_default("method")), "--method", help="FGVis or a baseline (docs/localize.md)."),
    gradcam_layer: Optional[str] = typer.Option(
        None, "--gradcam-layer", help="Grad-CAM(++) layer: a module name, or 'last' for the last stage. Default: the "
                                      "deepest layer whose map side is >= 1/16 of the input side."),
    smoothgrad_samples: int = typer.Option(_default("smoothgrad_samples"), "--smoothgrad-samples", help="SmoothGrad noisy copies per image."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, ..."),
    batch_size: int = typer.Option(_default("batch_size"), "--batch-size", help="Images per engine call."),
    compile_step: bool = typer.Option(_default("compile"), "--compile/--no-compile",
                                      help="FGVis: torch.compile the optimisation step (CUDA graphs on a GPU)."),
    lam: float = typer.Option(_default("lam"), "--lam", help="FGVis λ (fixed)."),
    lr: float = typer.Option(_default("lr"), "--lr", help="FGVis learning rate."),
    max_iter: int = typer.Option(_default("max_iter"), "--max-iter", help="FGVis step limit."),
    stop_score: float = typer.Option(_default("stop_score"), "--stop-score", help="FGVis stops once the RDR softmax is below this."),
    threshold: float = typer.Option(_default("threshold"), "--threshold", help="Binarize at this fraction of each map's maximum, in (0, 1]."),
    shard: Optional[str] = typer.Option(None, "--shard", help="i/n: this process takes every n-th batch of images, from batch i."),
    seed: int = typer.Option(_default("seed"), "--seed", help="FGVis mask initialisation seed; SmoothGrad's and the random map's seed."),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Localize lesions with FGVis (the paper's medical settings) or a baseline; score and report when complete."""
    config = LocalizeConfig(data_dir=data_dir, checkpoint=checkpoint, out=out, dataset=dataset.value,
                            split=split.value, method=method.value, device=device, batch_size=batch_size, compile=compile_step, lam=lam, lr=lr,
                            max_iter=max_iter, stop_score=stop_score, threshold=threshold, shard=shard,
                            gradcam_layer=gradcam_layer, smoothgrad_samples=smoothgrad_samples, seed=seed, progress=progress)
    try:
        run = localize(config)
        if not run_complete(run):
            console.print(f"shard finished; other shards still running. Score later: retina-fgvis evaluate score {run}",
                          soft_wrap=True)
            return
        _, report = score_and_report(run, progress=progress)
    except BAD_INPUT as error:
        fail(error)
    console.print(f"report: {report}", soft_wrap=True)
