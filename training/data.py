"""Training data: the EyePACS table and split, normalisation statistics, MONAI transforms and loaders.

Images are read with the core reader (``load_fundus``: FOV crop, square, resize, optional Graham
normalisation), scaled to [0, 1], augmented, and standardised per channel with the training
split's mean/std (stored in the checkpoint, so inference prepares images the same way).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from monai.data import CacheDataset, DataLoader
from monai.data import DistributedSampler as EvalSampler
from monai.transforms import (Compose, EnsureTyped, MapTransform, NormalizeIntensityd, RandAdjustContrastd, RandFlipd,
                              RandRotated, RandScaleIntensityd, RandZoomd)
from torch.utils.data import DistributedSampler

from retina_fgvis.datasets.eyepacs import SPLIT_COLUMNS, load_eyepacs_table, patient_split, read_split
from retina_fgvis.datasets.fundus import load_fundus
from retina_fgvis.datasets.synthetic import require_synthetic_set
from retina_fgvis.training.config import TrainConfig

__all__ = ["LoadFundusd", "compute_normalization", "load_split", "make_loaders",
           "make_transforms", "prepare_split"]

#: Decoded images kept in memory at most (float32); larger sets are partly cached.
CACHE_BYTES = 2 * 1024**3


class LoadFundusd(MapTransform):
    """Read the file named by each key with ``load_fundus`` -> float32 tensor 3×S×S in [0, 1]."""

    def __init__(self, keys: str | Sequence[str], size: int, graham: bool = False):
        super().__init__(keys)
        self.size = size
        self.graham = graham

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        out = dict(data)
        for key in self.key_iterator(out):
            image, _ = load_fundus(out[key], size=self.size, graham=self.graham)
            out[key] = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
        return out


def make_transforms(image_size: int, mean: Sequence[float], std: Sequence[float], *, train: bool,
                    graham: bool = False) -> Compose:
    """MONAI pipeline for ``{"image": path, "label": int}`` items.

    Training adds a full random rotation, horizontal/vertical flips, zoom 0.9–1.1, brightness
    (intensity × U(0.9, 1.1)) and contrast (gamma U(0.8, 1.25)), all before standardisation so the
    black outside the field of view stays black.
    """
    steps: list = [LoadFundusd("image", image_size, graham)]
    if train:
        steps += [
            RandRotated("image", range_x=math.pi, prob=1.0, padding_mode="zeros"),
            RandFlipd("image", spatial_axis=0, prob=0.5),
            RandFlipd("image", spatial_axis=1, prob=0.5),
            RandZoomd("image", min_zoom=0.9, max_zoom=1.1, prob=0.5, padding_mode="constant"),
            RandScaleIntensityd("image", factors=0.1, prob=0.5),
            RandAdjustContrastd("image", gamma=(0.8, 1.25), prob=0.5),
        ]
    steps += [NormalizeIntensityd("image", subtrahend=list(mean), divisor=list(std), channel_wise=True),
              # Plain tensors from here on: MetaTensor bookkeeping would slow every network op.
              EnsureTyped("image", data_type="tensor", track_meta=False)]
    return Compose(steps)


def _eyepacs_root(config: TrainConfig) -> Path:
    """The EyePACS-layout folder to read (training never writes a dataset)."""
    root = Path(config.data_dir)
    if not root.is_dir():
        raise ValueError(f"data_dir: {root} is not a folder")
    if config.dataset == "eyepacs":
        return root
    return require_synthetic_set(root).eyepacs


def _check_split(split: pd.DataFrame, source: str) -> None:
    train = split[split["split"] == "train"]
    val = split[split["split"] == "val"]
    if len(train) < 2:
        raise ValueError(f"{source}: the training split holds {len(train)} image(s); at least 2 are needed")
    if len(val) < 2:
        raise ValueError(f"{source}: the validation split holds {len(val)} image(s); at least 2 are needed")
    for name, part in (("training", train), ("validation", val)):
        classes = sorted(int(c) for c in part["label"].unique())
        if classes != [0, 1]:
            raise ValueError(f"{source}: the {name} split holds only class {classes} "
                             f"(labels = level >= rdr_threshold); both RDR and non-RDR images are needed")


def prepare_split(config: TrainConfig) -> pd.DataFrame:
    """Read the dataset and split it by patient -> DataFrame with
    :data:`~retina_fgvis.datasets.eyepacs.SPLIT_COLUMNS` (absolute paths).

    Raises ValueError (the reader's DatasetError included) for a folder not in the dataset's layout,
    an empty table, a split too small, or a split holding a single class.
    """
    root = _eyepacs_root(config)
    table = load_eyepacs_table(root, rdr_threshold=config.rdr_threshold)
    if len(table) == 0:
        raise ValueError(f"data_dir: {root} holds no labelled images")
    split = patient_split(table, val_fraction=config.val_fraction, seed=config.seed)
    split = split.assign(path=[str(Path(p).resolve()) for p in split["path"]])[list(SPLIT_COLUMNS)]
    _check_split(split, f"data_dir {root}")
    return split.reset_index(drop=True)


def load_split(path: str | Path) -> pd.DataFrame:
    """Read a run's ``split.csv`` back (:func:`~retina_fgvis.datasets.eyepacs.read_split`) and check it can train."""
    split = read_split(path)
    _check_split(split, f"split file {path}")
    return split


def compute_normalization(paths: Sequence[str], size: int, graham: bool, n: int, seed: int
                          ) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (images scaled to [0, 1]) over a seeded sample of up to ``n`` images."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(paths), size=min(n, len(paths)), replace=False)
    images = np.stack([load_fundus(paths[i], size=size, graham=graham)[0] for i in sorted(chosen)])
    pixels = images.reshape(-1, 3).astype(np.float64) / 255.0
    std = np.maximum(pixels.std(axis=0), 1e-3)  # a constant channel must not divide by zero
    return [float(v) for v in pixels.mean(axis=0)], [float(v) for v in std]


def _items(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"image": path, "label": int(label)} for path, label in zip(frame["path"], frame["label"])]


def make_loaders(split: pd.DataFrame, config: TrainConfig, mean: Sequence[float], std: Sequence[float], *,
                 rank: int = 0, world_size: int = 1) -> tuple[DataLoader, DataLoader, CacheDataset]:
    """Training and validation loaders for one process of ``world_size``.

    Training: a seeded ``DistributedSampler`` (also with one process, so every epoch's order
    depends only on seed and epoch, and a resumed run sees the same batches), ``drop_last`` so
    batch norm never sees a single image. Validation: every image exactly once across processes.
    Returns (train_loader, val_loader, train_dataset).
    """
    train_items = _items(split[split["split"] == "train"])
    val_items = _items(split[split["split"] == "val"])
    per_image = 3 * config.image_size**2 * 4
    cache_rate = min(1.0, CACHE_BYTES / (per_image * (len(train_items) + len(val_items))))
    cache_workers = max(1, config.workers)
    train_ds = CacheDataset(train_items, make_transforms(config.image_size, mean, std, train=config.augment,
                                                         graham=config.graham),
                            cache_rate=cache_rate, num_workers=cache_workers, progress=False)
    val_ds = CacheDataset(val_items, make_transforms(config.image_size, mean, std, train=False,
                                                     graham=config.graham),
                          cache_rate=cache_rate, num_workers=cache_workers, progress=False)
    train_sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank, shuffle=True,
                                       seed=config.seed, drop_last=False)
    per_rank = len(train_sampler)
    if per_rank < 2:
        raise ValueError(f"data_dir: {len(train_items)} training image(s) cannot be shared by {world_size} "
                         f"process(es) with at least 2 each")
    if len(val_items) < world_size:
        raise ValueError(f"data_dir: {len(val_items)} validation image(s) cannot give each of {world_size} "
                         f"processes one")
    batch_size = min(config.batch_size, per_rank)
    train_loader = DataLoader(train_ds, batch_size=batch_size, sampler=train_sampler, drop_last=True,
                              num_workers=config.workers, persistent_workers=False)
    val_sampler = EvalSampler(val_ds, even_divisible=False, num_replicas=world_size, rank=rank, shuffle=False)
    val_loader = DataLoader(val_ds, batch_size=batch_size, sampler=val_sampler, num_workers=config.workers)
    return train_loader, val_loader, train_ds
