"""Device selection, seeding, the console and progress bars shared by the commands."""
from __future__ import annotations

import os
import random
from typing import NamedTuple

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


#: The one console that commands and pipelines print to, and its stderr twin for errors.
console = Console()
error_console = Console(stderr=True)


class TorchrunPlace(NamedTuple):
    """Where ``torchrun`` put this process: ``rank`` of ``world_size``, GPU slot ``local_rank`` on its host."""

    rank: int
    world_size: int
    local_rank: int


def torchrun_place() -> TorchrunPlace:
    """This process's place from torchrun's RANK, WORLD_SIZE and LOCAL_RANK (a plain start: 0 of 1, slot 0)."""
    return TorchrunPlace(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")),
                         int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU; anything else is validated."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device: {device!r} is not a torch device ({error})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available")
    return resolved


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def progress_bar(*, transient: bool = False) -> Progress:
    """A rich progress bar with count, rate-friendly columns and ETA."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=transient,
    )
