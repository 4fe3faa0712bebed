"""Checkpoints: round trip, preprocessing, and one CheckpointError per kind of bad file."""
import numpy as np
import pytest
import torch

from retina_fgvis.models.checkpoint import CheckpointError, load_classifier, save_checkpoint
from retina_fgvis.models.fundus_cnn import FundusCNN

META = {"image_size": 32, "mean": [0.4, 0.3, 0.2], "std": [0.2, 0.15, 0.1], "operating_point": 0.4}


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = FundusCNN(width=4, dropout=0.25)
    model.train()(torch.randn(4, 3, 32, 32))  # move the batch-norm statistics away from their defaults
    model.eval()
    path = save_checkpoint(tmp_path / "model.pt", model, META, epoch=3, config={"lr": 0.1},
                           metrics={"val_auc": 0.9})
    return path, model


def test_round_trip_gives_the_same_outputs(saved):
    path, model = saved
    clf = load_classifier(path)
    x = torch.randn(2, 3, 32, 32)
    assert not clf.model.training
    assert clf.model.arch_kwargs == {"width": 4, "num_classes": 2, "in_channels": 3, "dropout": 0.25,
                                     "layout": "plain", "activation": "leaky_relu", "batch_norm": True,
                                     "downsample": "pool"}
    with torch.no_grad():
        torch.testing.assert_close(clf.model(x), model(x))
    assert clf.meta["arch"] == "FundusCNN" and clf.meta["image_size"] == 32
    assert clf.meta["class_names"] == ["non-RDR", "RDR"] and clf.meta["positive_class"] == 1
    assert clf.meta["operating_point"] == 0.4 and clf.meta["graham"] is False
    assert clf.checkpoint["epoch"] == 3 and clf.checkpoint["metrics"] == {"val_auc": 0.9}
    assert clf.normalization == ((0.4, 0.3, 0.2), (0.2, 0.15, 0.1))


def test_prepare_standardises_uint8_images(saved):
    clf = load_classifier(saved[0])
    images = np.full((2, 32, 32, 3), 102, np.uint8)  # 102/255 = 0.4
    x = clf.prepare(images)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.float32
    expected = (0.4 - np.array(META["mean"])) / np.array(META["std"])
    torch.testing.assert_close(x[:, :, 0, 0], torch.tensor(np.stack([expected] * 2), dtype=torch.float32))
    assert clf.prepare(images[0]).shape == (1, 3, 32, 32)
    probs = clf.predict_proba(images)
    assert probs.shape == (2,) and np.all((probs >= 0) & (probs <= 1))
    with pytest.raises(ValueError, match=r"images: expected uint8 RGB images of 32×32×3"):
        clf.prepare(np.zeros((1, 64, 64, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        clf.prepare(images.astype(np.float32))


def test_failed_save_keeps_the_previous_file(saved):
    path, model = saved
    before = path.read_bytes()
    with pytest.raises(ValueError, match="meta: missing"):
        save_checkpoint(path, model, {"image_size": 32})
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]


def test_checkpoint_from_before_layouts_loads_the_o_o_network(tmp_path):
    torch.manual_seed(0)
    model = FundusCNN(width=4, layout="o_O").eval()
    path = save_checkpoint(tmp_path / "old.pt", model, META)
    payload = torch.load(path, weights_only=False)
    payload["arch_kwargs"] = {key: payload["arch_kwargs"][key] for key in ("width", "num_classes", "in_channels",
                                                                           "dropout")}
    torch.save(payload, path)
    clf = load_classifier(path)
    assert clf.model.arch_kwargs["layout"] == "o_O"
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clf.model(x), model(x))


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such file"):
        load_classifier(tmp_path / "nope.pt")


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file_names_the_file(saved, damage):
    path = saved[0]
    data = b"not a checkpoint at all" if damage == "garbage" else path.read_bytes()[:2000]
    path.write_bytes(data)
    with pytest.raises(CheckpointError, match=rf"{path.name}: not a readable checkpoint"):
        load_classifier(path)


def _edit(path, **changes):
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del payload[key]
    torch.save(payload, path)


def test_other_architecture(saved):
    path = saved[0]
    _edit(path, arch="ResNet50")
    with pytest.raises(CheckpointError, match=r"architecture 'ResNet50' is not one of \['FundusCNN'\]"):
        load_classifier(path)


def test_weights_of_another_shape(saved):
    path = saved[0]
    _edit(path, arch_kwargs={"width": 8, "num_classes": 2, "in_channels": 3, "dropout": 0.25})
    with pytest.raises(CheckpointError, match=r"model\.pt: weights do not fit FundusCNN"):
        load_classifier(path)


def test_missing_keys(saved):
    path = saved[0]
    _edit(path, meta=None)
    with pytest.raises(CheckpointError, match=r"missing \['meta'"):
        load_classifier(path)


def test_plain_state_dict_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save(FundusCNN(width=4).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a retina-fgvis checkpoint"):
        load_classifier(path)


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_non_finite_weights_are_refused_at_load_and_never_saved(saved, tmp_path):
    path, model = saved
    payload = torch.load(path, weights_only=True)
    payload["model"]["head.2.weight"] = torch.full_like(payload["model"]["head.2.weight"], float("nan"))
    torch.save(payload, tmp_path / "nan.pt")
    with pytest.raises(CheckpointError, match=r"nan.pt: weight head.2.weight holds NaN or inf"):
        load_classifier(tmp_path / "nan.pt")
    before = path.read_bytes()
    with torch.no_grad():
        next(model.parameters()).fill_(float("inf"))
    with pytest.raises(ValueError, match="holds NaN or inf; not saved"):
        save_checkpoint(path, model, META)
    assert path.read_bytes() == before


def test_garbage_file_error_is_one_line(tmp_path):
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x04not a pickle at all" * 10)
    with pytest.raises(CheckpointError) as error:
        load_classifier(tmp_path / "garbage.pt")
    assert "garbage.pt" in str(error.value) and "\n" not in str(error.value)
