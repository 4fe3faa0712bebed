"""Hand-made run folders and ground truth for the localization-evaluation tests.

A 32×32 scene whose metric values can be checked by hand (row, column):

image001
  hard_exudates  a 3×3 block rows/cols 5–7 (9 px) and a single pixel (20, 20)  -> 2 lesions, 10 px
  soft_exudates  a 2×2 block rows 25–26, cols 5–6                              -> 1 lesion
  hemorrhages    none
  red_small_dots (10, 25) and (11, 26): diagonal neighbours                     -> 1 lesion (8-connected)
  FGVis-like importance: 1.0 at (6, 6) (inside the block), 0.5 at (20, 22) (2 px from the single
  pixel), 0.5 at (0, 31) (far from everything), 0.01 elsewhere (< 4 % of the max: not detected).
image002
  no lesion; importance 1.0 on a 2×2 block rows 15–16, cols 15–16 -> one false-positive component.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from retina_fgvis.runs import RunFolder, RunKind
from retina_fgvis._io import atomic_save_npz, atomic_write_json, atomic_write_png
from retina_fgvis.datasets import LESION_TYPES
from retina_fgvis.datasets.diaretdb1 import FundusSample
from retina_fgvis.viz import overlay_lesions, thumbnail

SIZE = 32


def _lesions(**marked: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    masks = {t: np.zeros((SIZE, SIZE), bool) for t in LESION_TYPES}
    for lesion_type, pixels in marked.items():
        for row, col in pixels:
            masks[lesion_type][row, col] = True
    return masks


def _block(rows: range, cols: range) -> list[tuple[int, int]]:
    return [(r, c) for r in rows for c in cols]


class FakeDiaretDB1:
    """In-memory stand-in with DiaretDB1's ``load(image_id, size=...)``."""

    def __init__(self, samples: dict[str, FundusSample]):
        self.samples = samples
        self.size = SIZE
        self.calls: list[tuple[str, int | None]] = []

    def load(self, image_id: str, size: int | None = None, graham: bool = False) -> FundusSample:
        self.calls.append((image_id, size))
        sample = self.samples[image_id]
        assert size in (None, sample.fov.shape[0])
        return sample


@pytest.fixture
def scene() -> FakeDiaretDB1:
    rng = np.random.default_rng(0)
    fov = np.ones((SIZE, SIZE), bool)
    image = rng.integers(40, 200, (SIZE, SIZE, 3), dtype=np.uint8)
    first = _lesions(
        hard_exudates=_block(range(5, 8), range(5, 8)) + [(20, 20)],
        soft_exudates=_block(range(25, 27), range(5, 7)),
        red_small_dots=[(10, 25), (11, 26)],
    )
    return FakeDiaretDB1({
        "image001": FundusSample("image001", image, fov, first),
        "image002": FundusSample("image002", image[::-1].copy(), fov, _lesions()),
    })


@pytest.fixture
def fgvis_maps() -> dict[str, np.ndarray]:
    first = np.full((SIZE, SIZE), 0.01, np.float32)
    first[6, 6], first[20, 22], first[0, 31] = 1.0, 0.5, 0.5
    second = np.zeros((SIZE, SIZE), np.float32)
    second[15:17, 15:17] = 1.0
    return {"image001": first, "image002": second}


@pytest.fixture
def blurry_maps() -> dict[str, np.ndarray]:
    """A wide Gaussian peaked on the soft exudate (image001) / the image centre (image002)."""
    rows, cols = np.mgrid[0:SIZE, 0:SIZE]
    bump = lambda r, c: np.exp(-((rows - r) ** 2 + (cols - c) ** 2) / (2 * 12.0**2)).astype(np.float32)
    return {"image001": bump(25.5, 5.5), "image002": bump(15.5, 15.5)}


def _make_run(folder: Path, method: str, maps: dict[str, np.ndarray], threshold: float = 0.04,
              dataset: FakeDiaretDB1 | None = None, failed: tuple[str, ...] = ()) -> Path:
    """Write a run folder in ``retina_fgvis.localize``'s layout (overlays only when ``dataset`` is given).

    FGVis images meet the stop rule (P(RDR) 0.05 < 0.10) except those in ``failed`` (they end at 0.6).
    """
    RunFolder(folder, RunKind.LOCALIZE).write_info({"method": method, "checkpoint": "model.pt", "dataset": "diaretdb1",
                            "data_dir": str(folder / "no-data"), "split": "test", "threshold": threshold})
    for index, (image_id, importance) in enumerate(maps.items()):
        out = folder / "images" / image_id
        binary = importance >= threshold * importance.max()
        atomic_save_npz(out / "maps.npz", importance=importance, binary=binary)
        success = None if method != "fgvis" else image_id not in failed
        atomic_write_json(out / "record.json", {
            "image_id": image_id, "method": method, "prob_before": 0.9 - 0.1 * index,
            "prob_after": 0.6 if image_id in failed else 0.05, "iterations": 500 if image_id in failed else 40 + index,
            "lam": 1e-10, "success": success, "stop_score": 0.1 if success is not None else None,
            "threshold": threshold, "seconds": 0.1})
        if dataset is not None:
            sample = dataset.samples[image_id]
            overlay = overlay_lesions(sample.image, sample.lesions, binary)
            atomic_write_png(out / "overlay.png", overlay)
            atomic_write_png(out / "overlay_thumb.png", thumbnail(overlay, 16))
    return folder


@pytest.fixture
def make_run():
    """Factory: ``make_run(folder, method, maps, threshold=0.04, dataset=None, failed=()) -> folder``."""
    return _make_run
