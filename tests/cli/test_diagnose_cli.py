"""``retina-fgvis diagnose``: a table, CSVs a person can open, and one red line for bad input."""
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from retina_fgvis.cli import app
from retina_fgvis.datasets.synthetic import generate_synthetic
from retina_fgvis.models.checkpoint import save_checkpoint
from retina_fgvis.models.fundus_cnn import FundusCNN

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("diagnose")
    generate_synthetic(root / "set", n_train=0, n_test=4, size=64)
    torch.manual_seed(0)
    checkpoint = save_checkpoint(root / "model.pt", FundusCNN(width=4),
                                 {"image_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3})
    return root, ["--checkpoint", str(checkpoint), "--data-dir", str(root / "set"), "--dataset", "synthetic",
                  "--device", "cpu"]


def test_diagnose_prints_a_table_and_writes_csvs(setup, tmp_path):
    _, options = setup
    result = runner.invoke(app, ["diagnose", *options, "--images", "2", "--steps", "0,2", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "FGVis defense diagnostic" in result.output and "image001" in result.output
    summary = pd.read_csv(tmp_path / "diagnosis.csv")
    assert summary["image"].tolist() == ["image001", "image001", "image002", "image002"]
    assert summary["step"].tolist() == [0, 2, 0, 2]
    assert summary["mean_inside"].between(0, 1).all() and summary["cosine"].between(-1, 1).all()
    calls = pd.read_csv(tmp_path / "diagnosis_calls.csv")
    assert len(calls) == 4 * calls["call"].nunique() and calls["call"].nunique() == 5  # default FundusCNN: 5 LeakyReLUs
    # An untrained net scores the zero reference about 0.5: no deletion can reach 0.10, and it says so.
    assert summary["reference_blocks_stop"].all() and "no deletion can succeed" in result.output


@pytest.mark.parametrize("arguments, message", [
    (["--steps", "0,x"], "--steps: expected comma-separated integers"),
    (["--images", "0"], "images: expected an integer >= 1"),
    (["--stop-score", "2"], "stop: ScoreBelow threshold must be in (0, 1]"),
])
def test_bad_input_is_one_red_line_and_writes_nothing(setup, tmp_path, arguments, message):
    _, options = setup
    result = runner.invoke(app, ["diagnose", *options, *arguments, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert result.output.startswith("error:")
    assert not (tmp_path / "out").exists()


def test_a_missing_set_or_checkpoint_is_named(setup, tmp_path):
    root, options = setup
    no_set = runner.invoke(app, ["diagnose", *options[:2], "--data-dir", str(tmp_path), "--dataset", "synthetic"])
    assert no_set.exit_code == 2 and str(tmp_path / "diaretdb1") in no_set.output.replace("\n", "")
    assert not any(tmp_path.iterdir())  # nothing generated
    no_checkpoint = runner.invoke(app, ["diagnose", "--checkpoint", str(root / "none.pt"), *options[2:]])
    assert no_checkpoint.exit_code == 2 and "none.pt" in no_checkpoint.output
