"""Whole cached steps with ``StepMatrix``'s two layouts, side by side in one process, per batch size.

Two caches of the same model are built, one with the large step products transposed ((W^T x^T)^T, the
layout ``StepMatrix`` picks for at most ``TRANSPOSE_ROWS`` rows) and one plain (x @ W); they step the
same positions of the same partial image, alternating which goes first at every position, and the
summed seconds are compared. That is how ``StepMatrix.TRANSPOSE_ROWS`` was chosen.

    python benchmarks/step_layout.py --models pixelsnail pixelcnnpp --batches 16,64,128,256 --positions 28
"""

from __future__ import annotations

import argparse
import time

import torch

from pixelmodels import create_model
from pixelmodels.nn.incremental import StepMatrix


def cache_with(model, n: int, transpose: bool):
    """A sampling cache whose large step products are transposed (or not), whatever the batch."""
    saved = StepMatrix.TRANSPOSE_AT, StepMatrix.TRANSPOSE_ROWS
    StepMatrix.TRANSPOSE_AT, StepMatrix.TRANSPOSE_ROWS = (saved[0], 2**62) if transpose else (2**62, 0)
    try:
        return model.sampling_cache(n)
    finally:
        StepMatrix.TRANSPOSE_AT, StepMatrix.TRANSPOSE_ROWS = saved


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="*", default=["pixelsnail", "pixelcnnpp"])
    p.add_argument("--batches", default="16,64,128,256")
    p.add_argument("--positions", type=int, default=28, help="positions stepped, from the first")
    p.add_argument("--preset", default="default")
    args = p.parse_args()
    args.positions = min(args.positions, 28 * 28)  # the image's positions at most
    try:
        batches = [int(b) for b in args.batches.split(",") if b]
    except ValueError:
        p.error(f"--batches: expected comma-separated integers, found {args.batches!r}")
    if not batches or min(batches) < 1 or args.positions < 1:
        p.error(f"--batches and --positions: expected values of at least 1, found {args.batches!r} and "
                f"{args.positions}")
    print(f"{torch.get_num_threads()} thread(s), torch {torch.__version__}, preset {args.preset}, 1x28x28, "
          f"the first {args.positions} positions, the order alternating at every position\n")
    print("| model | batch | transposed ms/step | plain ms/step | transposed / plain | largest difference |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in args.models:
        torch.manual_seed(0)
        model = create_model(name, image_shape=(1, 28, 28), n_bits=8, preset=args.preset).eval()
        for n in batches:
            x = torch.randint(0, 256, (n, 1, 28, 28), generator=torch.Generator().manual_seed(1))
            caches = {"transposed": cache_with(model, n, True), "plain": cache_with(model, n, False)}
            seconds, diff = dict.fromkeys(caches, 0.0), 0.0
            with torch.no_grad():
                for t in range(args.positions):
                    outs = {}
                    for key in (list(caches) if t % 2 == 0 else list(caches)[::-1]):
                        for _ in range(model.steps_per_position):
                            start = time.perf_counter()
                            outs[key] = caches[key].step(x, *divmod(t, 28))
                            seconds[key] += time.perf_counter() - start
                    diff = max(diff, float((outs["transposed"] - outs["plain"]).abs().max()))
            steps = args.positions * model.steps_per_position
            a, b = seconds["transposed"] / steps, seconds["plain"] / steps
            print(f"| {name} | {n} | {a * 1e3:.1f} | {b * 1e3:.1f} | {a / b:.3f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
