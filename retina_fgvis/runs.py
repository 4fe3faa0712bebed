"""Run folders: the one owner of their on-disk protocol (documented in docs/run-folders.md).

Every command that writes a folder of results records it in a *run record*, ``run.json`` unless a
folder holds several records (``prepare.json`` in a prepared dataset, ``<study>_run.json`` per study)::

    {"kind": "localize", "format_version": 1, "config": {...}, "environment": {...}}

``kind`` names the command (:class:`RunKind`); ``config`` is everything that decides the results, so a
rerun with the same config resumes (or rewrites the same results) and one with another config is
refused, naming the differing settings. Records of this release written before ``kind`` existed
(``{"config": ..., "environment": ...}``) still read: their kind is inferred from the config.

Runs made of items (localize's images) keep one folder per item, ``images/<id>/``, whose
``record.json`` is written last and atomically: an item is finished exactly when its record exists,
and the run is complete when every item its config lists (``image_ids``) is finished.
"""
from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from retina_fgvis._io import (FolderLock, _finite, _json_default, atomic_save_npz, atomic_write_json,
                              environment_info, is_housekeeping, locked_folder, remove_temporaries)

__all__ = ["FORMAT_VERSION", "RUN_RECORD", "ITEM_RECORD", "RunFolder", "RunFolderError", "RunInfo", "RunKind",
           "claim_study", "read_info"]

#: Version of the run record. Version 0: no ``kind``/``format_version`` keys (read, never written).
FORMAT_VERSION = 1
RUN_RECORD = "run.json"
ITEM_RECORD = "record.json"
ITEM_MAPS = "maps.npz"
ITEMS = "images"
#: The config key listing a run's items (its completeness rule).
ITEMS_KEY = "image_ids"
#: Seconds a shard waits for another shard to finish claiming the folder (checking or writing its record).
CLAIM_TIMEOUT = 30.0


class RunKind(str, Enum):
    """The command that wrote a run folder."""

    TRAIN = "train"
    PREPARE = "prepare"
    SYNTHETIC = "synthetic"
    LOCALIZE = "localize"
    EXPLAIN = "explain"
    STUDY = "study"
    DIAGNOSE = "diagnose"


class RunFolderError(ValueError):
    """A run folder (or one of its files) is missing, unreadable or not what the caller needs."""


@dataclass(frozen=True)
class RunInfo:
    """A run record read back: ``kind`` (inferred for version 0), ``format_version``, ``config``, ``environment``."""

    kind: str | None
    format_version: int
    config: dict[str, Any]
    environment: dict[str, Any]


def _legacy_kind(record_name: str, config: Mapping[str, Any]) -> str | None:
    """The kind of a version-0 record, from what its config holds."""
    if record_name == "prepare.json":
        return RunKind.PREPARE.value
    if record_name == "synthetic.json":
        return RunKind.SYNTHETIC.value
    if config.get("task") == "train":
        return RunKind.TRAIN.value
    if "study" in config:
        return RunKind.STUDY.value
    if "method" in config:
        return RunKind.LOCALIZE.value
    if "game" in config and "images" in config:
        return RunKind.EXPLAIN.value
    return None


def _as_stored(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` as the record holds it once written (tuples as lists, paths as strings, NaN as null)."""
    return json.loads(json.dumps(_finite(dict(config)), default=_json_default))


@dataclass(frozen=True)
class RunFolder:
    """A folder of results written by the command ``kind``.

    Args:
        path: the folder.
        kind: :class:`RunKind` (or its value) of the command that writes it.
        record: file name of its run record (``run.json``; a folder holding several runs names one each).
        name: the argument that named the folder, for error messages (``out``, ``dst``, ``run``).
    """

    path: Path
    kind: str
    record: str = RUN_RECORD
    name: str = "out"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "kind", RunKind(self.kind).value)

    @classmethod
    def study(cls, out: str | os.PathLike, name: str) -> "RunFolder":
        """The record of study ``name`` in ``out`` (``<name>_run.json``: several studies may share a folder)."""
        return cls(out, RunKind.STUDY, record=f"{name}_run.json")

    @property
    def record_path(self) -> Path:
        return self.path / self.record

    # ------------------------------------------------------------------------------ the run record
    def read_info(self, *, required: bool = False) -> RunInfo | None:
        """The run record, ``None`` if there is none (:class:`RunFolderError` with ``required``)."""
        return read_info(self.record_path, required=required)

    def claim(self, config: Mapping[str, Any], *, ignore: tuple[str, ...] = (), exclusive: bool = True,
              upgrade: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None) -> bool:
        """Refuse this folder unless it can hold the run ``config`` describes (nothing is written here).

        The folder must be new, hold this kind's record with the same config on every key but
        ``ignore`` (then the run is resumed: returns True), or be empty of results (returns False).
        With ``exclusive=False`` the folder may hold other files (a dataset, other studies' records), but
        never another command's ``run.json``. ``upgrade`` turns the recorded config into the current form
        (a setting added since the record was written takes the value that run had). Raises
        :class:`RunFolderError` naming the folder and the differing settings, or the other command.
        """
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"{self.name}: {self.path} is a file, not a folder")
        foreign = self.path / RUN_RECORD
        if self.record != RUN_RECORD and foreign.is_file():
            other = read_info(foreign, required=False, strict=False)
            raise RunFolderError(f"{self.name}: {self.path} already holds a run ({RUN_RECORD}) of "
                                 f"{getattr(other, 'kind', None) or 'another command'}; choose another folder")
        info = read_info(self.record_path, required=False, strict=False)
        if info is False:
            raise RunFolderError(f"{self.name}: {self.record_path} is not a run record of this command; "
                                 f"choose another folder")
        if info is None:
            if exclusive and self.path.is_dir() and any(not is_housekeeping(entry) for entry in self.path.iterdir()):
                raise RunFolderError(f"{self.name}: {self.path} is not empty and holds no {self.record}; "
                                     f"choose an empty or new folder")
            return False
        if info.kind != self.kind:
            raise RunFolderError(f"{self.name}: {self.path} already holds a run ({self.record}) of "
                                 f"{info.kind or 'another command'}, not {self.kind}; choose another folder")
        wanted = _as_stored(config)
        previous = {key: value for key, value in info.config.items() if key != "task"}  # version 0's train kind
        if upgrade is not None:
            previous = _as_stored(upgrade(previous))
        differing = sorted(key for key in set(previous) | set(wanted)
                           if key not in ignore and previous.get(key) != wanted.get(key))
        if differing:
            shown = ", ".join(f"{key} {previous.get(key)!r} vs {wanted.get(key)!r}"
                              for key in differing if key not in (ITEMS_KEY, "images"))
            raise RunFolderError(f"{self.name}: {self.record_path} holds another run's results "
                                 f"({shown or 'different images'}); choose another folder or delete it")
        return True

    def write_info(self, config: Mapping[str, Any]) -> Path:
        """Write the run record: kind, format version, ``config`` and the library versions (atomic)."""
        return atomic_write_json(self.record_path, {"kind": self.kind, "format_version": FORMAT_VERSION,
                                                    "config": dict(config), "environment": environment_info()})

    @contextlib.contextmanager
    def writing(self, config: Mapping[str, Any], *, ignore: tuple[str, ...] = (), shard: tuple[int, int] | None = None,
                exclusive: bool = True, upgrade: Callable[[dict[str, Any]], Mapping[str, Any]] | None = None
                ) -> Iterator[FolderLock]:
        """Hold the folder (or one shard of it) for the ``with`` block, claimed for ``config`` and recorded.

        The claim and the record are made under the whole folder's lock, which shards take in turn
        (waiting up to :data:`CLAIM_TIMEOUT`); then each shard holds only its own lock, so shards of the same
        run write side by side and a second process for the same shard is refused.
        """
        scope = None if shard is None else f"shard-{shard[0]}-of-{shard[1]}"
        with locked_folder(self.path, scope=scope, name=self.name) as lock:
            with locked_folder(self.path, timeout=0 if shard is None else CLAIM_TIMEOUT, name=self.name):
                if not self.claim(config, ignore=ignore, exclusive=exclusive, upgrade=upgrade):
                    self.write_info(config)
            yield lock

    # ------------------------------------------------------------------------------------- items
    def item_dir(self, item_id: str) -> Path:
        return self.path / ITEMS / item_id

    def is_finished(self, item_id: str) -> bool:
        """Whether the item's ``record.json`` exists (it is written last)."""
        return (self.item_dir(item_id) / ITEM_RECORD).is_file()

    def finished_items(self) -> list[str]:
        """Sorted ids of the items with both their record and their maps."""
        items = self.path / ITEMS
        if not items.is_dir():
            return []
        return sorted(entry.name for entry in items.iterdir()
                      if (entry / ITEM_MAPS).is_file() and (entry / ITEM_RECORD).is_file())

    def is_complete(self) -> bool:
        """Whether every item the record lists (``image_ids``) is finished (all shards done)."""
        try:
            info = self.read_info(required=True)
            items = info.config[ITEMS_KEY]
        except (RunFolderError, KeyError):
            return False
        return all(self.is_finished(item_id) for item_id in items)

    def start_item(self, item_id: str, lock: FolderLock) -> Path:
        """The item's folder, cleared of the temporaries a killed writer left (only older than ``lock``)."""
        folder = self.item_dir(item_id)
        remove_temporaries(folder, lock)
        return folder

    def save_maps(self, item_id: str, **arrays: np.ndarray) -> Path:
        return atomic_save_npz(self.item_dir(item_id) / ITEM_MAPS, **arrays)

    def write_item_record(self, item_id: str, record: Mapping[str, Any]) -> Path:
        """Write the item's ``record.json``: last, so the item counts as finished only once all its files are."""
        return atomic_write_json(self.item_dir(item_id) / ITEM_RECORD, dict(record))

    def item_record(self, item_id: str) -> dict[str, Any]:
        return _read_object(self.item_dir(item_id) / ITEM_RECORD)

    def read_map(self, item_id: str, key: str) -> np.ndarray:
        """One array of the item's ``maps.npz`` (:class:`RunFolderError` naming the file if unreadable)."""
        path = self.item_dir(item_id) / ITEM_MAPS
        try:
            with np.load(path) as maps:
                return np.asarray(maps[key])
        except (OSError, ValueError, KeyError) as error:
            raise RunFolderError(f"{path}: cannot read {key!r} ({error})") from None

    def clean(self, lock: FolderLock) -> None:
        """Remove the temporaries a killed run left in the folder itself (not in its items)."""
        remove_temporaries(self.path, lock)


def claim_study(out_dir: str | os.PathLike | None, name: str, config: Mapping[str, Any]) -> RunFolder | None:
    """The record of study ``name`` in ``out_dir`` (``None``: the study writes nothing), claimed before any work:
    the same study with other settings is refused, not overwritten; other studies may share the folder."""
    if out_dir is None:
        return None
    record = RunFolder.study(out_dir, name)
    record.claim(config, exclusive=False)
    return record


def _read_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(f"{path}: file not found") from None
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(data, dict):
        raise RunFolderError(f"{path}: expected a JSON object")
    return data


def read_info(path: str | os.PathLike, *, required: bool = False, strict: bool = True):
    """Read the run record at ``path``: a :class:`RunInfo`, ``None`` when there is none (unless ``required``).

    A record that is not one (no ``config`` object) raises :class:`RunFolderError`, or with ``strict=False``
    gives ``False``.
    """
    path = Path(path)
    if not path.is_file():
        if required:
            raise RunFolderError(f"{path}: file not found")
        return None
    try:
        data = _read_object(path)
        if not isinstance(data.get("config"), dict):
            raise RunFolderError(f"{path}: not a run record (no 'config' object)")
    except RunFolderError:
        if strict:
            raise
        return False
    version = data.get("format_version", 0)
    kind = data.get("kind") if version else _legacy_kind(path.name, data["config"])
    return RunInfo(kind=kind, format_version=int(version), config=data["config"],
                   environment=data.get("environment") or {})
