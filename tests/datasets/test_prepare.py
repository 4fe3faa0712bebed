"""``prepare_eyepacs``: parallel, resumable, lists unreadable files and goes on."""
from __future__ import annotations

import pandas as pd
import pytest

import retina_fgvis.datasets.prepare as prepare
from retina_fgvis.datasets import DatasetError, load_eyepacs_table, read_rgb
from retina_fgvis.datasets.prepare import prepare_eyepacs
from retina_fgvis.runs import RunFolderError


@pytest.fixture
def broken_root(eyepacs_root):
    """The EyePACS fixture with one truncated JPEG (13_left)."""
    path = eyepacs_root / "train" / "13_left.jpeg"
    path.write_bytes(path.read_bytes()[:300])
    return eyepacs_root


def _outputs(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_prepare_writes_the_same_layout_and_lists_failures(broken_root, tmp_path):
    dst = tmp_path / "prepared"
    summary = prepare_eyepacs(broken_root, dst, size=32, workers=1, progress=False)
    assert (summary.total, summary.written, summary.skipped, summary.failed) == (10, 9, 0, 1)
    failures = pd.read_csv(summary.failures_csv)
    assert failures["image"].tolist() == ["13_left"]
    assert "13_left.jpeg" in failures["path"].iloc[0] and "truncated JPEG" in failures["error"].iloc[0]
    table = load_eyepacs_table(dst)  # labels copied without the failed image: dst is consistent
    assert len(table) == 9 and "13_left" not in set(table["image"])
    assert table.set_index("image").loc["1_right", "path"].endswith("test/1_right.png")
    assert read_rgb(table["path"].iloc[0]).shape == (32, 32, 3)
    assert "1 failed" in str(summary)


def test_interrupted_run_is_finished_by_rerunning(broken_root, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    prepare_eyepacs(broken_root, reference, size=32, graham=True, workers=1, progress=False)

    dst = tmp_path / "interrupted"
    real = prepare._prepare_one
    calls = []

    def interrupt_after_four(task):
        calls.append(task)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(task)

    monkeypatch.setattr(prepare, "_prepare_one", interrupt_after_four)
    with pytest.raises(KeyboardInterrupt):
        prepare_eyepacs(broken_root, dst, size=32, graham=True, workers=1, progress=False)
    monkeypatch.undo()
    done = len(_outputs(dst))
    assert done == 3 < len(_outputs(reference))  # four images tried, one of them the truncated one
    stale = dst / "train" / ".15_left.png.abc123.tmp.png"  # what a killed atomic write leaves behind
    stale.write_bytes(b"half a file")

    summary = prepare_eyepacs(broken_root, dst, size=32, graham=True, workers=1, progress=False)
    assert (summary.skipped, summary.written, summary.failed) == (done, 9 - done, 1)
    assert not stale.exists()
    assert _outputs(dst) == _outputs(reference)
    assert (dst / "trainLabels.csv").read_text() == (reference / "trainLabels.csv").read_text()


def test_worker_processes_give_the_same_outputs(eyepacs_root, tmp_path):
    one = prepare_eyepacs(eyepacs_root, tmp_path / "one", size=24, workers=1, progress=False)
    two = prepare_eyepacs(eyepacs_root, tmp_path / "two", size=24, workers=2, progress=False)
    assert one.written == two.written == 10
    assert _outputs(tmp_path / "one") == _outputs(tmp_path / "two")


def test_prepare_refuses_mixed_settings_and_empty_sources(eyepacs_root, tmp_path):
    prepare_eyepacs(eyepacs_root, tmp_path / "out", size=24, workers=1, progress=False)
    with pytest.raises(RunFolderError, match="prepare.json holds another run's results .*size 24 vs 32"):
        prepare_eyepacs(eyepacs_root, tmp_path / "out", size=32, workers=1, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="no images"):
        prepare_eyepacs(empty, tmp_path / "out2", workers=1, progress=False)
    with pytest.raises(ValueError, match="workers"):
        prepare_eyepacs(eyepacs_root, tmp_path / "out3", workers=-1)


@pytest.mark.parametrize("labels, message", [("", "not a readable CSV"), ("image,level\n1_left,7\n", "unknown level")])
def test_a_bad_label_file_is_refused_before_any_image_is_written(eyepacs_root, tmp_path, labels, message):
    (eyepacs_root / "trainLabels.csv").write_text(labels)
    with pytest.raises(DatasetError, match=f"trainLabels.csv: .*{message}"):
        prepare_eyepacs(eyepacs_root, tmp_path / "dst", size=32, workers=1, progress=False)
    assert not (tmp_path / "dst").exists()
