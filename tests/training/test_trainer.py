"""The trainer end to end on a 40-image, 48 px folder: files, metrics, learning, resume, determinism."""
import numpy as np
import pandas as pd
import pytest
import torch

from retina_fgvis.models.checkpoint import load_classifier, read_checkpoint
from retina_fgvis.models.fundus_cnn import FundusCNN
from training import TrainConfig, train
from training.handlers import METRIC_COLUMNS


@pytest.fixture(scope="module")
def finished_run(tiny_eyepacs, tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    return train(tiny_config(tiny_eyepacs, out, epochs=3))


def test_run_folder_holds_split_metrics_and_checkpoints(finished_run):
    out = finished_run.run_dir
    assert {p.name for p in out.iterdir()} == {"run.json", "split.csv", "metrics.csv", "best.pt", "last.pt"}
    metrics = pd.read_csv(out / "metrics.csv")
    assert list(metrics.columns) == list(METRIC_COLUMNS)
    assert metrics["epoch"].tolist() == [1, 2, 3]
    assert metrics["val_auc"].between(0, 1).all() and metrics["operating_point"].between(0, 1).all()
    split = pd.read_csv(out / "split.csv")
    assert set(split["split"]) == {"train", "val"} and len(split) == 40
    assert not set(split.loc[split["split"] == "train", "patient"]) & set(split.loc[split["split"] == "val", "patient"])
    assert finished_run.metrics == metrics.iloc[-1].to_dict() | {"epoch": 3}
    best = metrics.loc[metrics["val_auc"].idxmax()]
    assert finished_run.best_metrics["epoch"] == best["epoch"]


def test_checkpoints_rebuild_the_model_with_everything_needed(finished_run):
    last = read_checkpoint(finished_run.last_checkpoint)
    assert last["epoch"] == 3 and last["optimizer"] is not None and last["extra"]["scheduler"]["last_epoch"] == 3
    assert last["config"]["width"] == 4 and last["config"]["dataset"] == "eyepacs"
    clf = load_classifier(finished_run.best_checkpoint)
    meta = clf.meta
    assert meta["image_size"] == 48 and len(meta["mean"]) == len(meta["std"]) == 3
    assert meta["operating_point"] == finished_run.best_metrics["operating_point"]
    assert read_checkpoint(finished_run.best_checkpoint)["epoch"] == finished_run.best_metrics["epoch"]


def test_the_trained_model_fits_the_training_images_better_than_its_initialisation(finished_run):
    """The loss falls: cross-entropy on the training split, trained weights vs the seeded initial ones."""
    from retina_fgvis.datasets.fundus import load_fundus

    clf = load_classifier(finished_run.last_checkpoint)
    split = pd.read_csv(finished_run.run_dir / "split.csv")
    train_rows = split[split["split"] == "train"]
    x = clf.prepare(np.stack([load_fundus(p, size=48)[0] for p in train_rows["path"]]))
    y = torch.tensor(train_rows["label"].to_numpy())
    torch.manual_seed(0)
    initial = FundusCNN(width=4).eval()
    with torch.no_grad():
        before = torch.nn.functional.cross_entropy(initial(x), y).item()
        after = torch.nn.functional.cross_entropy(clf.model(x), y).item()
    assert after < 0.8 * before
    assert finished_run.best_metrics["val_auc"] >= 0.9


def test_resume_continues_at_the_next_epoch_and_matches_an_uninterrupted_run(tiny_eyepacs, tiny_config, tmp_path,
                                                                            finished_run):
    out = tmp_path / "resumed"
    first = train(tiny_config(tiny_eyepacs, out, epochs=1))
    assert first.epochs_run == 1
    row_1 = pd.read_csv(out / "metrics.csv").iloc[0].to_dict()
    # Only the epoch count (and runtime settings) come from the new config; the rest from the run.
    second = train(TrainConfig(out=out, resume=True, epochs=3, progress=False, device="cpu"))
    assert second.epochs_run == 2
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2, 3]
    assert metrics.iloc[0].to_dict() == row_1
    # Seeded per epoch: the resumed run ends with the uninterrupted run's weights and metrics.
    resumed = read_checkpoint(out / "last.pt")["model"]
    straight = read_checkpoint(finished_run.last_checkpoint)["model"]
    for key, value in straight.items():
        torch.testing.assert_close(resumed[key], value, msg=key)
    reference = pd.read_csv(finished_run.run_dir / "metrics.csv")
    np.testing.assert_allclose(metrics["val_auc"], reference["val_auc"])
    # Resuming a finished run trains nothing and keeps its files.
    again = train(TrainConfig(out=out, resume=True, progress=False, device="cpu"))
    assert again.epochs_run == 0 and again.metrics["epoch"] == 3
