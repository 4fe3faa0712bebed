"""Each bad input gives one clear ValueError before anything in the run folder changes."""
import pytest
import torch

from retina_fgvis.models.checkpoint import CheckpointError
from retina_fgvis.training import TrainConfig, train


@pytest.fixture(scope="module")
def done_run(tiny_eyepacs, tiny_config, tmp_path_factory):
    """A finished one-epoch run to misuse."""
    out = tmp_path_factory.mktemp("done") / "run"
    train(tiny_config(tiny_eyepacs, out, epochs=1))
    return out


def _fails_without_writing(config, match, snapshot, error=ValueError):
    out = config.out
    before = snapshot(out) if out.exists() else None
    with pytest.raises(error, match=match):
        train(config)
    assert (snapshot(out) if out.exists() else None) == before


def test_empty_training_set(tmp_path, tiny_config, snapshot):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "trainLabels.csv").write_text("image,level\n")
    _fails_without_writing(tiny_config(data, tmp_path / "out"), "trainLabels.csv: no label rows", snapshot)


def test_single_class_only(tmp_path, tiny_config, snapshot, eyepacs_writer):
    data = eyepacs_writer(tmp_path / "data", [0, 1] * 6)  # levels 0 and 1: all non-RDR
    _fails_without_writing(tiny_config(data, tmp_path / "out"), r"training split holds only class \[0\]", snapshot)


def test_folder_not_in_the_eyepacs_layout(tmp_path, tiny_config, snapshot):
    data = tmp_path / "photos"
    data.mkdir()
    (data / "holiday.png").write_bytes(b"")
    _fails_without_writing(tiny_config(data, tmp_path / "out"), r"trainLabels\.csv: label file not found", snapshot)


def test_missing_data_dir(tmp_path, tiny_config, snapshot):
    _fails_without_writing(tiny_config(tmp_path / "nowhere", tmp_path / "out"), "data_dir: .*nowhere is not a folder",
                           snapshot)


def test_out_holding_another_run_without_resume(done_run, tiny_eyepacs, tiny_config, snapshot):
    _fails_without_writing(tiny_config(tiny_eyepacs, done_run),
                           r"already holds a run \(metrics.csv, last.pt, best.pt\); pass --resume", snapshot)


def test_out_holding_another_commands_results(tmp_path, tiny_eyepacs, tiny_config, snapshot):
    out = tmp_path / "localized"
    out.mkdir()
    (out / "run.json").write_text('{"config": {"method": "fgvis"}}')
    _fails_without_writing(tiny_config(tiny_eyepacs, out), r"already holds a run \(run.json\)", snapshot)


def test_resume_without_a_checkpoint(tmp_path, snapshot):
    out = tmp_path / "empty"
    out.mkdir()
    _fails_without_writing(TrainConfig(out=out, resume=True, device="cpu"), "resume: .* holds no checkpoint last.pt",
                           snapshot)


def test_resume_from_a_corrupt_checkpoint(done_run, tmp_path, snapshot):
    out = tmp_path / "corrupt"
    out.mkdir()
    for name in ("run.json", "split.csv", "metrics.csv"):
        (out / name).write_bytes((done_run / name).read_bytes())
    (out / "last.pt").write_bytes((done_run / "last.pt").read_bytes()[:5000])
    _fails_without_writing(TrainConfig(out=out, resume=True, epochs=2, device="cpu"),
                           r"last\.pt: not a readable checkpoint", snapshot, CheckpointError)


def test_resume_from_a_checkpoint_of_another_architecture(done_run, tmp_path, snapshot):
    out = tmp_path / "foreign"
    out.mkdir()
    payload = torch.load(done_run / "last.pt", weights_only=True)
    payload["arch"] = "VGG16"
    torch.save(payload, out / "last.pt")
    _fails_without_writing(TrainConfig(out=out, resume=True, epochs=2, device="cpu"),
                           r"last\.pt: architecture 'VGG16' is not one of", snapshot, CheckpointError)


@pytest.mark.parametrize("field, value", [("dataset", "kaggle"), ("image_size", 16), ("epochs", 0), ("lr", -1.0),
                                          ("val_fraction", 1.0), ("width", 2.5), ("class_weights", "inverse")])
def test_bad_settings_name_the_setting(tmp_path, tiny_eyepacs, tiny_config, field, value):
    with pytest.raises(ValueError, match=field):
        train(tiny_config(tiny_eyepacs, tmp_path / "out", **{field: value}))
    assert not (tmp_path / "out").exists()


def test_eyepacs_needs_a_data_dir(tmp_path):
    with pytest.raises(ValueError, match="data_dir: --dataset eyepacs needs --data-dir"):
        train(TrainConfig(dataset="eyepacs", out=tmp_path / "out"))


@pytest.mark.parametrize("folder", ["eyepacs", "empty"])
def test_synthetic_training_only_reads_a_set_from_synth(tmp_path, tiny_eyepacs, snapshot, folder):
    data = tiny_eyepacs if folder == "eyepacs" else tmp_path / "empty"
    data.mkdir(exist_ok=True)
    before = snapshot(data)
    with pytest.raises(ValueError, match=r"no semi-synthetic set here \(no synthetic.json\); create one with "
                                         r"`retina-fgvis synth"):
        train(TrainConfig(dataset="synthetic", data_dir=data, out=tmp_path / "out", device="cpu"))
    assert snapshot(data) == before and not (tmp_path / "out").exists()


def test_synthetic_needs_a_data_dir(tmp_path):
    with pytest.raises(ValueError, match="data_dir: --dataset synthetic needs --data-dir"):
        train(TrainConfig(dataset="synthetic", out=tmp_path / "out"))


@pytest.mark.parametrize("settings, message", [({"layout": "deep"}, "layout"),
                                               ({"network_options": {"activation": "gelu"}}, "activation"),
                                               ({"network_options": {"depth": 3}}, "network_options")])
def test_bad_network_settings_are_refused_before_anything_is_written(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        train(TrainConfig(dataset="synthetic", data_dir=tmp_path / "data", out=tmp_path / "run", device="cpu",
                          progress=False, **settings))
    assert not (tmp_path / "run").exists()


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_eyepacs, tiny_config):
    out = tmp_path / "run"
    train(tiny_config(tiny_eyepacs, out, epochs=1))
    kept = {name: (out / name).read_bytes() for name in ("last.pt", "best.pt", "metrics.csv")}
    # Resumed with a learning rate no AdamW step survives: the weights overflow within the epoch.
    config = tiny_config(tiny_eyepacs, out, epochs=2, resume=True)
    payload = torch.load(out / "last.pt", weights_only=False)
    payload["optimizer"]["param_groups"][0]["lr"] = 1e30
    payload["extra"]["scheduler"]["base_lrs"] = [1e30]
    torch.save(payload, out / "last.pt")
    kept["last.pt"] = (out / "last.pt").read_bytes()
    with pytest.raises(ValueError, match=r"train: the run diverged in epoch 2: .* became NaN or inf .*"
                                         r"last.pt keeps epoch 1; train again with a lower --lr"):
        train(config)
    assert {name: (out / name).read_bytes() for name in kept} == kept


def test_a_diverging_learning_rate_from_the_start_saves_nothing(tmp_path, tiny_eyepacs, tiny_config):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"diverged in epoch 1: .*no checkpoint was written"):
        train(tiny_config(tiny_eyepacs, out, epochs=1, lr=1e30))
    assert not (out / "last.pt").exists() and not (out / "best.pt").exists()


@pytest.mark.parametrize("lr", [float("inf"), float("nan")])
def test_a_non_finite_learning_rate_is_refused(tmp_path, tiny_eyepacs, tiny_config, lr):
    with pytest.raises(ValueError, match="lr: expected a finite number > 0"):
        train(tiny_config(tiny_eyepacs, tmp_path / "run", lr=lr))
    assert not (tmp_path / "run").exists()
