"""The run-folder protocol (retina_fgvis.runs): records, claims, items, completeness, version-0 records."""
from __future__ import annotations

import json

import numpy as np
import pytest

from retina_fgvis._io import atomic_write_json, locked_folder
from retina_fgvis.runs import FORMAT_VERSION, RunFolder, RunFolderError, RunKind


def test_a_record_names_its_kind_and_format_version(tmp_path):
    path = RunFolder(tmp_path / "run", RunKind.LOCALIZE).write_info({"method": "fgvis", "t": (1, 2)})
    stored = json.loads(path.read_text())
    assert (stored["kind"], stored["format_version"]) == ("localize", FORMAT_VERSION)
    assert stored["config"] == {"method": "fgvis", "t": [1, 2]} and "torch" in stored["environment"]
    info = RunFolder(tmp_path / "run", "localize").read_info(required=True)
    assert (info.kind, info.format_version, info.config["t"]) == ("localize", FORMAT_VERSION, [1, 2])


def test_claim_resumes_its_own_run_and_names_the_differing_settings(tmp_path):
    run = RunFolder(tmp_path / "run", RunKind.LOCALIZE)
    assert run.claim({"a": 1}) is False and not run.path.exists()  # nothing written by a claim
    run.write_info({"a": 1, "p": "/x", "t": [1, 2]})
    assert run.claim({"a": 1, "p": "/y", "t": (1, 2)}, ignore=("p",)) is True
    with pytest.raises(RunFolderError, match=r"run\.json holds another run's results \(a 1 vs 2\)"):
        run.claim({"a": 2, "p": "/x", "t": [1, 2]})
    run.record_path.unlink()
    (run.path / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="not empty and holds no run.json"):
        run.claim({"a": 1})
    assert RunFolder(run.path, RunKind.PREPARE, record="prepare.json").claim({"a": 1}, exclusive=False) is False


@pytest.mark.parametrize("writer, claimer", [
    (RunKind.LOCALIZE, RunKind.TRAIN), (RunKind.TRAIN, RunKind.LOCALIZE), (RunKind.EXPLAIN, RunKind.LOCALIZE),
    (RunKind.LOCALIZE, RunKind.EXPLAIN)])
def test_claim_refuses_another_commands_folder_in_one_line(tmp_path, writer, claimer):
    RunFolder(tmp_path, writer).write_info({"a": 1})
    with pytest.raises(RunFolderError) as refused:
        RunFolder(tmp_path, claimer).claim({"a": 1})
    message = str(refused.value)
    assert f"{tmp_path} already holds a run (run.json) of {writer.value}, not {claimer.value}" in message
    assert "\n" not in message


def test_a_study_or_a_prepared_set_refuses_a_folder_holding_another_commands_run(tmp_path):
    RunFolder(tmp_path, RunKind.LOCALIZE).write_info({"method": "fgvis"})
    for record in (RunFolder.study(tmp_path, "colour_swap"), RunFolder(tmp_path, RunKind.PREPARE, record="prepare.json")):
        with pytest.raises(RunFolderError, match=r"already holds a run \(run.json\) of localize"):
            record.claim({"a": 1}, exclusive=False)


def test_two_studies_share_a_folder_and_each_refuses_other_settings(tmp_path):
    first, second = RunFolder.study(tmp_path, "adversarial_evidence"), RunFolder.study(tmp_path, "colour_swap")
    first.write_info({"study": "adversarial_evidence", "lr": 0.1})
    assert second.claim({"study": "colour_swap"}, exclusive=False) is False
    with pytest.raises(RunFolderError, match=r"adversarial_evidence_run\.json holds another run's results \(lr 0.1 vs 0.2\)"):
        first.claim({"study": "adversarial_evidence", "lr": 0.2}, exclusive=False)


@pytest.mark.parametrize("name, config, kind", [
    ("run.json", {"method": "fgvis", "image_ids": ["a"]}, "localize"),
    ("run.json", {"task": "train", "epochs": 3}, "train"),
    ("run.json", {"game": "deletion", "images": ["x.png"]}, "explain"),
    ("adversarial_evidence_run.json", {"study": "adversarial_evidence"}, "study"),
    ("prepare.json", {"size": 512}, "prepare"),
    ("synthetic.json", {"n_train": 4}, "synthetic"),
])
def test_records_written_before_kinds_existed_still_read(tmp_path, name, config, kind):
    atomic_write_json(tmp_path / name, {"config": config, "environment": {}})
    info = RunFolder(tmp_path, kind, record=name).read_info(required=True)
    assert (info.kind, info.format_version, info.config) == (kind, 0, config)
    # a version-0 train record resumes under the new format (its "task" key is the kind)
    assert RunFolder(tmp_path, kind, record=name).claim({k: v for k, v in config.items() if k != "task"}) is True


def test_items_are_finished_by_their_record_and_the_run_is_complete_when_all_are(tmp_path):
    run = RunFolder(tmp_path / "run", RunKind.LOCALIZE)
    run.write_info({"image_ids": ["a", "b"]})
    with locked_folder(run.path) as lock:
        for item in ("a", "b"):
            run.start_item(item, lock)
            run.save_maps(item, importance=np.full((4, 4), 0.5, np.float32))
            assert not run.is_finished(item) and run.finished_items() == (["a"] if item == "b" else [])
            run.write_item_record(item, {"image_id": item})
            assert run.is_complete() is (item == "b")
    assert run.item_record("b") == {"image_id": "b"} and run.read_map("a", "importance").shape == (4, 4)
    with pytest.raises(RunFolderError, match=r"maps\.npz: cannot read 'mask'"):
        run.read_map("a", "mask")
    assert not RunFolder(tmp_path / "nowhere", RunKind.LOCALIZE).is_complete()


def test_a_record_that_is_not_one_is_named(tmp_path):
    (tmp_path / "run.json").write_text('{"epochs": 3}')
    with pytest.raises(RunFolderError, match=r"run\.json: not a run record \(no 'config' object\)"):
        RunFolder(tmp_path, RunKind.LOCALIZE).read_info(required=True)
    with pytest.raises(RunFolderError, match=r"run\.json is not a run record of this command"):
        RunFolder(tmp_path, RunKind.LOCALIZE).claim({"a": 1})
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        RunFolder(tmp_path / "run.json", RunKind.LOCALIZE).claim({})
