"""``retina-fgvis synth`` and ``retina-fgvis prepare eyepacs``."""
from __future__ import annotations

import cv2
import numpy as np
from typer.testing import CliRunner

from retina_fgvis.cli import app
from retina_fgvis.datasets import load_eyepacs_table, open_diaretdb1

runner = CliRunner()


def test_synth_writes_both_layouts(tmp_path):
    out = tmp_path / "synthetic"
    result = runner.invoke(app, ["synth", str(out), "--n-train", "4", "--n-test", "2", "--size", "64", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(load_eyepacs_table(out / "eyepacs")) == 4
    assert open_diaretdb1(out / "diaretdb1").image_ids() == ["image001", "image002"]
    assert open_diaretdb1(out / "diaretdb1_v1").version == "1.1"
    assert "diaretdb1" in result.output


def test_prepare_eyepacs_command(tmp_path):
    src = tmp_path / "src"
    (src / "train").mkdir(parents=True)
    image = np.zeros((40, 50, 3), np.uint8)
    cv2.circle(image, (25, 20), 19, (60, 90, 200), -1)
    for name in ("1_left", "1_right"):
        cv2.imwrite(str(src / "train" / f"{name}.jpeg"), image)
    (src / "train" / "2_left.jpeg").write_bytes(b"\xff\xd8broken")
    (src / "trainLabels.csv").write_text("image,level\n1_left,0\n1_right,3\n2_left,1\n")
    dst = tmp_path / "dst"
    result = runner.invoke(app, ["prepare", "eyepacs", str(src), str(dst), "--size", "24", "--workers", "1", "--graham"])
    assert result.exit_code == 0, result.output
    assert "2 prepared" in result.output and "1 failed" in result.output
    assert load_eyepacs_table(dst)["label"].tolist() == [0, 1]
    again = runner.invoke(app, ["prepare", "eyepacs", str(src), str(dst), "--size", "24", "--workers", "1", "--graham"])
    assert again.exit_code == 0 and "2 already done" in again.output


def test_errors_are_one_red_line_and_exit_code_2(tmp_path):
    result = runner.invoke(app, ["synth", str(tmp_path / "x"), "--n-test", "1000", "--n-train", "0"])
    assert result.exit_code == 2 and "n_test" in result.output
    result = runner.invoke(app, ["prepare", "eyepacs", str(tmp_path / "missing"), str(tmp_path / "dst")])
    assert result.exit_code == 2 and "source folder not found" in result.output
    assert "Traceback" not in result.output


def test_synth_label_rule_is_recorded_and_checked(tmp_path):
    from retina_fgvis.datasets.synthetic import LabelRule, read_label_rule

    out = tmp_path / "control"
    result = runner.invoke(app, ["synth", str(out), "--n-train", "2", "--n-test", "1", "--size", "64",
                                 "--label-rule", "red_small_dots:2"])
    assert result.exit_code == 0, result.output
    assert read_label_rule(out) == LabelRule("red_small_dots", 2)
    bad = runner.invoke(app, ["synth", str(tmp_path / "bad"), "--label-rule", "drusen:2"])
    assert bad.exit_code == 2 and "label_rule: unknown lesion type 'drusen'" in bad.output
    assert not (tmp_path / "bad").exists()
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    other = runner.invoke(app, ["synth", str(out), "--n-train", "2", "--n-test", "1", "--size", "64"])
    assert other.exit_code == 2 and "label_rule 'red_small_dots:2' vs 'None'" in other.output.replace("\n", "")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
