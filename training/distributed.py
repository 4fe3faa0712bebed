"""``torch.distributed`` set-up for runs started by ``torchrun`` (one process per GPU or CPU slot).

``torchrun`` sets RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT; the process group is
initialised from them (``env://``) with NCCL on GPUs and gloo on CPUs. A plain ``python`` start
is a world of one and touches nothing.
"""
from __future__ import annotations

import contextlib
import gc
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

import torch
import torch.distributed as dist

from retina_fgvis.runtime import resolve_device, torchrun_place

__all__ = ["DistContext", "distributed_context", "launched_by_torchrun"]

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, on ``device``; ``is_main`` writes files."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def main_only(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` on rank 0 only (the others get ``None``); a ValueError there is raised on every rank."""
        if not self.distributed:
            return fn()
        result, failure = None, None
        if self.is_main:
            try:
                result = fn()
            except ValueError as error:
                failure = error
        status = [None if failure is None else str(failure)]
        dist.broadcast_object_list(status, src=0)
        if failure is not None:
            raise failure
        if status[0] is not None:
            raise ValueError(status[0])
        return result


def launched_by_torchrun() -> bool:
    """True inside a multi-process ``torchrun`` launch."""
    return torchrun_place().world_size > 1


@contextlib.contextmanager
def distributed_context(device: str | torch.device | None = "auto") -> Iterator[DistContext]:
    """Yield this process's :class:`DistContext`; under torchrun initialise (and finally destroy) the group.

    With several processes, ``device="auto"``/``"cuda"`` means this process's local GPU
    (``cuda:LOCAL_RANK``) and the backend is NCCL; ``"cpu"`` uses gloo.
    """
    if not launched_by_torchrun():
        yield DistContext(rank=0, world_size=1, local_rank=0, device=resolve_device(device))
        return
    local_rank = torchrun_place().local_rank
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        resolved = torch.device("cuda", local_rank)
        torch.cuda.set_device(resolved)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo", init_method="env://")
    try:
        yield DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank,
                          device=resolved)
    finally:
        if created:
            # Whatever reference cycles still keep of the group (DDP's reducer) is freed while the group and the
            # interpreter are alive, not during the interpreter's shutdown.
            gc.collect()
            dist.destroy_process_group()
