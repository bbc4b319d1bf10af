"""Data-parallel training through ``torchrun``: the process group and the few collectives the loop needs.

``torchrun --nproc_per_node=N -m pixelmodels train ...`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; a process started without them is a world of
one and every function here is a no-op. Backend ``nccl`` on CUDA, ``gloo`` on CPU.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import time
import traceback
import uuid
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
        # torch.distributed.nn's functions take ``group=group.WORLD`` as a default argument, evaluated when the
        # module is first imported, which DistributedDataParallel's constructor does (through torch._dynamo).
        # Imported after the group exists, ten defaults hold the group for the life of the process, and
        # destroy_process_group cannot end its threads (see :func:`close`); imported before, they hold None.
        importlib.import_module("torch.distributed.nn")
        store, _, _ = next(dist.rendezvous("env://"))
        dist.init_process_group(backend, store=dist.PrefixStore(f"pixelmodels/start{start_number(store, world)}/",
                                                                store), rank=world.rank, world_size=world.size)
    return world


def start_number(store: dist.Store, world: World) -> int:
    """A number that every worker of this start of torchrun's workers gets and no earlier start got, to key
    this start's part of torchrun's ``store``.

    torchrun keeps its store across restarts: the addresses that killed workers published stay there, and a
    restarted worker that read them would fail to connect (gloo: "Connection refused"). TORCHELASTIC_RESTART_COUNT
    does not name a start: on several nodes, the agent of a node whose workers did not fail restarts them with
    its count unchanged. So rank 0 draws the number (``store.add``: never the same twice) and answers each
    worker under a random name the worker has just written: an answer to a name left by an earlier start is
    read by no one, and rank 0 asks again until every worker has acknowledged this start's number.
    """
    name = uuid.uuid4().hex
    store.set(f"pixelmodels/worker{world.rank}", name)
    if world.rank:
        store.wait([f"pixelmodels/start/{name}"])
        number = int(store.get(f"pixelmodels/start/{name}"))
        store.set(f"pixelmodels/ack/{number}/{world.rank}", name)
        return number
    number, answered, waiting = store.add("pixelmodels/starts", 1), {}, set(range(1, world.size))
    deadline = time.monotonic() + store.timeout.total_seconds()
    while True:
        for rank in waiting:
            name = store.get(f"pixelmodels/worker{rank}").decode()  # the worker's name, or an earlier start's
            if answered.get(rank) != name:
                store.set(f"pixelmodels/start/{name}", str(number))
                answered[rank] = name
        waiting = {rank for rank in waiting if not store.check([f"pixelmodels/ack/{number}/{rank}"])}
        if not waiting:
            return number
        if time.monotonic() > deadline:
            raise PixelModelsError(f"torchrun: ranks {sorted(waiting)} did not join this start within the store's "
                                   f"timeout ({store.timeout}); see their logs")
        time.sleep(0.01)


def close() -> None:
    """Leave torchrun's process group, if this process joined one, and end its threads: the entry point's last
    step, on success, error or signal, once the program holds no DistributedDataParallel wrapper (:func:`closing`).

    A gloo worker thread releases each finished collective's tensors after the collective returns, and that
    takes the GIL. A thread still doing so while the interpreter exits is ended by Python in the middle of a C++
    destructor, which is std::terminate: SIGABRT after a run that did all its work. Destroyed while a
    DistributedDataParallel reducer is its last owner, the group joins those threads holding the GIL: a deadlock.
    So the wrappers go first (they sit in reference cycles: ``gc.collect``), then the group: its last reference
    drops in ``destroy_process_group``, which releases the GIL and joins its threads while Python still runs.
    """
    if not dist.is_initialized():
        return
    gc.collect()
    dist.destroy_process_group()


@contextlib.contextmanager
def closing():
    """Around a program's training under torchrun: :func:`close` at the end, whatever the end. An exception's
    traceback holds the frames it passed through, and so the Trainer and its DistributedDataParallel wrapper;
    with a process group joined, their locals are cleared first (the lines stay for a printed traceback), so
    that the group is torch's alone when it is destroyed."""
    try:
        yield
    except BaseException as error:
        if dist.is_initialized():
            traceback.clear_frames(error.__traceback__)
        raise
    finally:
        close()


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
