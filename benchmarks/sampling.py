"""Cached sampling against the reference path (a full forward pass per step) and the machine's limits.

    python benchmarks/sampling.py --quick                                     # smoke run: tiny presets
    python benchmarks/sampling.py --shapes 1x28x28 --batches 16               # the cached and reference paths
    python benchmarks/sampling.py --shapes 1x28x28 --batches 16,64,256 --positions 112 --no-reference
    python benchmarks/sampling.py --models pixelsnail --shapes 1x28x28 --positions 56 --no-reference --profile
    python benchmarks/sampling.py --config "gated-pixelcnn:small n_codes=512" --shapes 1x32x32 --no-reference
    python benchmarks/sampling.py --device cuda --batches 16,256 --no-reference

The run first measures the machine: its copy bandwidth (``dst.copy_(src)`` of a 512 MiB float32 tensor,
best of 5, bytes read + written per second) and its float32 matrix-product speed (2048 x 2048, best of 5).
Then for every model (``--models`` at ``--preset``, untrained weights: the cost does not depend on them;
or ``--config "NAME:PRESET key=value ..."``), image shape and batch n:

* achieved ms/step: the cached path (``model.sampling_cache(n)``, ``cache.step(x, i, j)``
  ``model.steps_per_position`` times at every position). By default ``pixelmodels.sample(cached=True)`` of
  the whole batch, timed end to end; with ``--positions K`` the cache stepped over the first K positions
  of a random image (an estimate, said so in the output: work done once per row is included in
  proportion, and PixelSNAIL's attention, which grows with the position, is underestimated);
* GFLOP/step: ``torch.utils.flop_counter.FlopCounterMode`` over the same steps (matrix products,
  convolutions, attention; with formulas added for the in-place products and the CPU's attention kernel,
  which torch's table lacks), averaged over the steps: work done once per row (or per 2**l rows) counts
  as its share;
* weights and activations MB/step: the bytes of every operand of those products and convolutions
  (``ProductOperands``: each tensor's distinct elements), counted in the same pass at batch 1 and at
  batch 2. What does not grow with the batch is the weights (frozen weights and biases: every weight a
  step uses, once), what grows is the activations (the step's inputs and what it reads from the cache,
  e.g. PixelSNAIL's keys and values of earlier positions), taken at batch n;
* bandwidth limit = (weight + activation bytes) / copy bandwidth; compute limit = FLOPs / matrix-product
  speed; the achieved time over each, and over the roofline (the larger of the two);
* reference s/batch (estimated; the smallest batch only; ``--no-reference`` skips it):
  ``pixelmodels.complete(cached=False)`` with one unknown pixel, in the first, middle and last row, times
  a full pass per step there (on the rows that can reach it); the cost per row is interpolated and summed
  over all H * W positions, instead of sampling whole batches on the reference path;
* ``--profile``: the torch profiler over the cached steps; adds "products ms/step" (the self time of
  matrix products and convolutions: what a step would cost with everything else free) and prints the
  top operators.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from torch.utils import flop_counter
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from pixelmodels import complete, create_model, list_models, sample
from pixelmodels.errors import PixelModelsError
from pixelmodels.devices import describe_machine
from pixelmodels.models.registry import parse_model_spec

aten = torch.ops.aten
# FLOP formulas torch's table lacks: the in-place products a cache step uses, the CPU's attention kernel
EXTRA_FLOPS = {
    aten.addmm_: lambda bias, a, b, *args, out_shape=None, **kwargs: 2 * a[0] * a[1] * b[1],
    aten.baddbmm_: lambda bias, a, b, *args, out_shape=None, **kwargs: 2 * a[0] * a[1] * a[2] * b[2],
    aten._scaled_dot_product_flash_attention_for_cpu:
        lambda q, k, v, *args, out_shape=None, **kwargs: flop_counter.sdpa_flop_count(q, k, v),
}
OPERAND_OPS = {aten.mm, aten.addmm, aten.addmm_, aten.bmm, aten.baddbmm, aten.baddbmm_, aten.mv, aten.addmv,
               aten.convolution, aten._convolution, *EXTRA_FLOPS}
PROFILED_PRODUCTS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::baddbmm_",
                     "aten::mv", "aten::addmv", "aten::mkldnn_convolution", "aten::thnn_conv2d",
                     "aten::cudnn_convolution", "aten::_scaled_dot_product_flash_attention_for_cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(fn, device: torch.device, repeats: int = 5) -> float:
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def copy_bandwidth(device: torch.device, mib: int) -> float:
    """Bytes per second of a large float32 copy, read + written."""
    src = torch.randn(mib * 2**20 // 4, device=device)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / best_of(lambda: dst.copy_(src), device)


def matmul_flops(device: torch.device, size: int) -> float:
    """Floating-point operations per second of a float32 size x size matrix product."""
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    return 2 * size**3 / best_of(lambda: torch.mm(a, b), device)


def random_input(model, n: int, device: torch.device) -> torch.Tensor:
    top = model.n_codes or 2**model.n_bits
    return torch.randint(0, top, (n, *model.image_shape), device=device)


def positions(model, k: int | None) -> int:
    c, h, w = model.image_shape
    return h * w if k is None else min(k, h * w)


@torch.no_grad()
def step_cache(model, x: torch.Tensor, k: int | None) -> None:
    """Step a fresh cache over the first ``k`` positions (all, for None) of ``x``."""
    cache = model.sampling_cache(len(x))
    w = model.image_shape[2]
    for t in range(positions(model, k)):
        for _ in range(model.steps_per_position):
            cache.step(x, *divmod(t, w))


class ProductOperands(TorchDispatchMode):
    """Adds up the bytes of the operands of every matrix product and convolution run inside it."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in OPERAND_OPS:
            for t in tree_leaves((args, kwargs)):
                if isinstance(t, torch.Tensor):  # distinct elements: a broadcast (stride 0) dimension once
                    self.bytes += t.element_size() * int(np.prod([n for n, st in zip(t.shape, t.stride()) if st]))
        return func(*args, **(kwargs or {}))


def step_accounting(model, k: int | None, device: torch.device) -> tuple[float, float, float]:
    """(FLOPs, weight bytes, activation bytes) of one cache step of one image, averaged over the first ``k``
    positions: from the operands at batch 1 and 2 (weights: the part that does not grow with the batch)."""
    steps = positions(model, k) * model.steps_per_position
    counted = []
    for n in (1, 2):
        with flop_counter.FlopCounterMode(display=False, custom_mapping=EXTRA_FLOPS) as flops, \
                ProductOperands() as operands:
            step_cache(model, random_input(model, n, device), k)
        counted.append((flops.get_total_flops() / n / steps, operands.bytes / steps))
    (flops, one), (_, two) = counted
    return flops, 2 * one - two, two - one


def cached_seconds_per_step(model, n: int, k: int | None, device: torch.device) -> float:
    """Seconds per cache step: a whole sampled batch, or the first ``k`` positions of a random image."""
    x = random_input(model, n, device) if k is not None else None
    sync(device)
    start = time.perf_counter()
    if x is None:
        sample(model, n, generator=torch.Generator(device).manual_seed(0), cached=True)
    else:
        step_cache(model, x, k)
    sync(device)
    return (time.perf_counter() - start) / (positions(model, k) * model.steps_per_position)


def reference_seconds(model, n: int, device: torch.device, probe_rows: int = 3) -> float:
    """Estimated seconds of the reference path for a batch of n: the cost of one position per row, integrated."""
    c, h, w = model.image_shape
    x = random_input(model, n, device)

    def complete_seconds(row: int | None) -> float:
        known = torch.ones(h, w, dtype=torch.bool)
        if row is not None:
            known[row, w - 1] = False  # one pixel: model.steps_per_position reference steps
        sync(device)
        start = time.perf_counter()
        complete(model, x, known, generator=torch.Generator(device).manual_seed(0), cached=False)
        sync(device)
        return time.perf_counter() - start

    rows = np.unique(np.linspace(0, h - 1, probe_rows).round().astype(int))
    complete_seconds(int(rows[-1]))  # warm-up
    overhead = min(complete_seconds(None) for _ in range(2))  # the loop over known pixels
    per_row = [max(complete_seconds(int(i)) - overhead, 0.0) for i in rows]
    return float(np.interp(np.arange(h), rows, per_row).sum() * w)


def profiled(model, n: int, k: int | None, device: torch.device, top: int) -> tuple[float, str]:
    """(seconds per step inside matrix products and convolutions, the top operators as a markdown table)."""
    from torch.profiler import ProfilerActivity, profile

    x = random_input(model, n, device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step_cache(model, x, k)
        sync(device)
    steps = positions(model, k) * model.steps_per_position
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    products = sum(e.self_cpu_time_total for e in events if e.key in PROFILED_PRODUCTS) / 1e6 / steps
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    lines = ["| operator | self CPU % | self CPU ms / step | calls / step |", "| --- | --- | --- | --- |"]
    lines += [f"| `{e.key}` | {e.self_cpu_time_total / total:.1%} | {e.self_cpu_time_total / 1e3 / steps:.2f} "
              f"| {e.count / steps:g} |" for e in rows]
    return products, "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=None, help="model names (default: all; none with --config)")
    p.add_argument("--preset", default="default", help="the models' preset")
    p.add_argument("--config", action="append", default=[], metavar="'NAME:PRESET key=value ...'",
                   help="add a model of any options (repeatable), e.g. 'pixelsnail:small n_codes=512'")
    p.add_argument("--shapes", nargs="*", default=["1x28x28", "3x32x32"], help="CxHxW")
    p.add_argument("--batches", default="16,64,256", help="comma-separated batch sizes")
    p.add_argument("--positions", type=int, default=None,
                   help="time the first K positions of the cached path instead of sampling whole batches")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) reference path")
    p.add_argument("--profile", action="store_true", help="profile the cached steps: products ms/step, top operators")
    p.add_argument("--top", type=int, default=10, help="operators shown by --profile")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny presets, 1x12x12, batch 4, small "
                   "machine measurements")
    args = p.parse_args()
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    copy_mib, matmul_size = 512, 2048
    if args.quick:
        args.preset, args.shapes, batches, copy_mib, matmul_size = "tiny", ["1x12x12"], [4], 64, 512
    names = args.models if args.models is not None else ([] if args.config else list_models())
    models = [(f"{name}:{args.preset}", name, args.preset, {}) for name in names]
    try:
        models += [(spec, *parse_model_spec(spec)) for spec in args.config]
    except PixelModelsError as e:
        p.error(str(e))
    torch.manual_seed(0)
    bandwidth, flops = copy_bandwidth(device, copy_mib), matmul_flops(device, matmul_size)
    print("command: python " + " ".join(sys.argv))
    print(f"machine: {describe_machine(device)}")
    print(f"copy bandwidth {bandwidth / 1e9:.1f} GB/s ({copy_mib} MiB float32, read + written); float32 matrix "
          f"product {flops / 1e9:.1f} GFLOP/s ({matmul_size}^3); cached: "
          + ("whole batches sampled" if args.positions is None else f"first {args.positions} positions stepped")
          + ("" if args.no_reference else f"; reference at batch {min(batches)}, timed at 3 rows and integrated"))
    head = ["model", "image", "batch", "parameters", "weights MB/step", "activations MB/step", "GFLOP/step",
            "bandwidth limit ms/step",
            "compute limit ms/step", "achieved ms/step", "x bandwidth limit", "x roofline"]
    head += ["products ms/step"] if args.profile else []
    head += [] if args.no_reference else ["reference s/batch", "cached s/batch", "speed-up"]
    print("| " + " | ".join(head) + " |\n|" + " --- |" * len(head), flush=True)
    profiles = []
    for label, name, preset, options in models:
        for shape in args.shapes:
            image_shape = tuple(int(s) for s in shape.split("x"))
            if "n_codes" not in options:
                options = dict(options, n_bits=options.get("n_bits", 8))
            model = create_model(name, image_shape=image_shape, preset=preset, **options).to(device).eval()
            c, h, w = image_shape
            per_image, weights, activations = step_accounting(model, args.positions, device)
            for n in batches:
                memory, compute = (weights + activations * n) / bandwidth, per_image * n / flops
                achieved = cached_seconds_per_step(model, n, args.positions, device)
                cells = [label, shape, str(n), f"{model.n_parameters():,}", f"{weights / 1e6:.3g}",
                         f"{activations * n / 1e6:.3g}", f"{per_image * n / 1e9:.3g}", f"{memory * 1e3:.3g}",
                         f"{compute * 1e3:.3g}", f"{achieved * 1e3:.3g}", f"{achieved / memory:.3g}x",
                         f"{achieved / max(memory, compute):.3g}x"]
                if args.profile:
                    products, top = profiled(model, n, args.positions, device, args.top)
                    cells.append(f"{products * 1e3:.2f}")
                    profiles.append((f"{label} {shape} batch {n}", top))
                if not args.no_reference:
                    if n == min(batches):
                        batch_seconds = achieved * h * w * model.steps_per_position
                        seconds = reference_seconds(model, n, device)
                        cells += [f"{seconds:.1f}", f"{batch_seconds:.2f}", f"{seconds / batch_seconds:.0f}x"]
                    else:
                        cells += ["", "", ""]
                print("| " + " | ".join(cells) + " |", flush=True)
    for title, top in profiles:
        print(f"\n{title}, the cached steps under the profiler:\n\n{top}")


if __name__ == "__main__":
    main()
