"""Atomic file output, output-folder locks and run metadata shared by every command.

Every file the toolkit writes goes through a temporary name in the same folder and is
renamed into place, so a killed run never leaves a half-written file behind.

Every command that writes a run folder holds :func:`locked_folder` on it while it runs: a second
process asking for the same folder is refused with an error naming the holder (pid, host, command).
The lock files (``.retina-fgvis[.SCOPE].lock`` and its ``.holder.json``) live in the folder and are
removed when the lock is released; so is the folder itself when the lock created it and nothing
else was written, so a refused run leaves the folder as it was.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    On error the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp creates 0600 files; give the result the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary file of :func:`atomic_path` (``.NAME.XXXX.tmp.EXT``)."""
    name = Path(path).name
    return name.startswith(".") and ".tmp" in name


def is_housekeeping(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a temporary file or one of :func:`locked_folder`'s lock files (not a result)."""
    return is_temporary(path) or Path(path).name.startswith(_LOCK_PREFIX)


def remove_temporaries(folder: str | os.PathLike, lock: "FolderLock") -> None:
    """Delete the temporary files a killed process left in ``folder`` (not recursive).

    Only the holder of ``lock`` (on ``folder`` or a folder above it) cleans, and only temporaries
    older than its lock: a newer one belongs to a live writer.
    """
    folder = Path(folder)
    if folder.is_dir():
        for stale in filter(is_temporary, folder.iterdir()):
            with contextlib.suppress(FileNotFoundError):
                if stale.stat().st_mtime < lock.since:
                    stale.unlink()


_LOCK_PREFIX = ".retina-fgvis"
_HELD: dict[str, "FolderLock"] = {}


class FolderBusyError(ValueError):
    """Another process holds the lock of an output folder."""


@dataclass
class FolderLock:
    """An acquired :func:`locked_folder` lock: its folder, scope and acquisition time (``time.time()``)."""

    folder: Path
    scope: str | None
    since: float
    depth: int = 1


def _command_line() -> str:
    return shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"


def _holder_text(holder_path: Path) -> str:
    try:
        holder = json.loads(holder_path.read_text(encoding="utf-8"))
        return (f"pid {holder['pid']} on {holder['host']} (`{holder['command']}`, since {holder['since']})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (it has not recorded itself yet)"


@contextlib.contextmanager
def locked_folder(folder: str | os.PathLike, *, scope: str | None = None, timeout: float = 0.0,
                  name: str = "out") -> Iterator[FolderLock]:
    """Hold the exclusive lock of output folder ``folder`` (created if missing) for the ``with`` block.

    ``scope`` names a lock of its own in the same folder (e.g. one per shard of a run). Re-entrant
    within a process. ``timeout``: seconds to wait for the holder (0: refuse at once). Raises
    :class:`FolderBusyError` naming the holder, or ``ValueError`` when ``folder`` is a file.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name}: {folder} is a file, not a folder")
    base = _LOCK_PREFIX + (f".{scope}" if scope else "")
    lock_path, holder_path = folder / f"{base}.lock", folder / f"{base}.holder.json"
    key = str(lock_path.absolute())
    if key in _HELD:
        held = _HELD[key]
        held.depth += 1
        try:
            yield held
        finally:
            held.depth -= 1
        return
    created = [parent for parent in (folder, *folder.parents) if not parent.exists()]
    lock = FileLock(lock_path)
    try:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            lock.acquire(timeout=timeout)
        except Timeout:
            raise FolderBusyError(f"{name}: {folder} is in use by {_holder_text(holder_path)}; wait for it to "
                                  f"finish or choose another folder") from None
        except OSError as error:  # a read-only folder, a file on the way to it
            raise ValueError(f"{name}: cannot write to {folder} ({error.strerror or error})") from None
        held = FolderLock(folder, scope, time.time())
        try:
            since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
            atomic_write_json(holder_path, {"pid": os.getpid(), "host": socket.gethostname(),
                                            "command": _command_line(), "since": since})
            _HELD[key] = held
            yield held
        finally:
            _HELD.pop(key, None)
            # Removed while still held: a waiter reopens the path on every try, so it locks the next lock
            # file, not this vanishing one.
            holder_path.unlink(missing_ok=True)
            lock_path.unlink(missing_ok=True)
            lock.release()
    finally:
        for parent in created:  # deepest first: the folders this call made, if nothing was written there
            with contextlib.suppress(OSError):
                parent.rmdir()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as JSON; a NaN or ±inf anywhere in it is written as ``null`` (JSON has no such numbers)."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (Python or numpy, also inside arrays) replaced by ``None``."""
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def atomic_write_csv(path: str | os.PathLike, frame) -> Path:
    """Write a pandas DataFrame as CSV (no index)."""
    return atomic_write_text(path, frame.to_csv(index=False))


def atomic_write_png(path: str | os.PathLike, image: np.ndarray) -> Path:
    """Write an RGB (H×W×3) or grey (H×W) uint8/uint16 array as PNG."""
    array = np.asarray(image)
    if array.ndim == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise ValueError(f"could not encode {path} as PNG")
    return atomic_write_bytes(path, buffer.tobytes())


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    """``np.savez_compressed`` through a temporary file."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def environment_info() -> dict[str, str]:
    """Versions of the interpreter and the libraries a result depends on."""
    import torch

    info = {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__}
    for name in ("torchvision", "monai", "ignite", "skimage", "cv2", "numpy", "pandas"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            continue
    from retina_fgvis import __version__

    info["retina_fgvis"] = __version__
    return info


def atomic_save_figure(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure through a temporary file.

    Library figures are ``matplotlib.figure.Figure`` objects, never pyplot's: pyplot keeps them alive and
    choosing its backend would change the caller's.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path
