"""Measuring a model: bits per dimension over a dataset, the periodic sample grid, and the device and
precision helpers both training and the commands use."""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
from pathlib import Path

import torch

from pixelmodels.distributed import World, all_reduce_sum, shard
from pixelmodels.errors import PixelModelsError
from pixelmodels.likelihoods import bits_per_dim
from pixelmodels.sampling import complete, sample

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; refuse devices that are not there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise PixelModelsError(f"--device: expected cpu, cuda or cuda:N, found {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PixelModelsError(f"--device: {name} asked for, but no CUDA device is available here")
    return device


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def describe_machine(device: torch.device | str = "cpu") -> str:
    """The machine in words, for a benchmark's table: the CPU (model, cores, vector units, AMX or not), the
    GPU if ``device`` is one, torch's threads and version."""
    device = torch.device(device)
    cpu = "?"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    units = ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16") if f in flags) or "no AVX2"
    amx = "AMX" if {"amx_bf16", "amx_tile"} <= flags else "no AMX"
    gpu = f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else ""
    return (f"{gpu}CPU {cpu} ({os.cpu_count()} cores, {units}, {amx}), {torch.get_num_threads()} threads, "
            f"torch {torch.__version__}")


def native_bf16(device: torch.device) -> tuple[bool, str]:
    """Whether ``device`` runs bf16 natively (so bf16 autocast pays off), and why, in words.

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and newer). CPU: the AMX tile units with bf16
    (flags ``amx_bf16``, ``amx_tile``); without them bf16 autocast may be emulated and slower than fp32
    (BENCHMARKS.md has this machine's figures).
    """
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, f"CUDA device {torch.cuda.get_device_name(device)} {'supports' if ok else 'lacks'} bf16"
    if device.type == "cpu":
        ok = {"amx_bf16", "amx_tile"} <= cpu_flags()
        return ok, "this CPU has AMX with bf16" if ok else "this CPU has no AMX (no native bf16 matrix units)"
    return False, f"device {device.type} is not known to run bf16 natively"


_warned: set[str] = set()


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 where ``device`` runs it natively, else fp32; an explicit bf16 without native support
    warns once (on stderr) why and what to expect. Returns fp32, bf16 or fp16."""
    check_precision(precision, device)
    native, why = native_bf16(device) if precision in ("auto", "bf16") else (True, "")
    if precision == "auto":
        return "bf16" if native else "fp32"
    if precision == "bf16" and not native and "bf16" not in _warned:
        _warned.add("bf16")
        print(f"pixelmodels: warning: --precision bf16: {why}; bf16 autocast is emulated there and is usually "
              "slower than fp32; --precision auto picks the faster",
              file=sys.stderr)
    return precision


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS and precision != "auto":
        raise PixelModelsError(f"--precision: expected one of {sorted(PRECISIONS) + ['auto']}, found {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise PixelModelsError("--precision fp16: needs a CUDA device (it trains with a gradient scaler); "
                               f"this run is on {device.type}: use --precision bf16 or fp32")


def autocast(device: torch.device, precision: str):
    """The mixed-precision context of ``precision`` (a no-op for fp32)."""
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def evaluate(model, dataset, batch_size: int = 256, device=None, limit: int | None = None, *,
             forward=None, precision: str = "fp32", world: World = World()) -> float:
    """Bits per dimension of ``model`` on ``dataset`` (the first ``limit`` images), summed in float64.

    ``forward`` replaces ``model(x, y, cond)`` (a compiled copy, say); the network runs under ``precision``'s
    autocast and the head in float32. Under torchrun each rank scores its part and the sums are added.
    """
    device = device or next(model.parameters()).device
    forward = model if forward is None else forward
    n = len(dataset) if limit is None else min(limit, len(dataset))
    mine = shard(torch.arange(n), world)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(mine), batch_size):
        idx = mine[start:start + batch_size]
        x = dataset.images[idx].to(device)
        y = dataset.labels[idx].to(device) if model.n_classes else None
        cond = dataset.cond[idx].to(device) if model.cond_shape else None
        with autocast(device, precision):
            params = forward(x, y, cond)
        total += model.head.nll(params.float(), x).double().sum()
    total = all_reduce_sum(total, world)
    return bits_per_dim(total.item(), n * math.prod(model.image_shape))


def sample_grid(model, n_samples: int, seed: int, batch_size: int | None = None, cond=None,
                temperature: float = 1.0):
    """Samples for a grid: one row per class for a conditional model. Returns (images, images per row).

    A model with ``cond_shape`` takes the conditions from ``cond`` (e.g. a test set's), the first one
    for each image of a row."""
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    per_class = max(1, math.ceil(n_samples / model.n_classes)) if model.n_classes else n_samples
    y = torch.arange(model.n_classes, device=device).repeat_interleave(per_class) if model.n_classes else None
    n = per_class * (model.n_classes or 1)
    if model.cond_shape is not None:
        if cond is None or len(cond) == 0:
            raise PixelModelsError(f"sample grid: the model is conditional on cond_shape {model.cond_shape}; "
                                   "found no conditions to sample with")
        cond = cond[torch.arange(per_class).repeat(model.n_classes or 1) % len(cond)].to(device)
    images = sample(model, n, y, cond, generator=gen, batch_size=batch_size, temperature=temperature)
    return images, (per_class if model.n_classes else None)


def generate_samples(model, s, cond=None):
    """What ``pixelmodels generate`` samples with its settings ``s`` (``GenerateSettings``): for a
    class-conditional model without ``s.class_label``, a row per class (:func:`sample_grid`); else ``s.n``
    for each condition of ``cond`` (a row each), or ``s.n`` without one. Returns (images, images per row,
    labels or None)."""
    if model.n_classes and s.class_label is None:
        images, nrow = sample_grid(model, s.n * model.n_classes, s.seed, s.batch_size, temperature=s.temperature)
        return images, nrow, torch.arange(model.n_classes).repeat_interleave(nrow)
    n, nrow = s.n * (1 if cond is None else len(cond)), None if cond is None else s.n
    labels = None if s.class_label is None else torch.full((n,), s.class_label)
    gen = torch.Generator(next(model.parameters()).device).manual_seed(s.seed)
    images = sample(model, n, labels, None if cond is None else cond.repeat_interleave(s.n, dim=0),
                    generator=gen, progress=True, batch_size=s.batch_size, temperature=s.temperature)
    return images, nrow, labels


def complete_examples(model, dataset, s):
    """What ``pixelmodels complete`` does with its settings ``s`` (``CompleteSettings``): the first ``s.n``
    examples of ``dataset``, their first pixels in raster order kept (``s.known_pixels``), the rest
    sampled. Returns (originals, known (H, W) bool, completions)."""
    _, h, w = model.image_shape
    known = (torch.arange(h * w) < s.known_pixels(model.image_shape, len(dataset))).view(h, w)
    x = torch.as_tensor(dataset.images[: s.n])
    y = dataset.labels[: s.n] if model.n_classes else None
    cond = dataset.cond[: s.n] if model.cond_shape is not None else None
    gen = torch.Generator(next(model.parameters()).device).manual_seed(s.seed)
    return x, known, complete(model, x, known, y, generator=gen, progress=True, cond=cond, temperature=s.temperature)
