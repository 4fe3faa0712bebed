"""Dataset fixtures written by the tests in the real on-disk formats (small images, no downloads)."""
from __future__ import annotations

from pathlib import Path

import pytest
from fundus_files import fundus_array, write_image


@pytest.fixture
def eyepacs_root(tmp_path: Path) -> Path:
    """Kaggle layout: trainLabels.csv + train/*.jpeg, retinopathy_solution.csv + test/*.jpeg (5 patients)."""
    root = tmp_path / "eyepacs"
    train = {"10_left": 0, "10_right": 0, "13_left": 2, "13_right": 3, "15_left": 1, "15_right": 4}
    test = {"1_left": 0, "1_right": 2, "3_left": 0, "3_right": 0}
    for index, image_id in enumerate(train):
        write_image(root / "train" / f"{image_id}.jpeg", fundus_array(seed=index))
    for index, image_id in enumerate(test):
        write_image(root / "test" / f"{image_id}.jpeg", fundus_array(seed=10 + index))
    (root / "trainLabels.csv").write_text("image,level\n" + "".join(f"{k},{v}\n" for k, v in train.items()))
    (root / "retinopathy_solution.csv").write_text(
        "image,level,Usage\n" + "".join(f"{k},{v},{'Public' if i % 2 else 'Private'}\n" for i, (k, v) in enumerate(test.items()))
    )
    return root
