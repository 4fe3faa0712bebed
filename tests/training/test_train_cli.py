"""``retina-fgvis train`` wraps ``retina_fgvis.training.train``: a final table, and one red line + exit 2 on bad input."""
import json

from typer.testing import CliRunner

from retina_fgvis.cli import app


def test_cli_trains_prints_the_table_and_refuses_to_overwrite(tiny_eyepacs, tmp_path):
    out = tmp_path / "cli-run"
    args = ["train", "--dataset", "eyepacs", "--data-dir", str(tiny_eyepacs), "--out", str(out), "--epochs", "1",
            "--image-size", "48", "--width", "4", "--batch-size", "8", "--device", "cpu", "--no-progress",
            "--class-weights", "balanced"]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "val_auc" in result.output and "best checkpoint:" in result.output
    assert str(out / "best.pt") in result.output.replace("\n", "")
    assert (out / "best.pt").is_file()
    assert json.loads((out / "run.json").read_text())["config"]["class_weights"] == "balanced"

    again = runner.invoke(app, args)
    assert again.exit_code == 2
    assert "error: out:" in again.output and "pass --resume" in again.output

    resumed = runner.invoke(app, ["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress",
                                  "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert "last (epoch 2)" in resumed.output


def test_cli_resume_without_checkpoint(tmp_path):
    result = CliRunner().invoke(app, ["train", "--out", str(tmp_path / "none"), "--resume"])
    assert result.exit_code == 2
    assert "error: resume:" in result.output and "holds no checkpoint last.pt" in result.output
