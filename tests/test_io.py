"""Output-folder locks, temporary-file cleaning and the JSON writer (retina_fgvis._io)."""
from __future__ import annotations

import json
import os
import socket
import time

import numpy as np
import pytest

from retina_fgvis._io import FolderBusyError, atomic_write_json, locked_folder, remove_temporaries

def test_a_second_process_is_refused_with_the_holder_named(tmp_path, hold_folder):
    child = hold_folder(tmp_path / "out")
    with pytest.raises(FolderBusyError) as refused:
        with locked_folder(tmp_path / "out"):
            pass
    message = str(refused.value)
    assert message.startswith(f"out: {tmp_path / 'out'} is in use by pid {child.pid} on {socket.gethostname()}")
    assert "-c" in message and "since" in message
    child.kill()
    child.wait()
    # A killed holder's lock is free again (the kernel drops it with the process).
    with locked_folder(tmp_path / "out"):
        pass


def test_lock_is_reentrant_and_leaves_nothing_behind(tmp_path):
    folder = tmp_path / "new" / "run"
    with locked_folder(folder) as outer:
        with locked_folder(folder) as inner:
            assert inner is outer and inner.depth == 2
        assert sorted(p.name for p in folder.iterdir()) == [".retina-fgvis.holder.json", ".retina-fgvis.lock"]
    assert not (tmp_path / "new").exists()  # created by the lock, nothing written: removed again
    existing = tmp_path / "kept"
    existing.mkdir()
    (existing / "a.txt").write_text("mine")
    with locked_folder(existing):
        pass
    assert [p.name for p in existing.iterdir()] == ["a.txt"]


def test_scoped_locks_are_independent(tmp_path, hold_folder):
    hold_folder(tmp_path)
    with locked_folder(tmp_path, scope="shard-0-of-2"):
        pass


def test_a_file_is_not_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"out: .*f is a file, not a folder"):
        with locked_folder(tmp_path / "f"):
            pass


def test_an_unwritable_folder_is_named(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match=r"dst: cannot write to .*f/sub \(Not a directory\)"):
        with locked_folder(tmp_path / "f" / "sub", name="dst"):
            pass


def test_only_temporaries_older_than_the_lock_are_removed(tmp_path):
    stale = tmp_path / ".maps.npz.abc.tmp.npz"
    stale.write_bytes(b"from a killed run")
    old = time.time() - 60
    os.utime(stale, (old, old))
    with locked_folder(tmp_path) as lock:
        live = tmp_path / ".record.json.def.tmp.json"
        live.write_bytes(b"being written")
        remove_temporaries(tmp_path, lock)
        assert not stale.exists() and live.exists()


def test_json_never_holds_nan(tmp_path):
    path = atomic_write_json(tmp_path / "a.json", {"x": float("nan"), "y": [np.float32("inf"), 1.5],
                                                   "z": np.array([1.0, -np.inf])})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"x": None, "y": [None, 1.5], "z": [1.0, None]}
