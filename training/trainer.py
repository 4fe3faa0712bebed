"""``train(config)``: MONAI ``SupervisedTrainer``/``SupervisedEvaluator`` for the RDR classifier.

Run folder (``config.out``)::

    run.json      config + library versions
    split.csv     image, path, level, label, patient, eye, split (train/val)
    metrics.csv   one row per epoch: epoch, train_loss, val_auc, val_sensitivity, val_specificity,
                  operating_point, lr, seconds
    last.pt       checkpoint after the latest epoch (model, optimiser, scheduler, epoch, config, meta)
    best.pt       checkpoint of the epoch with the highest validation AUC
    tensorboard/  event files (with ``tensorboard=True``)

Every file is written atomically by the main process after the epoch's validation, so a run
killed at any moment resumes (``resume=True``) at the epoch after ``last.pt`` without losing one.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import LrScheduleHandler, ROCAUC, ValidationHandler, from_engine
from monai.transforms import Activationsd, AsDiscreted, Compose
from torch import nn

from retina_fgvis._io import FolderLock, atomic_write_csv, locked_folder
from retina_fgvis.datasets.eyepacs import write_split
from retina_fgvis.models.checkpoint import model_from_checkpoint, read_checkpoint, save_checkpoint, unwrap_model
from retina_fgvis.models.fundus_cnn import FundusCNN
from retina_fgvis.runs import RunFolder, RunKind
from retina_fgvis.runtime import progress_bar, seed_everything
from retina_fgvis.training.config import RESUMABLE_OVERRIDES, TrainConfig
from retina_fgvis.training.data import compute_normalization, load_split, make_loaders, prepare_split
from retina_fgvis.training.distributed import DistContext, distributed_context
from retina_fgvis.training.handlers import (METRIC_COLUMNS, BroadcastBuffers, DivergenceGuard, EpochRecorder,
                                            EpochSeeder, OperatingPointHandler, RichProgressHandler)

__all__ = ["RUN_FILES", "TrainResult", "train"]

RUN_FILES = {"run": "run.json", "split": "split.csv", "metrics": "metrics.csv", "last": "last.pt",
             "best": "best.pt", "tensorboard": "tensorboard"}
_RESULT_FILES = ("metrics", "last", "best")
# Settings a resume may change (and where the folder is): not part of the run's identity in run.json.
_NOT_COMPARED = (*RESUMABLE_OVERRIDES, "resume", "out")
CLASS_NAMES = ["non-RDR", "RDR"]


@dataclass
class TrainResult:
    """What a training call produced.

    ``metrics`` is the last epoch's metrics.csv row, ``best_metrics`` the row of the best-AUC
    epoch (whose weights are in ``best_checkpoint``); ``epochs_run`` counts the epochs this call
    trained (0 when resuming a finished run); ``is_main`` is False on non-zero torchrun ranks.
    """

    run_dir: Path
    best_checkpoint: Path
    last_checkpoint: Path
    metrics: dict[str, float]
    best_metrics: dict[str, float]
    epochs_run: int
    seconds: float
    is_main: bool = True


def train(config: TrainConfig) -> TrainResult:
    """Train (or, with ``config.resume``, continue) a FundusCNN run into ``config.out``.

    Raises ValueError (CheckpointError, DatasetError are subclasses) before anything is written
    for: a data folder not in the dataset's layout, an empty or single-class split, ``out``
    holding another run's results without ``resume``, ``resume`` without ``out/last.pt``, or a
    corrupt / foreign checkpoint there. Under ``torchrun`` every process calls this; only rank 0
    writes files, and holds the lock of ``out`` (:func:`~retina_fgvis._io.locked_folder`) throughout.
    """
    with distributed_context(config.device) as ctx, contextlib.ExitStack() as stack:
        lock = ctx.main_only(lambda: stack.enter_context(locked_folder(config.out)))
        return _train(config, ctx, lock)


def _claim(config: TrainConfig) -> tuple[TrainConfig, dict[str, Any] | None]:
    """The run's config (for a resume: the checkpoint's, with this call's overrides) and its checkpoint
    payload (``None`` for a new run); refuses a folder holding another command's or another setting's run,
    or, without ``resume``, a run that has results already."""
    if config.resume:
        config, payload = _resume_config(config)
    else:
        config, payload = config.resolved(), None
        found = [RUN_FILES[key] for key in _RESULT_FILES if (Path(config.out) / RUN_FILES[key]).exists()]
        if found:
            raise ValueError(f"out: {config.out} already holds a run ({', '.join(found)}); pass --resume to continue "
                             f"it or choose another --out")
    _run_folder(config).claim(config.to_dict(), ignore=_NOT_COMPARED,
                              upgrade=lambda stored: TrainConfig.from_dict(stored).to_dict())
    return config, payload


def _run_folder(config: TrainConfig) -> RunFolder:
    return RunFolder(config.out, RunKind.TRAIN)


def _resume_config(config: TrainConfig) -> tuple[TrainConfig, dict[str, Any]]:
    out = Path(config.out)
    last = out / RUN_FILES["last"]
    if not last.exists():
        raise ValueError(f"resume: {out} holds no checkpoint {RUN_FILES['last']} to resume from")
    payload = read_checkpoint(last)
    if (not isinstance(payload.get("config"), dict) or payload.get("epoch") is None or not payload.get("optimizer")
            or "scheduler" not in (payload.get("extra") or {})):
        raise ValueError(f"resume: checkpoint {last} holds no training state (config, epoch, optimizer, scheduler)")
    stored = TrainConfig.from_dict(payload["config"])
    overrides = {key: getattr(config, key) for key in RESUMABLE_OVERRIDES if getattr(config, key) is not None}
    merged = TrainConfig.from_dict({**stored.to_dict(), **overrides, "out": str(out), "resume": True})
    return merged.resolved(), payload


def _restore(payload: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
             epochs: int, metrics_path: Path) -> tuple[int, list[dict], tuple[float, int]]:
    """Load optimiser and schedule from ``last.pt`` -> (its epoch, metrics rows up to it, (best AUC, best epoch))."""
    optimizer.load_state_dict(payload["optimizer"])
    extra = payload["extra"]
    scheduler.load_state_dict(extra["scheduler"])
    # The cosine follows this call's (possibly extended) epoch count.
    for group, base_lr in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base_lr * _cosine(epochs)(scheduler.last_epoch)
    epoch = int(payload["epoch"])
    history = []
    if metrics_path.exists():
        saved = pd.read_csv(metrics_path)
        history = saved[saved["epoch"] <= epoch].to_dict("records")
    return epoch, history, (float(extra.get("best_auc", -1.0)), int(extra.get("best_epoch", 0)))


def _class_weights(labels: pd.Series, mode: str, device: torch.device) -> torch.Tensor | None:
    """The cross-entropy's class weights: ``None`` for ``"none"``; for ``"balanced"`` inverse class frequency,
    n / (2·n_c), so that both classes weigh the same in the loss."""
    if mode == "none":
        return None
    counts = labels.value_counts().reindex([0, 1]).to_numpy(dtype=float)
    return torch.tensor(counts.sum() / (2.0 * counts), dtype=torch.float32, device=device)


def _cosine(epochs: int):
    return lambda epoch: 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))


def _tensorboard_handlers(out: Path, trainer: SupervisedTrainer, evaluator: SupervisedEvaluator) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("tensorboard: install the 'tensorboard' package to use --tensorboard") from None
    from monai.handlers import TensorBoardStatsHandler

    writer = SummaryWriter(log_dir=str(out / RUN_FILES["tensorboard"]))
    TensorBoardStatsHandler(summary_writer=writer, tag_name="train_loss", epoch_log=False,
                            output_transform=lambda output: output["loss"].detach().item()).attach(trainer)
    TensorBoardStatsHandler(summary_writer=writer, iteration_log=False, output_transform=lambda _: None,
                            global_epoch_transform=lambda _: trainer.state.epoch).attach(evaluator)
    # Flushed every epoch, so a killed run keeps its curves up to the last checkpoint.
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda _: writer.flush())
    trainer.add_event_handler(Events.COMPLETED, lambda _: writer.close())


@dataclass
class _Data:
    """The run's split, normalisation and loaders."""

    split: pd.DataFrame
    mean: list[float]
    std: list[float]
    train_loader: Any
    val_loader: Any
    train_dataset: Any

    @property
    def train_labels(self) -> pd.Series:
        return self.split.loc[self.split["split"] == "train", "label"]


def _build_data(config: TrainConfig, payload: dict[str, Any] | None, ctx: DistContext) -> _Data:
    """A resumed run keeps its split and normalisation; a new one splits by patient and measures them."""
    split_path = Path(config.out) / RUN_FILES["split"]
    split = load_split(split_path) if payload is not None and split_path.exists() else prepare_split(config)
    if payload is not None:
        mean, std = list(payload["meta"]["mean"]), list(payload["meta"]["std"])
    else:
        mean, std = compute_normalization(list(split.loc[split["split"] == "train", "path"]), config.image_size,
                                          config.graham, config.norm_samples, config.seed)
    loaders = make_loaders(split, config, mean, std, rank=ctx.rank, world_size=ctx.world_size)
    return _Data(split, mean, std, *loaders)


def _build_network(config: TrainConfig, payload: dict[str, Any] | None) -> nn.Module:
    seed_everything(config.seed)
    if payload is None:
        return FundusCNN(width=config.width, dropout=config.dropout, layout=config.layout, **config.network_options)
    # The architecture (and any mismatch with its weights) comes from the checkpoint itself.
    return model_from_checkpoint(payload, Path(config.out) / RUN_FILES["last"])


def _write_run_start(config: TrainConfig, data: _Data, history: list[dict], resumed: bool, lock: FolderLock) -> None:
    """Main process, before the first epoch: the split (new run) or the metrics up to ``last.pt`` (resume)."""
    run = _run_folder(config)
    if resumed:
        run.clean(lock)
        # Drops the row of an epoch trained after the last checkpoint (killed before saving it).
        atomic_write_csv(run.path / RUN_FILES["metrics"], pd.DataFrame(history, columns=list(METRIC_COLUMNS)))
    else:
        write_split(data.split, run.path / RUN_FILES["split"])
    run.write_info(config.to_dict())


def _build_evaluator(network: nn.Module, data: _Data, device: torch.device, amp: bool) -> SupervisedEvaluator:
    return SupervisedEvaluator(
        device=device, val_data_loader=data.val_loader, network=unwrap_model(network), amp=amp,
        postprocessing=Compose([Activationsd("pred", softmax=True), AsDiscreted("label", to_onehot=2)]),
        key_val_metric={"val_auc": ROCAUC(output_transform=from_engine(["pred", "label"]))},
        val_handlers=[OperatingPointHandler(positive_class=1)])


def _checkpoint_writer(config: TrainConfig, data: _Data, network: nn.Module, optimizer, scheduler, amp: bool):
    """``save(epoch, row, is_best, recorder, trainer)``: last.pt every epoch, best.pt when validation AUC improved."""
    out = Path(config.out)
    meta = {"image_size": config.image_size, "mean": data.mean, "std": data.std, "class_names": CLASS_NAMES,
            "positive_class": 1, "graham": config.graham, "rdr_threshold": config.rdr_threshold,
            "dataset": config.dataset}

    def save(epoch: int, row: dict, is_best: bool, recorder: EpochRecorder, trainer: SupervisedTrainer) -> None:
        extra = {"scheduler": scheduler.state_dict(), "best_auc": recorder.best_auc,
                 "best_epoch": recorder.best_epoch, "scaler": trainer.scaler.state_dict() if amp else None}
        kwargs = {"optimizer": optimizer, "epoch": epoch, "config": config.to_dict(), "metrics": row, "extra": extra}
        epoch_meta = {**meta, "operating_point": row["operating_point"]}
        if is_best:
            save_checkpoint(out / RUN_FILES["best"], network, epoch_meta, **kwargs)
        save_checkpoint(out / RUN_FILES["last"], network, epoch_meta, **kwargs)
    return save


def _train(config: TrainConfig, ctx: DistContext, lock: FolderLock | None) -> TrainResult:
    started = time.perf_counter()
    # Everything is validated before the first write.
    config, payload = _claim(config)
    out = Path(config.out)
    data = _build_data(config, payload, ctx)
    network = _build_network(config, payload)
    optimizer = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _cosine(config.epochs))
    start_epoch, history, best = 0, [], (-1.0, 0)
    if payload is not None:
        start_epoch, history, best = _restore(payload, optimizer, scheduler, config.epochs, out / RUN_FILES["metrics"])
    if ctx.is_main:
        _write_run_start(config, data, history, payload is not None, lock)
    ctx.barrier()

    device = ctx.device
    network = network.to(device)
    if ctx.distributed:
        network = nn.parallel.DistributedDataParallel(
            network, device_ids=[device.index] if device.type == "cuda" else None)
    amp = config.amp and device.type == "cuda"
    loss_function = nn.CrossEntropyLoss(weight=_class_weights(data.train_labels, config.class_weights, device),
                                        label_smoothing=config.label_smoothing)
    epoch_length = len(data.train_loader) if config.steps_per_epoch is None else min(config.steps_per_epoch,
                                                                                     len(data.train_loader))
    evaluator = _build_evaluator(network, data, device, amp)
    save = _checkpoint_writer(config, data, network, optimizer, scheduler, amp)
    recorder = EpochRecorder(evaluator, out / RUN_FILES["metrics"],
                             lambda epoch, row, is_best: save(epoch, row, is_best, recorder, trainer),
                             is_main=ctx.is_main, history=history, best_auc=best[0], best_epoch=best[1])
    # Order matters at EPOCH_COMPLETED: stop a diverged run, give every rank the model rank 0 saves, step the
    # schedule, validate, then record and save.
    handlers: list = [EpochSeeder(config.seed, ctx.rank, data.train_dataset),
                      DivergenceGuard(unwrap_model(network), out),
                      BroadcastBuffers(unwrap_model(network)),
                      LrScheduleHandler(scheduler, print_lr=False),
                      ValidationHandler(interval=1, validator=evaluator),
                      recorder]
    progress = progress_bar() if (config.progress and ctx.is_main) else None
    if progress is not None:
        handlers.append(RichProgressHandler(progress, recorder))
    trainer = SupervisedTrainer(
        device=device, max_epochs=config.epochs, train_data_loader=data.train_loader, network=network,
        optimizer=optimizer, loss_function=loss_function, epoch_length=epoch_length, amp=amp,
        decollate=False, train_handlers=handlers)
    if amp and payload is not None and (payload.get("extra") or {}).get("scaler"):
        trainer.scaler.load_state_dict(payload["extra"]["scaler"])
    if config.tensorboard and ctx.is_main:
        _tensorboard_handlers(out, trainer, evaluator)

    trainer.state.epoch = start_epoch
    trainer.state.iteration = start_epoch * epoch_length
    epochs_run = max(0, config.epochs - start_epoch)
    if epochs_run:
        with progress if progress is not None else contextlib.nullcontext():
            trainer.run()
    ctx.barrier()
    return TrainResult(run_dir=out, best_checkpoint=out / RUN_FILES["best"], last_checkpoint=out / RUN_FILES["last"],
                       metrics=dict(recorder.history[-1]), best_metrics=dict(recorder.best_row or {}),
                       epochs_run=epochs_run, seconds=time.perf_counter() - started, is_main=ctx.is_main)
