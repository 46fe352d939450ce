"""Training on several GPUs or machines with PyTorch's own engine (``torchrun`` and DDP).

``torchrun --nproc_per_node N -m calibtut train ...`` starts N processes; each finds its rank
here (from the variables torchrun sets), joins the process group (NCCL on GPUs, gloo on CPUs),
trains on its share of the patches with the model wrapped in ``DistributedDataParallel``, and
scores its share of the validation and test images. Per-image results are gathered in the
dataset's order, so a distributed evaluation equals a single-process one; only rank 0 writes
the run directory. Without torchrun everything here is a no-op: one process, rank 0.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from monai.data import Dataset
from torch.utils.data import Subset

__all__ = ["World", "SINGLE", "world", "start", "shard", "gather", "barrier", "stop"]


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the run directory and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()
"""One process: what a run without torchrun is."""


def world() -> World:
    """The process's rank and the number of processes, as torchrun set them (else one)."""
    try:
        size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError as err:
        raise ValueError(f"WORLD_SIZE, RANK and LOCAL_RANK must be integers ({err})") from None
    return World(rank, size, local)


def start(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group under torchrun (NCCL on CUDA, gloo otherwise) and return this
    process's world and device (``cuda:LOCAL_RANK`` on GPUs)."""
    here = world()
    if not here.distributed:
        return here, device
    if device.type == "cuda":
        device = torch.device("cuda", here.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=30))
    return here, device


def stop(here: World) -> None:
    """Leave the process group (at the end of a distributed run)."""
    if here.distributed and dist.is_initialized():
        dist.destroy_process_group()


def shard(dataset: Dataset, here: World) -> tuple[Dataset, list[int]]:
    """This rank's images of ``dataset`` (every ``size``-th from ``rank``: none twice, unlike a
    DistributedSampler, which pads) and their indices in the whole dataset."""
    indices = list(range(here.rank, len(dataset), here.size))
    if not here.distributed:
        return dataset, indices
    return Subset(dataset, indices), indices


def gather(value: Any, here: World) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (one process: ``[value]``)."""
    if not here.distributed:
        return [value]
    values: list[Any] = [None] * here.size
    dist.all_gather_object(values, value)
    return values


def barrier(here: World) -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
    if here.distributed:
        dist.barrier()


def in_order(parts: Sequence[Sequence[tuple[int, Any]]]) -> list[Any]:
    """Gathered ``(index, item)`` lists of every rank, merged back into the dataset's order."""
    merged = sorted((pair for part in parts for pair in part), key=lambda pair: pair[0])
    return [item for _, item in merged]
