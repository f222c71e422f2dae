"""Scale-out on ``torchrun``: which process am I, which device is mine, which items are mine.

Started by ``torchrun`` (``WORLD_SIZE`` > 1 in the environment), each process joins a process group
(NCCL on GPUs, Gloo on CPUs; torchrun's rendezvous works across machines). Work is sharded by index:
rank ``r`` of ``W`` takes items ``r, r + W, r + 2W, ...`` of what is left to do, so every item is processed
exactly once, for any ``W``, with no padding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Sequence, TypeVar

import torch

from .errors import InputError

T = TypeVar("T")

DEVICE_CHOICES = "auto, cpu, cuda, cuda:N or mps"


def resolve_device(requested: str | torch.device | None, flag: str = "--device") -> torch.device:
    """``requested`` as a device this machine has: ``auto``/None is cuda when available, else cpu.

    An unknown name, a CUDA device without CUDA (or past the last GPU) and mps without Metal are refused
    with an InputError naming ``flag``.
    """
    if requested is None or requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(requested)
    except (RuntimeError, TypeError, ValueError):
        raise InputError(f"{flag} {requested!r} is not a device: use {DEVICE_CHOICES}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"{flag} {requested}: CUDA is not available on this machine (this torch "
                             f"{'cannot see a GPU' if torch.version.cuda else 'was built without CUDA'}); "
                             f"use --device cpu or auto")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise InputError(f"{flag} {requested}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise InputError(f"{flag} {requested}: Apple Metal (mps) is not available on this machine; use cpu or auto")
    elif dev.type != "cpu":
        raise InputError(f"{flag} {requested!r} is not supported: use {DEVICE_CHOICES}")
    return dev


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items`` (strided, order preserved)."""
        return list(items[self.rank :: self.world_size])

    def barrier(self) -> None:
        if self.initialized:
            torch.distributed.barrier()

    def device(self, requested: str | None) -> torch.device:
        """The device for this process: ``cuda:LOCAL_RANK`` under torchrun on GPUs, else ``requested``."""
        dev = resolve_device(requested)
        if dev.type == "cuda" and dev.index is None:  # set_device needs an index (torch >= 2.11 refuses "cuda")
            dev = torch.device("cuda", self.local_rank if self.world_size > 1 else torch.cuda.current_device())
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        return dev

    def close(self) -> None:
        if self.initialized:
            torch.distributed.destroy_process_group()
            self.initialized = False


def init_distributed(device: str | None = None, timeout_hours: float = 48.0) -> DistContext:
    """Join the process group when launched by torchrun; otherwise a single-process context.

    The long timeout lets ranks wait at the final barrier while others finish their last images.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_nccl = torch.cuda.is_available() and device not in ("cpu",)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="nccl" if use_nccl else "gloo", timeout=timedelta(hours=timeout_hours)
        )
    return DistContext(rank=rank, world_size=world, local_rank=local, initialized=True)
