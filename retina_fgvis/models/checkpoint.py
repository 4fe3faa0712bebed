"""Self-describing classifier checkpoints.

A checkpoint is one ``torch.save`` file (a dict) that rebuilds its network without any
other input::

    format      "retina-fgvis-checkpoint"
    version     1
    arch        registered architecture name ("FundusCNN")
    arch_kwargs constructor arguments
    model       state dict
    meta        image_size, mean, std (per channel, images scaled to [0, 1]), class_names,
                positive_class, graham, rdr_threshold, operating_point (+ arch, arch_kwargs)
    epoch, config, metrics, optimizer (state dict or None), extra (trainer state or None)

Files are written atomically, so a run killed while saving keeps the previous checkpoint. Weights
holding NaN or ±inf are neither saved nor loaded (a diverged training run is no classifier).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from retina_fgvis._io import atomic_path
from retina_fgvis.models.fundus_cnn import FundusCNN

__all__ = ["ARCHITECTURES", "CHECKPOINT_FORMAT", "CheckpointError", "LoadedClassifier", "build_model",
           "load_classifier", "model_from_checkpoint", "non_finite_weight", "read_checkpoint", "save_checkpoint",
           "unwrap_model"]

CHECKPOINT_FORMAT = "retina-fgvis-checkpoint"
CHECKPOINT_VERSION = 1
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"FundusCNN": FundusCNN}
_REQUIRED_KEYS = ("format", "arch", "arch_kwargs", "model", "meta")
_REQUIRED_META = ("image_size", "mean", "std")
_META_DEFAULTS = {"class_names": ["non-RDR", "RDR"], "positive_class": 1, "graham": False, "rdr_threshold": 2,
                  "operating_point": 0.5}


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, of another architecture or incomplete."""


def unwrap_model(model: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel/DataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


def build_model(arch: str, arch_kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate a registered architecture; ValueError for an unknown name or bad arguments."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch: unknown architecture {arch!r}; known: {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](**arch_kwargs)


def non_finite_weight(state_dict: dict[str, Any]) -> str | None:
    """Name of the first floating-point tensor of ``state_dict`` holding NaN or ±inf (``None``: all finite)."""
    return next((name for name, value in state_dict.items()
                 if isinstance(value, torch.Tensor) and value.is_floating_point() and not torch.isfinite(value).all()),
                None)


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict[str, Any], *,
                    optimizer: torch.optim.Optimizer | None = None, epoch: int | None = None,
                    config: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Atomically write a checkpoint of ``model`` (DDP-wrapped models are unwrapped).

    ``meta`` must hold image_size, mean and std; missing class_names, positive_class, graham,
    rdr_threshold and operating_point get their defaults. ``config`` and ``metrics`` must hold
    plain Python values (they are loaded with ``weights_only=True``).
    """
    network = unwrap_model(model)
    arch = type(network).__name__
    if ARCHITECTURES.get(arch) is not type(network):
        raise TypeError(f"model: {arch} is not a registered architecture ({sorted(ARCHITECTURES)})")
    missing = [key for key in _REQUIRED_META if key not in meta]
    if missing:
        raise ValueError(f"meta: missing {missing}")
    state = network.state_dict()
    if (bad := non_finite_weight(state)) is not None:
        raise ValueError(f"model: weight {bad} holds NaN or inf; not saved over {path}")
    full_meta = {**_META_DEFAULTS, **meta, "arch": arch, "arch_kwargs": dict(network.arch_kwargs)}
    payload = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "arch": arch, "arch_kwargs": dict(network.arch_kwargs),
        "model": {key: value.detach().cpu() for key, value in state.items()},
        "meta": full_meta, "epoch": epoch, "config": config, "metrics": metrics,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "extra": extra,
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate a checkpoint dict; CheckpointError naming the file on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as error:
        # The first line only: PyTorch appends paragraphs of weights_only advice that do not apply here.
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path}: not a readable checkpoint file ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: not a retina-fgvis checkpoint (no format marker)")
    missing = [key for key in _REQUIRED_KEYS if key not in payload]
    missing += [f"meta.{key}" for key in _REQUIRED_META if key not in payload.get("meta", {})]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing {missing}")
    if isinstance(payload["model"], dict) and (bad := non_finite_weight(payload["model"])) is not None:
        raise CheckpointError(f"checkpoint {path}: weight {bad} holds NaN or inf (saved from a diverged training "
                              f"run?); not a usable classifier")
    if payload["arch"] not in ARCHITECTURES:
        raise CheckpointError(f"checkpoint {path}: architecture {payload['arch']!r} is not one of "
                              f"{sorted(ARCHITECTURES)}")
    if payload["arch"] == "FundusCNN" and "layout" not in payload["arch_kwargs"]:
        # FundusCNN had one layout before layouts had names: the 13-convolution o_O one.
        payload["arch_kwargs"] = {**payload["arch_kwargs"], "layout": "o_O"}
        if "arch_kwargs" in payload["meta"]:
            payload["meta"]["arch_kwargs"] = payload["arch_kwargs"]
    return payload


def model_from_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> nn.Module:
    """Build the architecture of a :func:`read_checkpoint` dict and load its weights (train mode).

    CheckpointError naming ``path`` when the weights do not fit the stored architecture.
    """
    try:
        model = build_model(payload["arch"], payload["arch_kwargs"])
        model.load_state_dict(payload["model"])
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"checkpoint {path}: weights do not fit {payload['arch']}"
                              f"({payload['arch_kwargs']}): {str(error).splitlines()[0]}") from None
    return model


@dataclass
class LoadedClassifier:
    """A classifier rebuilt from a checkpoint, in eval mode, with its preprocessing.

    ``prepare`` maps uint8 RGB images (FOV-cropped, ``image_size`` square, Graham-processed
    if ``meta["graham"]``; i.e. ``load_fundus(path, image_size, graham)``) to the model's input.
    """

    model: nn.Module
    meta: dict[str, Any]
    path: Path
    checkpoint: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def image_size(self) -> int:
        return int(self.meta["image_size"])

    @property
    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel for images scaled to [0, 1]: ``x = (img/255 - mean) / std``."""
        return tuple(float(v) for v in self.meta["mean"]), tuple(float(v) for v in self.meta["std"])

    def prepare(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 images N×S×S×3 (or one S×S×3), S = image_size -> float N×3×S×S on the model's device.

        ``x = (image / 255 - mean) / std`` per channel.
        """
        batch = np.asarray(images)
        if batch.ndim == 3:
            batch = batch[None]
        size = self.image_size
        if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
            raise ValueError(f"images: expected uint8 RGB images of {size}×{size}×3 (load_fundus(path, {size})), "
                             f"got array of shape {batch.shape}")
        if batch.dtype != np.uint8:
            raise TypeError(f"images: expected dtype uint8, got {batch.dtype}")
        mean, std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1) for v in self.normalization)
        x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float().div_(255.0)
        return ((x - mean) / std).to(self.device)

    @torch.no_grad()
    def predict_proba(self, images: np.ndarray | Sequence[np.ndarray] | torch.Tensor) -> np.ndarray:
        """P(positive class) per image, shape (N,); ``images`` as for :meth:`prepare` or an already prepared tensor."""
        x = images if isinstance(images, torch.Tensor) else self.prepare(images)
        probs = torch.softmax(self.model(x.to(self.device)).float(), dim=1)
        return probs[:, int(self.meta["positive_class"])].cpu().numpy()


def load_classifier(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> LoadedClassifier:
    """Rebuild the classifier stored in ``path``; CheckpointError (a ValueError) names the file."""
    path = Path(path)
    payload = read_checkpoint(path, map_location)
    model = model_from_checkpoint(payload, path).to(map_location).eval()
    return LoadedClassifier(model=model, meta=dict(payload["meta"]), path=path, checkpoint=payload)
