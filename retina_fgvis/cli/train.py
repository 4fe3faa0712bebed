"""``retina-fgvis train``: train the referable-DR classifier (a thin wrapper over ``retina_fgvis.training.train``)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from retina_fgvis.cli._app import BAD_INPUT, app, choice, console, default, fail
from retina_fgvis.models.fundus_cnn import LAYOUTS
from retina_fgvis.training.config import CLASS_WEIGHTS, DATASET_DEFAULTS, DATASETS, TrainConfig

TrainingDataset = choice("TrainingDataset", DATASETS)
Layout = choice("Layout", LAYOUTS)
ClassWeights = choice("ClassWeights", CLASS_WEIGHTS)


def _per_dataset(field: str) -> str:
    """``default: eyepacs 60, synthetic 24`` for a field whose default depends on the dataset."""
    return "default: " + ", ".join(f"{name} {values[field]:g}" for name, values in DATASET_DEFAULTS.items())


@app.command("train")
def train_command(
    out: Path = typer.Option(..., "--out", help="Run folder (checkpoints, metrics.csv, split.csv, run.json)."),
    dataset: TrainingDataset = typer.Option(TrainingDataset(default(TrainConfig, "dataset")), "--dataset",
                                          help="eyepacs: a Kaggle EyePACS folder; synthetic: the built-in set."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset folder (synthetic: a set written by "
                                            "`retina-fgvis synth`); required unless --resume."),
    epochs: Optional[int] = typer.Option(None, help=f"Epochs ({_per_dataset('epochs')})."),
    image_size: Optional[int] = typer.Option(None, help=f"Input size in px ({_per_dataset('image_size')})."),
    batch_size: Optional[int] = typer.Option(None, help=f"Images per batch and process ({_per_dataset('batch_size')})."),
    lr: Optional[float] = typer.Option(None, help=f"Peak AdamW learning rate, cosine-annealed ({_per_dataset('lr')})."),
    width: Optional[int] = typer.Option(None, help=f"Channels of the first stage ({_per_dataset('width')})."),
    layout: Layout = typer.Option(Layout(default(TrainConfig, "layout")), "--layout",
                                        help="plain: one 3×3 stride-1 convolution per stage (FGVis's defended "
                                        "deletion reaches its stop most often; docs/defense.md); compact: the same "
                                        "with o_O's 5×5 stride-2 stem; o_O: Net A's 13 convolutions."),
    label_smoothing: float = typer.Option(default(TrainConfig, "label_smoothing"), "--label-smoothing", help="Cross-entropy label smoothing."),
    class_weights: ClassWeights = typer.Option(ClassWeights(default(TrainConfig, "class_weights")), "--class-weights",
                                               help="none: the cross-entropy weighs each image alike, so P(RDR) "
                                               "follows the training data; balanced: inverse class frequency "
                                               "(lifts borderline non-RDR scores; docs/defense.md)."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue OUT/last.pt at the next epoch."),
    seed: int = typer.Option(default(TrainConfig, "seed"), help="Seed for split, weights and augmentation."),
    workers: int = typer.Option(default(TrainConfig, "workers"), help="Data-loader worker processes."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to OUT/tensorboard."),
    augment: bool = typer.Option(default(TrainConfig, "augment"), "--augment/--no-augment",
                                 help="Random rotation, flips, zoom, brightness and contrast of the training images."),
    graham: bool = typer.Option(default(TrainConfig, "graham"), "--graham", help="Graham-normalise the images."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Train the fundus CNN (RDR vs non-RDR) with MONAI; works under torchrun for several GPUs."""
    from retina_fgvis.training import train

    config = TrainConfig(dataset=dataset.value, data_dir=data_dir, out=out, epochs=epochs, image_size=image_size,
                         batch_size=batch_size, lr=lr, width=width, layout=layout.value,
                         label_smoothing=label_smoothing, class_weights=class_weights.value, device=device,
                         resume=resume, seed=seed, workers=workers, tensorboard=tensorboard, augment=augment,
                         graham=graham, progress=progress)
    try:
        result = train(config)
    except BAD_INPUT as error:
        fail(error)
    if not result.is_main:
        return
    table = Table(title=f"retina-fgvis train: {result.run_dir}")
    table.add_column("metric")
    table.add_column(f"last (epoch {result.metrics['epoch']})", justify="right")
    table.add_column(f"best (epoch {result.best_metrics['epoch']})", justify="right")
    for key in ("train_loss", "val_auc", "val_sensitivity", "val_specificity", "operating_point"):
        table.add_row(key, f"{result.metrics[key]:.4f}", f"{result.best_metrics[key]:.4f}")
    console.print(table)
    console.print(f"best checkpoint: [bold]{result.best_checkpoint}[/bold]  (last: {result.last_checkpoint}; "
                  f"{result.epochs_run} epoch(s) in {result.seconds:.0f} s)", highlight=False, soft_wrap=True)
