"""Data-parallel training through ``torchrun``: the process group and the few collectives the loop needs.

``torchrun --nproc_per_node=N -m pixelmodels train ...`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; a process started without them is a world of
one and every function here is a no-op. Backend ``nccl`` on CUDA, ``gloo`` on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pixelmodels.errors import PixelModelsError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """The one process that writes logs, samples and checkpoints."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init(device: torch.device) -> World:
    """Join the process group torchrun describes (once); a single process gets ``World()``."""
    if not launched_by_torchrun():
        return World()
    world = World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        # torchrun keeps its store across restarts: the addresses a killed worker published there stay, and a
        # restarted worker may read them and fail to connect. Each attempt of the workers keys its own.
        store, _, _ = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend, store=dist.PrefixStore(f"pixelmodels/attempt{attempt}/", store),
                                rank=world.rank, world_size=world.size)
    return world


def close() -> None:
    """Leave torchrun's process group, if this process joined one: the entry point's last step, on success,
    error or signal, so that gloo's and NCCL's threads and connections end before the interpreter does."""
    if dist.is_initialized():
        dist.destroy_process_group()


def local_device(device: torch.device, world: World) -> torch.device:
    """Under torchrun, CUDA rank r of a node uses GPU ``LOCAL_RANK``."""
    if world.distributed and device.type == "cuda" and device.index is None:
        if world.local_rank >= torch.cuda.device_count():
            raise PixelModelsError(f"torchrun: LOCAL_RANK {world.local_rank} but only {torch.cuda.device_count()} "
                                   "CUDA devices here; use --nproc_per_node <= the number of GPUs")
        return torch.device("cuda", world.local_rank)
    return device


def shard(items: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's contiguous part of ``items`` (parts differ in length by at most one)."""
    return torch.tensor_split(items, world.size)[world.rank] if world.distributed else items


def all_reduce_sum(value: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank when ``flag`` is true on one (for stopping together)."""
    if not world.distributed:
        return flag
    return bool(all_reduce_sum(torch.tensor([float(flag)], device=device), world).item() > 0)
