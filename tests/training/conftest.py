"""Tiny EyePACS-layout folders written by the tests: discs with (RDR) or without bright lesions."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

SIZE = 48


def write_eyepacs(root: Path, levels: list[int], size: int = SIZE, seed: int = 0) -> Path:
    """``root/trainLabels.csv`` + ``root/train/{i}_left.png``: a reddish disc; level >= 2 adds large
    yellow spots so a tiny network separates the classes in a few steps. One eye per patient."""
    rng = np.random.default_rng(seed)
    (root / "train").mkdir(parents=True, exist_ok=True)
    rows = ["image,level"]
    for index, level in enumerate(levels):
        image = np.zeros((size, size, 3), np.uint8)
        cv2.circle(image, (size // 2, size // 2), size // 2 - 1, (int(rng.integers(120, 170)), 60, 30), -1)
        if level >= 2:
            for _ in range(3):
                x, y = (int(v) for v in rng.integers(size // 4, 3 * size // 4, 2))
                cv2.circle(image, (x, y), max(2, size // 12), (240, 230, 80), -1)
        cv2.imwrite(str(root / "train" / f"{index}_left.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        rows.append(f"{index}_left,{level}")
    (root / "trainLabels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="session")
def eyepacs_writer():
    """The function :func:`write_eyepacs`."""
    return write_eyepacs


@pytest.fixture(scope="session")
def tiny_eyepacs(tmp_path_factory) -> Path:
    """40 images, half RDR (levels 0 and 3), 48 px."""
    return write_eyepacs(tmp_path_factory.mktemp("eyepacs"), [0, 3] * 20)


@pytest.fixture(scope="session")
def tiny_config():
    """Factory ``tiny_config(data_dir, out, **overrides)``: a seconds-long CPU configuration of the real trainer."""
    return make_tiny_config


def make_tiny_config(data_dir: Path, out: Path, **overrides):
    from retina_fgvis.training import TrainConfig

    settings = dict(dataset="eyepacs", data_dir=data_dir, out=out, epochs=2, image_size=SIZE, width=4,
                    batch_size=8, lr=3e-3, device="cpu", progress=False, norm_samples=8)
    settings.update(overrides)
    return TrainConfig(**settings)

