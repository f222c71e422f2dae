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

T = TypeVar("T")


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
        if requested in (None, "auto"):
            requested = "cuda" if torch.cuda.is_available() else "cpu"
        dev = torch.device(requested)
        if dev.type == "cuda" and dev.index is None and self.world_size > 1:
            dev = torch.device("cuda", self.local_rank)
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
