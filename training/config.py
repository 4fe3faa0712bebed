"""Training settings: one dataclass, with per-dataset defaults for the settings left as ``None``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retina_fgvis.checks import check_int, check_number
from retina_fgvis.models.fundus_cnn import FundusCNN

__all__ = ["CLASS_WEIGHTS", "DATASETS", "DATASET_DEFAULTS", "RESUMABLE_OVERRIDES", "TrainConfig"]

DATASETS = ("eyepacs", "synthetic")
#: How the cross-entropy weighs the two classes: ``"none"`` (as often as the training split holds them,
#: so P(RDR) follows the data's class frequencies) or ``"balanced"`` (inverse class frequency, n / (2·n_c)).
CLASS_WEIGHTS = ("none", "balanced")

#: Defaults for the fields left as ``None``. Real EyePACS: the o_O resolution and width.
#: Synthetic: small and fast enough to reach validation AUC >= 0.95 within minutes on 2 CPU cores.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "eyepacs": {"epochs": 60, "image_size": 512, "batch_size": 32, "lr": 1e-3, "width": 32},
    "synthetic": {"epochs": 24, "image_size": 256, "batch_size": 16, "lr": 3e-3, "width": 16},
}

#: Settings a resumed run takes from the new configuration; everything else comes from the run folder.
RESUMABLE_OVERRIDES = ("epochs", "device", "workers", "tensorboard", "progress")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in ``run.json`` and in every checkpoint).

    Attributes:
        dataset: ``"eyepacs"`` (a folder readable by ``load_eyepacs_table``) or ``"synthetic"``
            (the built-in semi-synthetic set, written by ``retina-fgvis synth``; training only reads it).
        data_dir: dataset folder.
        out: run folder (created; must not hold another run's results unless ``resume``).
        epochs, image_size, batch_size, lr, width: ``None`` takes :data:`DATASET_DEFAULTS`.
        weight_decay: AdamW weight decay.
        dropout: dropout before the linear head.
        augment: random rotation, flips, zoom, brightness and contrast of the training images (off: the
            images as they are, e.g. to compare a torchrun run with a single-process one exactly).
        label_smoothing: cross-entropy label smoothing; bounds the logit margin the classifier learns.
        class_weights: a member of :data:`CLASS_WEIGHTS`. ``"balanced"`` multiplies the odds of RDR by
            n_non-RDR / n_RDR against the data's, which lifts borderline non-RDR images above FGVis's stop
            value (docs/defense.md), so the default is ``"none"``.
        layout: FundusCNN layout (``"plain"``: one 3×3 stride-1 convolution per stage; ``"compact"``: the
            same with o_O's 5×5 stride-2 stem; ``"o_O"``: Net A's 13 convolutions).
        network_options: further FundusCNN keyword arguments (``activation``, ``batch_norm``, ``downsample``).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``... (under torchrun: the local GPU).
        resume: continue ``out/last.pt`` at the next epoch.
        seed: seeds the split, the augmentation and the weights.
        workers: data-loader worker processes (0 = load in the main process).
        tensorboard: also log to ``out/tensorboard`` (needs the ``tensorboard`` package).
        val_fraction: fraction of patients held out for validation.
        rdr_threshold: DR level from which an image counts as referable (class 1).
        graham: Graham-normalise images before training (stored in the checkpoint).
        steps_per_epoch: cap on iterations per epoch (quick checks); ``None`` = the whole training split.
        amp: mixed precision on CUDA (ignored on CPU).
        progress: show the rich progress bar.
        norm_samples: training images used to estimate the per-channel mean/std.
    """

    dataset: str = "synthetic"
    data_dir: str | Path | None = None
    out: str | Path = "runs/train"
    epochs: int | None = None
    image_size: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    width: int | None = None
    weight_decay: float = 1e-4
    dropout: float = 0.5
    augment: bool = True
    label_smoothing: float = 0.0
    class_weights: str = "none"
    layout: str = "plain"
    network_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    resume: bool = False
    seed: int = 0
    workers: int = 0
    tensorboard: bool = False
    val_fraction: float = 0.2
    rdr_threshold: int = 2
    graham: bool = False
    steps_per_epoch: int | None = None
    amp: bool = True
    progress: bool = True
    norm_samples: int = 64

    def resolved(self) -> "TrainConfig":
        """A copy with dataset defaults filled in and every field checked (ValueError naming the field)."""
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: expected one of {DATASETS}, got {self.dataset!r}")
        if self.data_dir is None:
            raise ValueError(f"data_dir: --dataset {self.dataset} needs --data-dir "
                             f"({'the EyePACS folder' if self.dataset == 'eyepacs' else 'a set from `retina-fgvis synth`'})")
        filled = {key: value if getattr(self, key) is None else getattr(self, key)
                  for key, value in DATASET_DEFAULTS[self.dataset].items()}
        config = dataclasses.replace(self, **filled)
        config.out = Path(config.out)
        config.data_dir = None if config.data_dir is None else Path(config.data_dir)
        positive = ("epochs", "image_size", "batch_size", "width", "norm_samples")
        for name in positive + ("workers", "seed", "rdr_threshold"):
            check_int(name, getattr(config, name), minimum=1 if name in positive else 0)
        if config.image_size < 32:
            raise ValueError(f"image_size: the network needs at least 32 px, got {config.image_size}")
        if config.steps_per_epoch is not None and (not isinstance(config.steps_per_epoch, int)
                                                   or config.steps_per_epoch < 1):
            raise ValueError(f"steps_per_epoch: expected a positive integer or None, got {config.steps_per_epoch!r}")
        check_number("lr", config.lr, minimum=0, exclusive_minimum=True)
        if not config.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected >= 0, got {config.weight_decay!r}")
        if not 0.0 < config.val_fraction < 1.0:
            raise ValueError(f"val_fraction: expected a fraction in (0, 1), got {config.val_fraction!r}")
        if not 0.0 <= config.dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {config.dropout!r}")
        if not 0.0 <= config.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing: expected a value in [0, 0.5), got {config.label_smoothing!r}")
        if config.class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"class_weights: expected one of {list(CLASS_WEIGHTS)}, got {config.class_weights!r}")
        config.network_options = dict(config.network_options)
        # FundusCNN owns its architecture rules: a one-channel build checks layout and options before
        # anything is written.
        try:
            FundusCNN(width=1, layout=config.layout, **config.network_options)
        except TypeError as error:
            raise ValueError(f"network_options: {error}") from None
        return config

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/checkpoint-safe values (paths as strings)."""
        return {key: str(value) if isinstance(value, Path) else value
                for key, value in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are ignored so older run folders still load."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {key: value for key, value in values.items() if key in names}
        values.setdefault("layout", "o_O")  # runs from before layouts had names trained the o_O one
        values.setdefault("class_weights", "balanced")  # and those from before the choice, class-balanced
        return cls(**values)
