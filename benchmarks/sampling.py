"""Cached sampling against the machine's limits (memory bandwidth, matrix-product speed) and the reference path.

    python benchmarks/sampling.py [--preset default] [--batches 16,64,256] [--models pixelsnail pixelcnnpp ...]
                                  [--shapes 1x28x28 3x32x32] [--positions K] [--no-reference]

In the same run it measures the machine: the copy bandwidth (``dst.copy_(src)`` of a 512 MiB float32
tensor, best of 5, bytes read + written / seconds) and the float32 matrix-product speed (2048 x 2048
``torch.mm``, best of 5). For every model, image shape and batch n it builds the cache and asks it what a
step reads and computes (``cache.reads()``, a ``pixelmodels.nn.incremental.Reads``, averaged over the
positions of an image): the bytes of frozen weights (work done once per row or once per 2**l rows counted
as its share of the steps), the bytes of cached activations (e.g. PixelSNAIL's keys and values up to t,
on average (T - 1) / 2 of them), and the floating-point operations. From these:

* bandwidth limit = (weight + activation bytes) / copy bandwidth, per step;
* compute limit = flops / matrix-product speed, per step;
* achieved = seconds of the cached path / steps (H * W * steps_per_position), and its ratio to the
  bandwidth limit and to the roofline, the larger of the two limits;
* products = the seconds spent inside the step's matrix products and convolutions (every call of
  ``torch.addmm``, ``F.linear``, ``F.conv2d``, ``@``, ... timed, ``timed_products``), from a second run of
  the same cached path: what the step would cost with everything else free, at the speed the libraries
  (MKL, oneDNN) run these products of a step's few rows. A goal below it cannot be met by removing overhead.

The cached path samples the whole batch with ``pixelmodels.sample`` (timed end to end), or, with
``--positions K``, steps the cache over the first K positions of a random image (an estimate, said so in
the output; for PixelSNAIL it underestimates the attention's share, which grows with t). The reference
path (a full forward pass per step on the rows that can reach the current one) costs seconds per step, so
it is timed at batch 16 only (the smallest batch asked for), at three rows, interpolated over the rows and
summed over all steps, as before; ``--no-reference`` skips it.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import time

import numpy as np
import torch
import torch.nn.functional as F

from pixelmodels import create_model, list_models, sample
from pixelmodels.sampling import reference_step


def machine() -> str:
    """CPU model, AMX or not, and the threads torch uses."""
    name, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("", platform.processor() or platform.machine()):
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line
    except OSError:
        pass
    amx = "yes" if "amx_tile" in flags else "no"
    return f"{name}, AMX {amx}, {torch.get_num_threads()} threads, torch {torch.__version__}"


def best_of(fn, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def copy_bandwidth(mib: int = 512) -> float:
    """Bytes per second of a large float32 copy, read + written."""
    src = torch.randn(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / best_of(lambda: dst.copy_(src))


def matmul_flops(size: int = 2048) -> float:
    """Floating-point operations per second of a float32 size x size matrix product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size**3 / best_of(lambda: torch.mm(a, b))


# Every matrix product and convolution a cache step may call (``timed_products``).
PRODUCTS = ((torch, "addmm"), (torch, "baddbmm"), (torch, "bmm"), (torch, "mm"), (torch, "matmul"),
            (torch.Tensor, "addmm_"), (torch.Tensor, "baddbmm_"), (torch.Tensor, "__matmul__"),
            (F, "linear"), (F, "conv1d"), (F, "conv2d"), (F, "conv_transpose2d"))


@contextlib.contextmanager
def timed_products():
    """Within the block every function of ``PRODUCTS`` is timed; yields [seconds, calls] (updated in place)."""
    total = [0.0, 0]
    saved = [(owner, name, getattr(owner, name)) for owner, name in PRODUCTS]

    def timed(fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                total[0] += time.perf_counter() - start
                total[1] += 1
        return call

    try:
        for owner, name, fn in saved:
            setattr(owner, name, timed(fn))
        yield total
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def reference_seconds(model, n: int, probe_rows: int = 3) -> float:
    """Estimated seconds of the reference path for one batch: per-row step cost, integrated."""
    c, h, w = model.image_shape
    x = torch.randint(0, 2**model.n_bits, (n, c, h, w))
    y = model.condition(torch.zeros(n, dtype=torch.long), n) if model.n_classes else None
    rows = np.unique(np.linspace(0, h - 1, probe_rows).round().astype(int))
    per_row = []
    with torch.no_grad():
        reference_step(model, x, y, int(rows[-1]), 0)  # warm-up
        for i in rows:
            start = time.perf_counter()
            reference_step(model, x, y, int(i), 0)
            per_row.append(time.perf_counter() - start)
    step_cost = np.interp(np.arange(h), rows, per_row)  # seconds per step at each row
    return float(step_cost.sum() * w * model.steps_per_position)


def steps(model, positions: int | None) -> int:
    """The cache steps ``cached_seconds_per_step`` times."""
    c, h, w = model.image_shape
    return (h * w if positions is None else min(positions, h * w)) * model.steps_per_position


def cached_seconds_per_step(model, n: int, positions: int | None) -> float:
    """Seconds per cache step: a whole sampled batch, or the first ``positions`` positions of a random image."""
    c, h, w = model.image_shape
    if positions is None:
        start = time.perf_counter()
        sample(model, n, y=0 if model.n_classes else None, generator=torch.Generator().manual_seed(0), cached=True)
        return (time.perf_counter() - start) / steps(model, positions)
    x = torch.randint(0, 2**model.n_bits, (n, c, h, w))
    cache = model.sampling_cache(n, torch.zeros(n, dtype=torch.long) if model.n_classes else None)
    with torch.no_grad():
        start = time.perf_counter()
        for t in range(min(positions, h * w)):
            for _ in range(model.steps_per_position):
                cache.step(x, *divmod(t, w))
        return (time.perf_counter() - start) / steps(model, positions)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default")
    p.add_argument("--batches", default="16,64,256", help="comma-separated batch sizes")
    p.add_argument("--models", nargs="*", default=list_models())
    p.add_argument("--shapes", nargs="*", default=["1x28x28", "3x32x32"])
    p.add_argument("--positions", type=int, default=None,
                   help="time the first K positions of the cached path instead of sampling whole batches")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) reference path")
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    torch.manual_seed(0)
    bandwidth, flops = copy_bandwidth(), matmul_flops()
    print(f"machine: {machine()}")
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s (512 MiB float32, read + written); float32 matrix product "
          f"{flops / 1e9:.1f} GFLOP/s (2048^3); preset {args.preset}; cached: "
          + ("whole batches sampled" if args.positions is None else f"first {args.positions} positions stepped")
          + ("" if args.no_reference else f"; reference at batch {min(batches)}, timed at 3 rows and integrated"))
    print("| model | image | batch | weights MB/step | activations MB/step | GFLOP/step | bandwidth limit ms/step "
          "| compute limit ms/step | achieved ms/step | x bandwidth limit | x roofline | products ms/step "
          "| products GFLOP/s | reference s/batch | speed-up |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        for shape in args.shapes:
            image_shape = tuple(int(s) for s in shape.split("x"))
            model = create_model(name, image_shape=image_shape, n_bits=8, preset=args.preset).eval()
            c, h, w = image_shape
            for n in batches:
                reads = model.sampling_cache(n).reads()
                memory = (reads.weights + reads.activations) / bandwidth
                compute = reads.flops / flops
                achieved = cached_seconds_per_step(model, n, args.positions)
                with timed_products() as products:
                    cached_seconds_per_step(model, n, args.positions)
                products_per_step = products[0] / steps(model, args.positions)
                ref = ""
                if not args.no_reference and n == min(batches):
                    seconds = reference_seconds(model, n)
                    batch_seconds = achieved * h * w * model.steps_per_position
                    ref = f"{seconds:.1f} | {seconds / batch_seconds:.0f}x"
                else:
                    ref = " | "
                print(f"| {name} | {shape} | {n} | {reads.weights / 1e6:.1f} | {reads.activations / 1e6:.1f} "
                      f"| {reads.flops / 1e9:.3f} | {memory * 1e3:.2f} | {compute * 1e3:.2f} | {achieved * 1e3:.2f} "
                      f"| {achieved / memory:.1f}x | {achieved / max(memory, compute):.1f}x "
                      f"| {products_per_step * 1e3:.2f} | {reads.flops / products_per_step / 1e9:.0f} | {ref} |",
                      flush=True)


if __name__ == "__main__":
    main()
