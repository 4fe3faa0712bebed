"""Every writing command refuses another command's or another setting's run folder in one line, untouched."""
from __future__ import annotations

import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from retina_fgvis.cli import app
from retina_fgvis.runs import RunFolder, RunKind

runner = CliRunner()


def _contents(folder):
    return {path.relative_to(folder): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def _refused_untouched(arguments, folder, *fragments):
    before = _contents(folder)
    result = runner.invoke(app, [str(a) for a in arguments])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in (str(folder), *fragments):
        assert fragment in " ".join(result.output.split()), result.output   # rich may wrap a long line's spaces
    assert _contents(folder) == before


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    path = tmp_path_factory.mktemp("photo") / "chelsea.png"
    Image.fromarray(skimage.data.chelsea()).save(path)
    return path


def _commands(data, checkpoint, photo):
    """Each writing command with its output folder as the placeholder ``OUT``."""
    return {
        RunKind.TRAIN: ["train", "--dataset", "synthetic", "--data-dir", data.root, "--out", "OUT", "--epochs", "1",
                        "--device", "cpu"],
        RunKind.LOCALIZE: ["localize", "--dataset", "synthetic", "--data-dir", data.root, "--checkpoint", checkpoint,
                           "--out", "OUT", "--device", "cpu", "--max-iter", "2"],
        RunKind.EXPLAIN: ["explain", photo, "--model", "efficientnet_lite0", "--image-size", "64", "--device", "cpu",
                          "--lam", "1e-8", "--max-iter", "1", "--out", "OUT"],
        RunKind.STUDY: ["study", "entropy", photo, "--model", "efficientnet_lite0", "--image-size", "64",
                        "--device", "cpu", "--instances", "1", "--out", "OUT"],
        RunKind.PREPARE: ["prepare", "eyepacs", data.eyepacs, "OUT", "--size", "32", "--workers", "1"],
        RunKind.SYNTHETIC: ["synth", "OUT", "--n-train", "2", "--n-test", "1", "--size", "64"],
        RunKind.DIAGNOSE: ["diagnose", "--checkpoint", checkpoint, "--data-dir", data.root, "--dataset", "synthetic",
                           "--images", "1", "--steps", "0", "--device", "cpu", "--out", "OUT"],
    }


@pytest.mark.parametrize("command", [RunKind.TRAIN, RunKind.LOCALIZE, RunKind.EXPLAIN, RunKind.STUDY, RunKind.PREPARE,
                                     RunKind.SYNTHETIC, RunKind.DIAGNOSE], ids=lambda kind: kind.value)
def test_each_command_refuses_another_commands_run_folder(command, synthetic_data, trained_checkpoint, photo,
                                                          tmp_path):
    other = RunKind.LOCALIZE if command is not RunKind.LOCALIZE else RunKind.TRAIN
    folder = tmp_path / "taken"
    RunFolder(folder, other).write_info({"settings": "of another command"})
    arguments = [folder if a == "OUT" else a for a in _commands(synthetic_data, trained_checkpoint, photo)[command]]
    _refused_untouched(arguments, folder, f"already holds a run (run.json) of {other.value}")


def test_train_refuses_its_own_kind_with_other_settings_naming_them(synthetic_data, tmp_path):
    folder = tmp_path / "model"
    arguments = ["train", "--dataset", "synthetic", "--data-dir", synthetic_data.root, "--out", folder,
                 "--epochs", "1", "--width", "4", "--image-size", "32", "--device", "cpu"]
    # A run killed before its first epoch: only run.json, with another width.
    from retina_fgvis.training import TrainConfig

    stored = TrainConfig(dataset="synthetic", data_dir=synthetic_data.root, out=folder, epochs=1, width=8,
                         image_size=32, device="cpu").resolved()
    RunFolder(folder, RunKind.TRAIN).write_info(stored.to_dict())
    _refused_untouched(arguments, folder, "holds another run's results (width 8 vs 4)")


@pytest.mark.parametrize("command, changed, difference", [
    (RunKind.STUDY, ["--seed", "1"], "reference_entropy_run.json holds another run's results (seed 0 vs 1)"),
    (RunKind.DIAGNOSE, ["--lam", "1e-8"], "run.json holds another run's results (lam 1e-10 vs 1e-08)"),
], ids=["study", "diagnose"])
def test_a_command_reruns_its_own_folder_and_refuses_other_settings(command, changed, difference, synthetic_data,
                                                                   trained_checkpoint, photo, tmp_path):
    folder = tmp_path / "mine"
    arguments = [folder if a == "OUT" else a for a in _commands(synthetic_data, trained_checkpoint, photo)[command]]
    for _ in range(2):  # a new folder, then the same run again
        result = runner.invoke(app, [str(a) for a in arguments])
        assert result.exit_code == 0, result.output
    _refused_untouched([*arguments, *changed], folder, difference)
