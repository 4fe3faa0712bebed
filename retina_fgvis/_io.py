"""Atomic file output and run metadata shared by every command.

Every file the toolkit writes goes through a temporary name in the same folder and is
renamed into place, so a killed run never leaves a half-written file behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import tempfile
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


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Delete the temporary files a killed process left in ``folder`` (not recursive)."""
    folder = Path(folder)
    if folder.is_dir():
        for stale in filter(is_temporary, folder.iterdir()):
            stale.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


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


def write_run_info(out_dir: str | os.PathLike, config: dict[str, Any], name: str = "run.json") -> Path:
    """Record the config, seed and versions that produced a run folder."""
    return atomic_write_json(Path(out_dir) / name, {"config": config, "environment": environment_info()})


def atomic_save_figure(figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save a matplotlib figure through a temporary file.

    Library figures are ``matplotlib.figure.Figure`` objects, never pyplot's: pyplot keeps them alive and
    choosing its backend would change the caller's.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    return path
