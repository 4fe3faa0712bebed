"""``retina-fgvis explain`` and ``retina-fgvis study ...``: outputs, tables, and one red line for bad input."""
import json

import numpy as np
import pandas as pd
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from retina_fgvis.cli import app

runner = CliRunner()
LITE = ["--model", "efficientnet_lite0", "--image-size", "64", "--device", "cpu"]



@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in ("chelsea", "coffee"):
        Image.fromarray(getattr(skimage.data, name)()).save(folder / f"{name}.png")
    return folder


def test_explain_command_writes_results(photos, tmp_path):
    result = runner.invoke(app, ["explain", str(photos / "chelsea.png"), *LITE, "--lam", "1e-8", "--max-iter", "2",
                                 "--target", "Egyptian cat", "--target", "tabby", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "FGVis deletion explanations" in result.output and "tabby" in result.output
    table = pd.read_csv(tmp_path / "results.csv")
    assert list(table["target_name"]) == ["Egyptian cat", "tabby"] and (table["iterations"] == 2).all()
    assert (tmp_path / "chelsea" / "figure.png").is_file() and (tmp_path / "chelsea" / "arrays.npz").is_file()
    assert json.loads((tmp_path / "run.json").read_text())["config"]["lam"] == 1e-8


@pytest.mark.parametrize("arguments, message", [
    (["--model", "resnet9000"], "unknown ImageNet model 'resnet9000'"),
    (["--model", "alexnet", "--weights", "/no/such/weights.pth"], "/no/such/weights.pth does not exist"),
    ([*LITE, "--lam", "lots"], "lam: expected 'search' or a number"),
])
def test_explain_bad_input_is_one_red_line(photos, tmp_path, arguments, message):
    result = runner.invoke(app, ["explain", str(photos / "coffee.png"), *arguments, "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_study_commands_print_tables_and_write_csvs(photos, tmp_path):
    entropy = runner.invoke(app, ["study", "entropy", str(photos), *LITE, "--instances", "2", "--out", str(tmp_path)])
    assert entropy.exit_code == 0, entropy.output
    assert "Zero image" in entropy.output and "Maximum (1000 classes)" in entropy.output
    assert (tmp_path / "reference_entropy.csv").is_file()

    adversarial = runner.invoke(app, ["study", "adversarial", *LITE, "--classes", "2", "--max-iter", "2",
                                      "--out", str(tmp_path)])
    assert adversarial.exit_code == 0, adversarial.output
    assert "No defense" in adversarial.output and "Defended" in adversarial.output
    assert len(pd.read_csv(tmp_path / "adversarial_evidence.csv")) == 4

    deletion = runner.invoke(app, ["study", "deletion", str(photos / "coffee.png"), *LITE, "--methods",
                                   "gradcam,random", "--out", str(tmp_path / "deletion")])
    assert deletion.exit_code == 0, deletion.output
    assert "gradcam" in deletion.output and (tmp_path / "deletion" / "deletion_curves.png").is_file()

    labels = tmp_path / "labels.csv"
    labels.write_text(f"file,label\n{photos / 'coffee.png'},espresso\n{photos / 'chelsea.png'},285\n")
    swap = runner.invoke(app, ["study", "colour-swap", str(labels), *LITE, "--out", str(tmp_path)])
    assert swap.exit_code == 0, swap.output
    assert "Avg. RBG, GRB" in swap.output and len(pd.read_csv(tmp_path / "colour_swap.csv")) == 2

    missing = runner.invoke(app, ["study", "colour-swap", str(tmp_path / "nothing"), *LITE])
    assert missing.exit_code == 2 and "neither a folder" in missing.output


def test_explain_refuses_another_runs_folder(photos, tmp_path, snapshot):
    args = ["explain", str(photos / "chelsea.png"), *LITE, "--max-iter", "2", "--out", str(tmp_path)]
    assert runner.invoke(app, [*args, "--lam", "1e-8"]).exit_code == 0
    before = snapshot(tmp_path)
    result = runner.invoke(app, [*args, "--lam", "1e-6"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "holds another run's results (lam 1e-08 vs 1e-06)" in result.output
    other = runner.invoke(app, ["explain", str(photos / "coffee.png"), *LITE, "--max-iter", "2", "--lam", "1e-8",
                                "--out", str(tmp_path)])
    assert other.exit_code == 2 and "another run's results" in other.output
    assert snapshot(tmp_path) == before
    # The same run again rewrites the same files.
    assert runner.invoke(app, [*args, "--lam", "1e-8"]).exit_code == 0


@pytest.mark.slow
def test_explain_compiled_matches_eager_and_records_it(photos, tmp_path):
    arguments = ["explain", str(photos / "chelsea.png"), *LITE, "--lam", "1e-8", "--max-iter", "3"]
    eager = runner.invoke(app, [*arguments, "--out", str(tmp_path / "eager")])
    compiled = runner.invoke(app, [*arguments, "--compile", "--out", str(tmp_path / "compiled")])
    assert eager.exit_code == 0 and compiled.exit_code == 0, compiled.output
    assert json.loads((tmp_path / "compiled" / "run.json").read_text())["config"]["compile"] is True
    masks = [np.load(tmp_path / name / "chelsea" / "arrays.npz")["mask"] for name in ("eager", "compiled")]
    difference = np.abs(masks[0] - masks[1])
    # float32 round-off of the fused graph flips the defense's indicator for a few units (docs/engine.md): the
    # masks agree on average, and no pixel is more than one step (lr 0.1, normalised gradient) apart.
    # Measured (2-core CPU): max 0.030, mean 7.8e-4.
    assert difference.mean() <= 2e-3 and difference.max() <= 0.1
