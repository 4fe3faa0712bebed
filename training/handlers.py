"""Ignite/MONAI handlers of the training run: seeding, operating point, records and progress."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import ignite.distributed as idist
from ignite.engine import Engine, Events
from monai.data.utils import set_rnd
from monai.metrics import Cumulative
from rich.progress import Progress

from retina_fgvis._io import atomic_write_csv
from retina_fgvis.runtime import seed_everything

__all__ = ["BroadcastBuffers", "DivergenceGuard", "EpochRecorder", "EpochSeeder", "METRIC_COLUMNS", "OperatingPointHandler",
           "RichProgressHandler", "TrainingDivergedError", "youden_operating_point"]

METRIC_COLUMNS = ("epoch", "train_loss", "val_auc", "val_sensitivity", "val_specificity", "operating_point",
                  "lr", "seconds")


def youden_operating_point(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Threshold on P(positive) maximising Youden's J = sensitivity + specificity − 1.

    An image is called positive when ``prob >= threshold``. The threshold is placed midway
    between the chosen score and the next lower one, so it does not sit on a training score.
    Returns (threshold, sensitivity, specificity); both classes must be present.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    pos, neg = np.sort(probs[labels]), np.sort(probs[~labels])
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("labels: the operating point needs both classes")
    candidates = np.unique(probs)
    sensitivity = 1.0 - np.searchsorted(pos, candidates, side="left") / len(pos)
    specificity = np.searchsorted(neg, candidates, side="left") / len(neg)
    best = int(np.argmax(sensitivity + specificity))
    threshold = candidates[0] if best == 0 else 0.5 * (candidates[best] + candidates[best - 1])
    return float(threshold), float(sensitivity[best]), float(specificity[best])


class EpochSeeder:
    """Reseed weights-side RNGs and the augmentation transforms at every epoch start.

    The seed depends only on (seed, epoch, rank), so a run resumed at epoch k sees the same
    augmentation and dropout as an uninterrupted one.
    """

    def __init__(self, seed: int, rank: int, dataset: Any):
        self.seed, self.rank, self.dataset = seed, rank, dataset

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        seed = int(np.random.SeedSequence([self.seed, engine.state.epoch, self.rank]).generate_state(1)[0])
        seed_everything(seed)
        set_rnd(self.dataset, seed)


class TrainingDivergedError(ValueError):
    """The training loss or the weights became NaN or ±inf."""


class DivergenceGuard:
    """Trainer handler, attached before validation: stops the run when an epoch's loss or the weights after it
    are not finite, before anything of that epoch is validated or saved (the last good checkpoints stay).

    The verdict is reduced over all processes, so every torchrun rank stops at the same epoch.
    """

    def __init__(self, network: torch.nn.Module, out: Path):
        self.network, self.out = network, out
        self._finite = True

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        self._finite = True

    def iteration_completed(self, engine: Engine) -> None:
        self._finite = self._finite and bool(torch.isfinite(engine.state.output["loss"].detach()).all())

    def epoch_completed(self, engine: Engine) -> None:
        from retina_fgvis.models.checkpoint import non_finite_weight

        weight = non_finite_weight(self.network.state_dict())
        healthy = idist.all_reduce(torch.tensor(float(self._finite and weight is None)), op="MIN")
        if float(healthy) < 1.0:
            epoch, lr = engine.state.epoch, float(engine.optimizer.param_groups[0]["lr"])
            kept = f"{self.out}/last.pt keeps epoch {epoch - 1}" if epoch > 1 else "no checkpoint was written"
            what = f"weight {weight}" if weight is not None else "the training loss"
            raise TrainingDivergedError(
                f"train: the run diverged in epoch {epoch}: {what} became NaN or inf (learning rate {lr:g}); "
                f"nothing of this epoch was saved, {kept}; train again with a lower --lr")


class BroadcastBuffers:
    """Trainer handler, attached before validation: copies rank 0's buffers (batch-norm running statistics)
    to every process at the end of each epoch.

    DDP keeps the parameters equal on all ranks, but each rank updates its batch-norm statistics on its
    own last batch. With rank 0's buffers everywhere, every rank holds the model rank 0 saves, so the
    validation metrics and the operating point, computed over the whole validation set across ranks,
    are those of the saved checkpoint. A world of one is left alone.
    """

    def __init__(self, network: torch.nn.Module):
        self.network = network

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if dist.is_initialized() and dist.get_world_size() > 1:
            for buffer in self.network.buffers():
                dist.broadcast(buffer, src=0)  # in place


class OperatingPointHandler:
    """Evaluator handler: gathers P(RDR) and labels over all processes, then stores the Youden
    operating point and the sensitivity/specificity there as ``val_operating_point``,
    ``val_sensitivity`` and ``val_specificity`` in ``engine.state.metrics``.

    Expects decollated outputs with ``pred`` (softmax, C) and ``label`` (one-hot, C).
    """

    def __init__(self, positive_class: int = 1):
        self.positive_class = positive_class
        self.buffer = Cumulative()

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, lambda _: self.buffer.reset())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.compute)

    def collect(self, engine: Engine) -> None:
        probs = torch.stack([item["pred"][self.positive_class] for item in engine.state.output]).float()
        labels = torch.stack([item["label"][self.positive_class] for item in engine.state.output]).float()
        self.buffer.extend(probs.detach(), labels.detach())

    def compute(self, engine: Engine) -> None:
        probs, labels = (t.cpu().numpy() for t in self.buffer.get_buffer())
        threshold, sensitivity, specificity = youden_operating_point(probs, labels > 0.5)
        engine.state.metrics.update(val_operating_point=threshold, val_sensitivity=sensitivity,
                                    val_specificity=specificity)


class EpochRecorder:
    """Trainer handler: after validation, appends the epoch's row to ``metrics.csv`` and calls
    ``save(epoch, row, is_best)`` to write the checkpoints (main process only; every process
    keeps the history so all return the same result).

    The CSV is rewritten atomically with the whole history, so it is never half-written; rows
    after the last checkpoint (from a run killed between the two writes) are dropped on resume.
    """

    def __init__(self, evaluator: Engine, metrics_path: Path, save: Callable[[int, dict, bool], None], *,
                 is_main: bool, history: list[dict] | None = None, best_auc: float = -1.0,
                 best_epoch: int = 0):
        self.evaluator, self.metrics_path, self.save, self.is_main = evaluator, metrics_path, save, is_main
        self.history = list(history or [])
        self.best_auc, self.best_epoch = best_auc, best_epoch
        self._loss_sum = 0.0
        self._steps = 0
        self._started = 0.0
        self._lr = 0.0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        self._loss_sum, self._steps, self._started = 0.0, 0, time.perf_counter()
        self._lr = float(engine.optimizer.param_groups[0]["lr"])

    def iteration_completed(self, engine: Engine) -> None:
        self._loss_sum += engine.state.output["loss"].detach().item()
        self._steps += 1

    def epoch_completed(self, engine: Engine) -> None:
        totals = idist.all_reduce(torch.tensor([self._loss_sum, float(self._steps)], dtype=torch.float64))
        metrics = self.evaluator.state.metrics
        row = {"epoch": engine.state.epoch, "train_loss": float(totals[0] / max(totals[1], 1.0)),
               "val_auc": float(metrics["val_auc"]), "val_sensitivity": metrics["val_sensitivity"],
               "val_specificity": metrics["val_specificity"], "operating_point": metrics["val_operating_point"],
               "lr": self._lr, "seconds": time.perf_counter() - self._started}
        self.history.append(row)
        is_best = row["val_auc"] > self.best_auc
        if is_best:
            self.best_auc, self.best_epoch = row["val_auc"], row["epoch"]
        if self.is_main:
            atomic_write_csv(self.metrics_path, pd.DataFrame(self.history, columns=list(METRIC_COLUMNS)))
            self.save(row["epoch"], row, is_best)

    @property
    def best_row(self) -> dict | None:
        return next((row for row in self.history if row["epoch"] == self.best_epoch), None)


class RichProgressHandler:
    """Trainer handler driving a rich progress bar (one task re-used per epoch) and printing one
    summary line per epoch after validation."""

    def __init__(self, progress: Progress, recorder: EpochRecorder):
        self.progress, self.recorder = progress, recorder
        self.task = progress.add_task("training", total=None, status="")

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def epoch_started(self, engine: Engine) -> None:
        self.progress.reset(self.task, total=engine.state.epoch_length,
                            description=f"epoch {engine.state.epoch}/{engine.state.max_epochs}", status="")

    def iteration_completed(self, engine: Engine) -> None:
        self.progress.update(self.task, advance=1, status=f"loss {engine.state.output['loss'].detach().item():.4f}")

    def epoch_completed(self, engine: Engine) -> None:
        row = self.recorder.history[-1]
        best = " [green](best)[/green]" if row["epoch"] == self.recorder.best_epoch else ""
        self.progress.console.print(
            f"epoch {row['epoch']}: loss {row['train_loss']:.4f}  val AUC {row['val_auc']:.4f}  "
            f"sens {row['val_sensitivity']:.3f}  spec {row['val_specificity']:.3f}  "
            f"@ p>={row['operating_point']:.3f}  ({row['seconds']:.1f} s){best}", highlight=False, soft_wrap=True)
