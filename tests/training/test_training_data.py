"""Split, normalisation, transforms, operating point and settings of the trainer."""
import numpy as np
import pytest
import torch

from retina_fgvis.training import DATASET_DEFAULTS, TrainConfig
from retina_fgvis.training.data import compute_normalization, make_transforms, prepare_split
from retina_fgvis.training.handlers import youden_operating_point


def test_youden_operating_point():
    probs = np.array([0.1, 0.2, 0.35, 0.4, 0.6, 0.7, 0.8, 0.9])
    labels = np.array([0, 0, 1, 0, 1, 1, 0, 1])
    threshold, sensitivity, specificity = youden_operating_point(probs, labels)
    # J is highest calling p >= 0.35 positive (sens 1, spec 0.5) or p >= 0.6 (sens 0.75, spec 0.75).
    assert threshold == pytest.approx(0.275) and (sensitivity, specificity) == (1.0, 0.5)
    assert youden_operating_point([0.2, 0.9], [0, 1]) == (pytest.approx(0.55), 1.0, 1.0)
    with pytest.raises(ValueError, match="both classes"):
        youden_operating_point([0.2, 0.9], [1, 1])


def test_split_is_by_patient_with_absolute_paths(tiny_eyepacs, tiny_config, tmp_path):
    split = prepare_split(tiny_config(tiny_eyepacs, tmp_path / "out").resolved())
    assert list(split.columns) == ["image", "path", "level", "label", "patient", "eye", "split"]
    assert (split["split"] == "val").sum() == 8 and split["path"].map(lambda p: p.startswith("/")).all()
    assert split.groupby("split")["label"].nunique().to_dict() == {"train": 2, "val": 2}


def test_normalization_statistics_match_the_images(tiny_eyepacs):
    paths = sorted(str(p) for p in (tiny_eyepacs / "train").glob("*.png"))
    mean, std = compute_normalization(paths, size=48, graham=False, n=len(paths), seed=0)
    from retina_fgvis.datasets.fundus import load_fundus

    pixels = np.concatenate([load_fundus(p, 48)[0].reshape(-1, 3) for p in paths]) / 255.0
    np.testing.assert_allclose(mean, pixels.mean(0), rtol=1e-6)
    np.testing.assert_allclose(std, pixels.std(0), rtol=1e-6)


def test_transforms_standardise_and_augment(tiny_eyepacs):
    path = str(tiny_eyepacs / "train" / "1_left.png")
    mean, std = [0.3, 0.2, 0.1], [0.2, 0.2, 0.2]
    plain = make_transforms(48, mean, std, train=False)({"image": path, "label": 1})
    assert type(plain["image"]) is torch.Tensor and plain["image"].shape == (3, 48, 48)
    from retina_fgvis.datasets.fundus import load_fundus

    expected = (torch.from_numpy(load_fundus(path, 48)[0]).permute(2, 0, 1) / 255.0
                - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(plain["image"], expected)
    augment = make_transforms(48, mean, std, train=True)
    augment.set_random_state(seed=1)
    first = augment({"image": path, "label": 1})["image"]
    second = augment({"image": path, "label": 1})["image"]
    assert first.shape == (3, 48, 48) and not torch.equal(first, second)


def test_config_defaults_per_dataset():
    config = TrainConfig(dataset="synthetic", data_dir="d", out="x").resolved()
    assert {key: getattr(config, key) for key in DATASET_DEFAULTS["synthetic"]} == DATASET_DEFAULTS["synthetic"]
    eyepacs = TrainConfig(dataset="eyepacs", data_dir="d", out="x", width=16).resolved()
    assert eyepacs.image_size == 512 and eyepacs.width == 16
    assert TrainConfig.from_dict(config.to_dict()).resolved() == config


def test_runs_recorded_before_the_class_weights_choice_read_as_class_balanced():
    stored = TrainConfig(dataset="synthetic", data_dir="d", out="x").to_dict()
    assert stored["class_weights"] == "none"  # the default
    del stored["class_weights"]
    assert TrainConfig.from_dict(stored).class_weights == "balanced"
