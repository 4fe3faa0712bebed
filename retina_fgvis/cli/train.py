"""``retina-fgvis train``: train the referable-DR classifier (a thin wrapper over ``retina_fgvis.training.train``)."""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from retina_fgvis.cli._app import BAD_INPUT, app, console, fail


class DatasetChoice(str, Enum):
    eyepacs = "eyepacs"
    synthetic = "synthetic"


class LayoutChoice(str, Enum):
    plain = "plain"
    compact = "compact"
    o_O = "o_O"


@app.command("train")
def train_command(
    out: Path = typer.Option(..., "--out", help="Run folder (checkpoints, metrics.csv, split.csv, run.json)."),
    dataset: DatasetChoice = typer.Option(DatasetChoice.synthetic, "--dataset",
                                          help="eyepacs: a Kaggle EyePACS folder; synthetic: the built-in set."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Dataset folder (synthetic: a set written by "
                                            "`retina-fgvis synth`); required unless --resume."),
    epochs: Optional[int] = typer.Option(None, help="Epochs (default: eyepacs 60, synthetic 24)."),
    image_size: Optional[int] = typer.Option(None, help="Input size in px (default: eyepacs 512, synthetic 256)."),
    batch_size: Optional[int] = typer.Option(None, help="Images per batch and process (default: eyepacs 32, "
                                             "synthetic 16)."),
    lr: Optional[float] = typer.Option(None, help="Peak AdamW learning rate, cosine-annealed (default: eyepacs 1e-3, "
                                       "synthetic 3e-3)."),
    width: Optional[int] = typer.Option(None, help="Channels of the first stage (default: eyepacs 32, synthetic 16)."),
    layout: LayoutChoice = typer.Option(LayoutChoice.plain, "--layout",
                                        help="plain: one 3×3 stride-1 convolution per stage (FGVis's defended "
                                        "deletion reaches its stop most often; docs/defense.md); compact: the same "
                                        "with o_O's 5×5 stride-2 stem; o_O: Net A's 13 convolutions."),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", help="Cross-entropy label smoothing."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N."),
    resume: bool = typer.Option(False, "--resume", help="Continue OUT/last.pt at the next epoch."),
    seed: int = typer.Option(0, help="Seed for split, weights and augmentation."),
    workers: int = typer.Option(0, help="Data-loader worker processes."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to OUT/tensorboard."),
    graham: bool = typer.Option(False, "--graham", help="Graham-normalise the images."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show the progress bar."),
) -> None:
    """Train the fundus CNN (RDR vs non-RDR) with MONAI; works under torchrun for several GPUs."""
    from retina_fgvis.training import TrainConfig, train

    config = TrainConfig(dataset=dataset.value, data_dir=data_dir, out=out, epochs=epochs, image_size=image_size,
                         batch_size=batch_size, lr=lr, width=width, layout=layout.value,
                         label_smoothing=label_smoothing, device=device, resume=resume, seed=seed,
                         workers=workers, tensorboard=tensorboard, graham=graham, progress=progress)
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
