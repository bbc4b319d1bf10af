"""Devices and precision: which device a name means, what the CPU can do, and the mixed-precision context
training and evaluation run under."""

from __future__ import annotations

import contextlib
import functools
import os
import warnings
from pathlib import Path

import torch

from pixelmodels.errors import PixelModelsError

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
    """Whether ``device`` runs bf16 matrix products natively (so bf16 autocast is no slower than fp32), and why,
    in words.

    CUDA: ``torch.cuda.is_bf16_supported()`` (Ampere and newer). CPU: AMX tiles with bf16 (flags ``amx_bf16``,
    ``amx_tile``) or AVX-512's bf16 dot products (``avx512_bf16``), which oneDNN's bf16 kernels use; without
    them bf16 autocast is emulated (converted around fp32 kernels) and slower than fp32 (BENCHMARKS.md has the
    figures). The flags, not a timing: the answer is the same on a busy machine as on a quiet one. Whether
    ``auto`` takes bf16 is :func:`auto_precision`'s to say: native speed is not enough, it must train as well.
    """
    if device.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, f"CUDA device {torch.cuda.get_device_name(device)} {'supports' if ok else 'lacks'} bf16"
    if device.type == "cpu":
        flags = cpu_flags()
        if {"amx_bf16", "amx_tile"} <= flags:
            return True, "this CPU has AMX with bf16"
        if "avx512_bf16" in flags:
            return True, "this CPU has AVX-512 bf16 dot products (avx512_bf16)"
        return False, "this CPU has neither AMX nor avx512_bf16"
    return False, f"device {device.type} is not known to run bf16 natively"


# bf16 against fp32 on a CPU, the zoo's PixelCNN++ `small` recipe, 1,320 steps side by side (benchmarks/precision.py,
# BENCHMARKS.md): bf16 trained 1.2x faster and ended 0.56% above fp32's test bits/dim (2.9269 against 2.9106).
CPU_BF16_LOSS = 0.0056
BF16_TOLERANCE = 0.005  # auto trades at most this much of the bits/dim for speed


def auto_precision(device: torch.device) -> tuple[str, str]:
    """What ``--precision auto`` trains in on ``device``, and why, in words: bf16 where its matrix products are
    native (:func:`native_bf16`) and, on a CPU, a bf16 run ends within ``BF16_TOLERANCE`` of fp32's bits/dim
    (measured: ``CPU_BF16_LOSS``, outside it); else fp32."""
    native, why = native_bf16(device)
    if not native:
        return "fp32", f"{why}: bf16 would be emulated"
    if device.type == "cpu" and CPU_BF16_LOSS > BF16_TOLERANCE:
        return "fp32", (f"{why}, but a bf16 run of the zoo's PixelCNN++ recipe ended {CPU_BF16_LOSS:.2%} above fp32's "
                        f"bits/dim (benchmarks/precision.py), more than the {BF16_TOLERANCE:.1%} auto allows")
    return "bf16", why


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> :func:`auto_precision`'s choice; an explicit bf16 without native support warns
    (``warnings.warn``, shown once per place by Python's default filter) why and what to expect.
    Returns fp32, bf16 or fp16."""
    check_precision(precision, device)
    if precision == "auto":
        return auto_precision(device)[0]
    native, why = native_bf16(device) if precision == "bf16" else (True, "")
    if precision == "bf16" and not native:
        warnings.warn(f"--precision bf16: {why}; bf16 autocast is emulated there and is usually slower than "
                      "fp32; --precision auto picks the faster", stacklevel=2)
    return precision


def check_precision(precision: str, device: torch.device) -> None:
    if precision not in PRECISIONS and precision != "auto":
        raise PixelModelsError(f"--precision: expected one of {sorted(PRECISIONS) + ['auto']}, found {precision!r}")
    if precision == "fp16" and device.type != "cuda":
        raise PixelModelsError("--precision fp16: needs a CUDA device (it trains with a gradient scaler); "
                               f"this run is on {device.type}: use --precision bf16 or fp32")


def autocast(device: torch.device, precision: str):
    """The mixed-precision context of ``precision`` (a no-op for fp32), for training's forward passes.

    Scoring, sampling, compression and ``pixelmodels evaluate`` run in fp32, whatever a run trained in. The codec
    must: its encoder and decoder need the same floats for every probability, and bf16 kernels round differently
    from one machine, build and batch shape to the next. ``--precision auto`` decides training only.
    """
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
