"""EyePACS labels, one-to-one matching with the image files, and the patient-level split."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fundus_files import fundus_array, write_image

from retina_fgvis.datasets import DatasetError, load_eyepacs_table, patient_split, read_split, write_split


def test_table_reads_train_and_solution_files(eyepacs_root):
    table = load_eyepacs_table(eyepacs_root)
    assert list(table.columns) == ["image", "path", "level", "label", "patient", "eye"]
    assert len(table) == 10
    row = table.set_index("image").loc["13_right"]
    assert (row.level, row.label, row.patient, row.eye) == (3, 1, "13", "right")
    assert row.path.endswith("train/13_right.jpeg")
    assert table.set_index("image").loc["1_right", "path"].endswith("test/1_right.jpeg")
    assert table["label"].tolist() == [int(level >= 2) for level in table["level"]]
    strict = load_eyepacs_table(eyepacs_root, rdr_threshold=3)
    assert strict.set_index("image").loc["13_left", "label"] == 0


def test_table_without_solution_file_reads_train_only(eyepacs_root):
    (eyepacs_root / "retinopathy_solution.csv").unlink()
    table = load_eyepacs_table(eyepacs_root)  # test/ is not scanned without its labels
    assert len(table) == 6 and not table["path"].str.contains("/test/").any()


def _error(root, **kwargs) -> str:
    with pytest.raises(DatasetError) as caught:
        load_eyepacs_table(root, **kwargs)
    return str(caught.value)


def test_label_row_without_image(eyepacs_root):
    (eyepacs_root / "train" / "15_left.jpeg").unlink()
    message = _error(eyepacs_root)
    assert "trainLabels.csv" in message and "15_left" in message and "no file" in message


def test_image_without_label(eyepacs_root):
    extra = write_image(eyepacs_root / "train" / "99_left.jpeg", fundus_array())
    assert str(extra) in _error(eyepacs_root)


def test_unknown_level(eyepacs_root):
    csv = eyepacs_root / "trainLabels.csv"
    csv.write_text(csv.read_text().replace("15_left,1", "15_left,7"))
    message = _error(eyepacs_root)
    assert str(csv) in message and "unknown level '7'" in message and "line 6" in message


@pytest.mark.parametrize("where", ["same file", "across files", "two image files"])
def test_duplicate_ids(eyepacs_root, where):
    train_csv, solution_csv = eyepacs_root / "trainLabels.csv", eyepacs_root / "retinopathy_solution.csv"
    if where == "same file":
        train_csv.write_text(train_csv.read_text() + "10_left,0\n")
        named = train_csv
    elif where == "across files":
        solution_csv.write_text(solution_csv.read_text() + "10_left,0,Public\n")
        named = solution_csv
    else:
        named = write_image(eyepacs_root / "10_left.png", fundus_array())
    message = _error(eyepacs_root)
    assert str(named) in message and "duplicate" in message and "10_left" in message


def test_empty_folder_missing_labels_and_malformed_ids(tmp_path, eyepacs_root):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "trainLabels.csv").write_text("image,level\n10_left,0\n")
    assert "no images" in _error(empty) and str(empty) in _error(empty)
    (empty / "trainLabels.csv").unlink()
    assert "label file not found" in _error(empty)
    assert "dataset folder not found" in _error(tmp_path / "nowhere")
    csv = eyepacs_root / "trainLabels.csv"
    csv.write_text(csv.read_text().replace("13_left", "13-left"))
    assert "is not '<patient>_<left|right>'" in _error(eyepacs_root)
    with pytest.raises(ValueError, match="rdr_threshold"):
        load_eyepacs_table(eyepacs_root, rdr_threshold=7)


def _big_table(n_patients: int = 300, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(n_patients):
        base = rng.choice(5, p=[0.6, 0.1, 0.15, 0.1, 0.05])
        for eye in ("left", "right"):
            level = int(np.clip(base + rng.choice([-1, 0, 0, 1]), 0, 4))
            rows.append({"image": f"{patient}_{eye}", "path": "", "level": level, "label": int(level >= 2),
                         "patient": str(patient), "eye": eye})
    return pd.DataFrame(rows)


def test_patient_split_keeps_patients_together_stratified_and_seeded(tmp_path):
    table = _big_table()
    split = patient_split(table, val_fraction=0.2, seed=0)
    sides = split.groupby("patient")["split"].nunique()
    assert (sides == 1).all()  # no patient on both sides
    val = split[split["split"] == "val"]
    assert abs(val["patient"].nunique() / table["patient"].nunique() - 0.2) <= 0.01
    assert abs(val["label"].mean() - table["label"].mean()) < 0.03  # stratified by label
    assert split["split"].equals(patient_split(table, seed=0)["split"])
    assert not split["split"].equals(patient_split(table, seed=1)["split"])
    path = write_split(split, tmp_path / "split.csv")
    again = read_split(path)
    assert again["image"].tolist() == split["image"].tolist() and again["split"].tolist() == split["split"].tolist()
    with pytest.raises(ValueError, match="val_fraction"):
        patient_split(table, val_fraction=1.0)
    with pytest.raises(ValueError, match="split"):
        write_split(table, tmp_path / "no_split.csv")


def test_patient_split_on_a_real_layout(eyepacs_root):
    split = patient_split(load_eyepacs_table(eyepacs_root), val_fraction=0.4, seed=3)
    assert (split.groupby("patient")["split"].nunique() == 1).all()
    assert set(split["split"]) == {"train", "val"}
