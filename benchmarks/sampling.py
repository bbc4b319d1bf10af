"""Seconds per batch of sampling: the cached path against the reference path, side by side.

    python benchmarks/sampling.py [--preset default] [--batch 16] [--models pixelcnn gated-pixelcnn ...]

For every model at 1x28x28 and 3x32x32: the cached path samples a whole batch
(timed end to end). The reference path runs a full forward pass per step
(per sub-pixel for channel-masked models) on the rows that can reach the
current one; its cost depends only on the row, so it is timed for a few steps
at rows spread over the image and integrated over all H*W steps (the output
says so). The ratio is reference / cached.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pixelmodels import create_model, list_models, sample
from pixelmodels.sampling import reference_step


def reference_seconds(model, n: int, probe_rows: int = 3, steps_per_row: int = 1) -> float:
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
            for j in range(steps_per_row):
                reference_step(model, x, y, int(i), j)
            per_row.append((time.perf_counter() - start) / steps_per_row)
    step_cost = np.interp(np.arange(h), rows, per_row)  # seconds per step at each row
    return float(step_cost.sum() * w * model.steps_per_position)


def cached_seconds(model, n: int) -> float:
    start = time.perf_counter()
    sample(model, n, y=0 if model.n_classes else None, generator=torch.Generator().manual_seed(0), cached=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--models", nargs="*", default=list_models())
    p.add_argument("--shapes", nargs="*", default=["1x28x28", "3x32x32"])
    args = p.parse_args()
    torch.manual_seed(0)
    print(f"batch {args.batch}, preset {args.preset}, {torch.get_num_threads()} threads; reference = per-step cost "
          f"timed at a few rows and integrated over all steps")
    print("| model | image | parameters | reference s/batch (estimated) | cached s/batch | speed-up |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        for shape in args.shapes:
            image_shape = tuple(int(s) for s in shape.split("x"))
            model = create_model(name, image_shape=image_shape, n_bits=8, preset=args.preset).eval()
            ref = reference_seconds(model, args.batch)
            cached = cached_seconds(model, args.batch)
            print(f"| {name} | {shape} | {model.n_parameters():,} | {ref:.1f} | {cached:.2f} | {ref / cached:.0f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
