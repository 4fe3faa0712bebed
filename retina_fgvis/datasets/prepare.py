"""One-off preprocessing of a whole EyePACS folder: FOV crop, square, resize, optional Graham.

``prepare_eyepacs(SRC, DST)`` mirrors the layout of SRC (``SRC/x.jpeg``, ``SRC/train/x.jpeg``,
``SRC/test/x.jpeg`` -> the same place under DST, as PNG) so that
:func:`~retina_fgvis.datasets.eyepacs.load_eyepacs_table` reads DST exactly like SRC. It

* runs in parallel worker processes with a progress bar;
* writes every image atomically and skips images whose output already exists, so a run that was
  interrupted (Ctrl-C, a killed job) is finished by running the same command again; temporary files
  left by a killed run are removed;
* lists unreadable images in ``DST/failures.csv`` (image, path, error), skips them, and leaves them
  out of the label files copied to DST;
* records its settings in ``DST/prepare.json`` and refuses to mix settings in one DST.
"""
from __future__ import annotations

import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import pandas as pd

from retina_fgvis._io import atomic_write_csv, atomic_write_png, locked_folder, remove_temporaries
from retina_fgvis.checks import check_int
from retina_fgvis.datasets.errors import DatasetError
from retina_fgvis.datasets.eyepacs import LABELS_CSV, SOLUTION_CSV, _read_levels, find_images
from retina_fgvis.datasets.fundus import load_fundus
from retina_fgvis.runs import RunFolder, RunKind

SETTINGS_FILE = "prepare.json"
FAILURES_FILE = "failures.csv"


@dataclass(frozen=True)
class PrepareSummary:
    """What one :func:`prepare_eyepacs` call did."""

    dst: Path
    total: int  # images found in SRC
    written: int  # prepared by this call
    skipped: int  # already prepared by an earlier call
    failed: int  # unreadable, listed in failures_csv
    failures_csv: Path
    seconds: float

    def __str__(self) -> str:
        return (f"{self.total} images: {self.written} prepared, {self.skipped} already done, "
                f"{self.failed} failed (listed in {self.failures_csv}) in {self.seconds:.1f} s -> {self.dst}")


def prepare_eyepacs(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    size: int = 512,
    graham: bool = False,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareSummary:
    """Crop every EyePACS image of ``src`` to its field of view, square it, resize it to ``size``
    (and Graham-normalise it when ``graham``), writing PNGs into the same layout under ``dst``.

    ``workers``: worker processes (None: one per CPU; 0 or 1: in this process).
    Raises DatasetError/ValueError only for problems of the whole run (no images, settings that
    differ from an earlier run into ``dst``); unreadable images are listed and skipped.
    """
    check_int("size", size, minimum=8)
    check_int("workers", workers, minimum=0, allow_none=True)
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DatasetError(src, "source folder not found")
    if src.resolve() == dst.resolve():
        raise ValueError(f"dst: must differ from src ({src})")
    started = time.perf_counter()
    images = find_images([src, src / "train", src / "test"])
    if not images:
        raise DatasetError(src, "no images (*.jpeg, *.jpg, *.png) here or in train/, test/")
    # Label files are copied: a bad one is refused before any image is written.
    for name in (LABELS_CSV, SOLUTION_CSV):
        if (src / name).is_file():
            _read_levels(src / name)
    settings = {"source": str(src.resolve()), "size": size, "graham": bool(graham), "format": "png"}
    record = RunFolder(dst, RunKind.PREPARE, record=SETTINGS_FILE, name="dst")
    with locked_folder(dst, name="dst") as lock:
        # A destination of another size or normalisation would mix two preparations; one of the same
        # settings resumes. The folder may hold other files (e.g. the user's own notes).
        record.claim(settings, exclusive=False)
        record.write_info(settings)
        return _prepare(src, dst, images, graham, size, workers, progress, lock, started)


def _prepare(src: Path, dst: Path, images: dict[str, Path], graham: bool, size: int, workers: int | None,
             progress: bool, lock, started: float) -> PrepareSummary:

    tasks = []
    skipped = 0
    for image_id, path in sorted(images.items()):
        out = dst / path.relative_to(src).with_suffix(".png")
        if out.is_file():
            skipped += 1
        else:
            tasks.append((image_id, str(path), str(out), size, bool(graham)))
    for folder in {Path(task[2]).parent for task in tasks}:
        remove_temporaries(folder, lock)

    from retina_fgvis.runtime import progress_bar  # imported here: it pulls in torch, which workers do not need

    failures = []
    with progress_bar() as bar:
        task_id = bar.add_task("preparing", total=len(images), completed=skipped, status="", visible=progress)
        for image_id, path, error in _run(tasks, workers):
            if error is not None:
                failures.append({"image": image_id, "path": path, "error": error})
                bar.update(task_id, status=f"[red]{len(failures)} failed")
            bar.advance(task_id)

    failures_csv = atomic_write_csv(dst / FAILURES_FILE, pd.DataFrame(failures, columns=["image", "path", "error"]))
    failed_ids = {row["image"] for row in failures}
    for name in (LABELS_CSV, SOLUTION_CSV):
        if (src / name).is_file():
            labels = pd.read_csv(src / name, dtype=str, keep_default_na=False)
            if "image" in labels.columns:
                labels = labels[~labels["image"].str.strip().isin(failed_ids)]
            atomic_write_csv(dst / name, labels)
    return PrepareSummary(dst, len(images), len(tasks) - len(failures), skipped, len(failures), failures_csv,
                          time.perf_counter() - started)


def _run(tasks: list[tuple], workers: int | None) -> Iterator[tuple[str, str, str | None]]:
    """Results of :func:`_prepare_one` for ``tasks``, in order, in this process or a pool."""
    if workers in (0, 1) or len(tasks) <= 1:
        yield from map(_prepare_one, tasks)
        return
    # Workers fork from a fresh server process: forking this (multi-threaded: OpenCV, torch, the progress
    # bar) process can deadlock the children. The server imports this module once for all of them.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    with ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        try:
            yield from pool.map(_prepare_one, tasks, chunksize=max(1, min(16, len(tasks) // (4 * (workers or os.cpu_count() or 1)))))
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one image per process; avoid oversubscribing the cores


def _prepare_one(task: tuple) -> tuple[str, str, str | None]:
    """Prepare one image; returns (image id, source path, error message or None)."""
    image_id, path, out, size, graham = task
    try:
        image, _ = load_fundus(path, size=size, graham=graham)
        atomic_write_png(out, image)
    except (ValueError, OSError, cv2.error) as error:
        return image_id, path, str(error)
    return image_id, path, None
