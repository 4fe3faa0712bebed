"""EyePACS (Kaggle diabetic-retinopathy-detection) as published: labels, image files, patient split.

On disk::

    ROOT/trainLabels.csv               image,level          (ids without extension)
    ROOT/retinopathy_solution.csv      image,level,Usage    (optional: labels of the test images)
    ROOT/train/{patient}_{left|right}.jpeg   (or directly in ROOT/)
    ROOT/test/{patient}_{left|right}.jpeg    (scanned only when a solution file is used)

The binary label is referable DR (RDR): ``level >= rdr_threshold`` (default 2, moderate or worse).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from retina_fgvis._io import atomic_write_csv
from retina_fgvis.datasets.errors import DatasetError

LABELS_CSV = "trainLabels.csv"
SOLUTION_CSV = "retinopathy_solution.csv"
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
LEVELS = (0, 1, 2, 3, 4)
_ID = re.compile(r"^(?P<patient>[0-9A-Za-z]+)_(?P<eye>left|right)$")
TABLE_COLUMNS = ["image", "path", "level", "label", "patient", "eye"]
#: The one split-file format (a training run's ``split.csv``): the table's columns and ``split`` (train | val).
SPLIT_COLUMNS = [*TABLE_COLUMNS, "split"]


def load_eyepacs_table(
    root: str | os.PathLike,
    labels_csv: str | os.PathLike | None = None,
    solution_csv: str | os.PathLike | None = None,
    rdr_threshold: int = 2,
) -> pd.DataFrame:
    """Read the labels and match them one-to-one with the image files.

    Args:
        root: dataset folder; images are looked up in ``root/``, ``root/train/`` and, when a
            solution file is used, ``root/test/``.
        labels_csv: ``image,level`` file; default ``root/trainLabels.csv``.
        solution_csv: ``image,level,Usage`` file of the test images; default
            ``root/retinopathy_solution.csv`` if it exists (so all 88,702 images are used).
        rdr_threshold: ``label = level >= rdr_threshold``.

    Returns a DataFrame with one row per image, columns ``image`` (id), ``path`` (str), ``level``
    (0–4), ``label`` (0/1, 1 = RDR), ``patient`` (str), ``eye`` ("left"/"right"), in CSV order.

    Raises :class:`DatasetError` naming the file for: a missing folder or label file, an empty
    folder, a malformed id, an unknown level, a duplicate id, a label row without an image file,
    an image file without a label row.
    """
    if isinstance(rdr_threshold, bool) or rdr_threshold not in LEVELS[1:]:
        raise ValueError(f"rdr_threshold: expected an integer level 1-4, got {rdr_threshold!r}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "dataset folder not found")
    labels_csv = Path(labels_csv) if labels_csv is not None else root / LABELS_CSV
    if solution_csv is None and (root / SOLUTION_CSV).is_file():
        solution_csv = root / SOLUTION_CSV
    sources = [(labels_csv, _read_levels(labels_csv))]
    folders = [root, root / "train"]
    if solution_csv is not None:
        sources.append((Path(solution_csv), _read_levels(Path(solution_csv))))
        folders.append(root / "test")

    images = find_images(folders)
    if not images:
        raise DatasetError(root, f"no images ({', '.join('*' + s for s in IMAGE_SUFFIXES)}) in {', '.join(map(str, folders))}")
    seen: dict[str, Path] = {}
    for csv_path, frame in sources:
        for image_id in frame["image"]:
            if image_id in seen:
                raise DatasetError(csv_path, f"duplicate image id {image_id!r} (also in {seen[image_id]})")
            seen[image_id] = csv_path
        missing = ~frame["image"].isin(images)
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DatasetError(
                csv_path,
                f"line {row + 2}: image {frame['image'].iloc[row]!r} has no file in {', '.join(map(str, folders))}"
                f" ({int(missing.sum())} label rows without an image)",
            )
    unlabelled = sorted(set(images) - set(seen))
    if unlabelled:
        names = ", ".join(csv_path.name for csv_path, _ in sources)
        raise DatasetError(images[unlabelled[0]], f"image has no label in {names} ({len(unlabelled)} unlabelled images)")

    table = pd.concat([frame for _, frame in sources], ignore_index=True)
    parts = table["image"].str.extract(_ID)
    table["path"] = [str(images[i]) for i in table["image"]]
    table["label"] = (table["level"] >= rdr_threshold).astype(np.int64)
    table["patient"] = parts["patient"]
    table["eye"] = parts["eye"]
    return table[TABLE_COLUMNS]


def find_images(folders: list[str | os.PathLike]) -> dict[str, Path]:
    """Map image id (file stem) -> path for the image files directly inside ``folders``.

    Raises :class:`DatasetError` when one id has two files.
    """
    found: dict[str, Path] = {}
    for folder in map(Path, folders):
        if not folder.is_dir():
            continue
        with os.scandir(folder) as entries:
            for entry in entries:
                suffix = os.path.splitext(entry.name)[1].lower()
                if suffix not in IMAGE_SUFFIXES or entry.name.startswith(".") or not entry.is_file():
                    continue
                image_id = entry.name[: -len(suffix)]
                path = folder / entry.name
                if image_id in found:
                    raise DatasetError(path, f"duplicate image id {image_id!r} (also {found[image_id]})")
                found[image_id] = path
    return found


def _read_levels(csv_path: Path) -> pd.DataFrame:
    """``image,level`` rows of one label file, validated (ids, levels 0–4, no duplicates)."""
    if not csv_path.is_file():
        raise DatasetError(csv_path, "label file not found")
    try:
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise DatasetError(csv_path, f"not a readable CSV ({error})") from None
    if not {"image", "level"} <= set(frame.columns):
        raise DatasetError(csv_path, f"expected columns 'image,level', found {list(frame.columns)}")
    if frame.empty:
        raise DatasetError(csv_path, "no label rows")
    frame = frame[["image", "level"]].apply(lambda column: column.str.strip())
    bad_id = ~frame["image"].str.fullmatch(_ID)
    if bad_id.any():
        row = int(np.flatnonzero(bad_id)[0])
        raise DatasetError(csv_path, f"line {row + 2}: image id {frame['image'].iloc[row]!r} is not '<patient>_<left|right>'")
    bad_level = ~frame["level"].isin([str(level) for level in LEVELS])
    if bad_level.any():
        row = int(np.flatnonzero(bad_level)[0])
        raise DatasetError(
            csv_path,
            f"line {row + 2}: unknown level {frame['level'].iloc[row]!r} for image {frame['image'].iloc[row]!r} (expected 0-4)",
        )
    duplicated = frame["image"].duplicated()
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise DatasetError(csv_path, f"line {row + 2}: duplicate image id {frame['image'].iloc[row]!r}")
    frame["level"] = frame["level"].astype(np.int64)
    return frame


def patient_split(table: pd.DataFrame, val_fraction: float = 0.2, seed: int = 0) -> pd.DataFrame:
    """Split by patient (both eyes on the same side), stratified by label, seeded.

    Patients are grouped into strata by (number of eyes, number of RDR eyes); each stratum is
    shuffled with ``numpy.random.default_rng(seed)`` and the strata are laid end to end. Patient
    ``i`` of that sequence goes to validation when ``floor((i+1)·f) > floor(i·f)``, so every
    stratum (and the whole set) gets the fraction ``f = val_fraction`` up to one patient.

    Returns a copy of ``table`` with a column ``split`` in {"train", "val"}.
    """
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction!r}")
    missing = {"patient", "label"} - set(table.columns)
    if missing:
        raise ValueError(f"table: missing columns {sorted(missing)}")
    rng = np.random.default_rng(seed)
    per_patient = table.groupby("patient", sort=True)["label"].agg(["size", "sum"])
    order = []
    for _, stratum in per_patient.groupby(["size", "sum"], sort=True):
        order.extend(stratum.index[rng.permutation(len(stratum))])
    position = np.arange(len(order))
    is_val = np.floor((position + 1) * val_fraction) > np.floor(position * val_fraction)
    val_patients = {patient for patient, val in zip(order, is_val) if val}
    out = table.copy()
    out["split"] = np.where(out["patient"].isin(val_patients), "val", "train")
    return out


def write_split(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write the split (:data:`SPLIT_COLUMNS`: image, path, level, label, patient, eye, split) as CSV, atomically."""
    missing = set(SPLIT_COLUMNS) - set(table.columns)
    if missing:
        raise ValueError(f"table: missing columns {sorted(missing)} (run patient_split first)")
    return atomic_write_csv(path, table[SPLIT_COLUMNS])


def read_split(path: str | os.PathLike) -> pd.DataFrame:
    """Read a split CSV written by :func:`write_split`; DatasetError naming the file if malformed."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, "split file not found")
    frame = pd.read_csv(path, dtype={"image": str, "patient": str, "eye": str, "split": str})
    missing = set(SPLIT_COLUMNS) - set(frame.columns)
    if missing:
        raise DatasetError(path, f"missing columns {sorted(missing)}")
    if not frame["split"].isin(["train", "val"]).all():
        raise DatasetError(path, "column 'split' must hold only 'train' or 'val'")
    return frame
