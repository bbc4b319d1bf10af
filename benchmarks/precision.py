"""bf16 against fp32 on a zoo recipe: does ``--precision auto``'s bf16 train as well, and how much faster?

Trains the zoo's PixelCNN++ ``small`` recipe (``scripts/train_pretrained.py``, ``fashion-mnist-pixelcnnpp``: the
family of the flagship, 1320 steps of 32 images) twice, side by side: two ``pixelmodels train`` processes of one
torch thread each, ``--precision fp32`` and ``--precision bf16``, the same seed and so the same initialization
and data order, the same steps. Then it measures each run's EMA weights on the whole test split in fp32
(``pixelmodels.evaluation.evaluate``, as training's own evaluation does) and prints a
markdown table: precision, steps, wall time, CPU thread-minutes (the process's user + system time), training
images/s (the median of ``metrics.jsonl``'s), test bits/dim, and bf16's difference from fp32 relative to fp32,
against the 0.5% within which ``--precision auto`` may choose bf16 (``pixelmodels.devices.auto_precision``).

    python benchmarks/precision.py                      # the comparison: fp32 takes the recipe's 30 thread-minutes
    python benchmarks/precision.py --steps 3 --eval-limit 64                        # a smoke run
    python benchmarks/precision.py --steps 2 --eval-limit 16 --out /tmp/p \\
        --train-flags "--preset tiny --batch-size 8 --data-dir /tmp/fmnist"         # the test's
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "fashion-mnist-pixelcnnpp"
LIMIT = 0.005  # bf16 may be chosen by auto where its bits/dim is within 0.5% of fp32's


def recipe() -> tuple[str, int]:
    """The zoo recipe's ``pixelmodels train`` flags (without --max-steps and --out) and its steps."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from train_pretrained import RECIPES

    _, _, flags, steps = RECIPES[RECIPE]
    return flags, steps


def train_side_by_side(flags: list[str], out: Path) -> dict:
    """Start both runs at once, one thread each; ``{precision: (wall seconds, CPU seconds)}`` once both end."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = {}
    for precision in ("fp32", "bf16"):
        command = [sys.executable, "-m", "pixelmodels", "train", *flags, "--precision", precision,
                   "--out", str(out / precision), "--overwrite", "--no-progress"]
        print("$", shlex.join(["pixelmodels", *command[3:]]), file=sys.stderr)
        started[precision] = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL), time.perf_counter()
    done, by_pid = {}, {process.pid: precision for precision, (process, _) in started.items()}
    while by_pid:  # whichever ends first, timed when it ends
        pid, status, usage = os.wait4(-1, 0)  # that child's own CPU time
        if pid not in by_pid:
            continue
        precision = by_pid.pop(pid)
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"precision.py: the {precision} run failed (exit {os.waitstatus_to_exitcode(status)})")
        done[precision] = time.perf_counter() - started[precision][1], usage.ru_utime + usage.ru_stime
    return {precision: done[precision] for precision in started}


def measure_bpd(run: Path, limit: int | None) -> float:
    """Bits/dim of ``run``'s EMA weights on its test split (the first ``limit`` images), in fp32."""
    from pixelmodels.app.runs import load_data
    from pixelmodels.checkpoint import load_with_config
    from pixelmodels.config import DataConfig, from_dict
    from pixelmodels.evaluation import evaluate

    model, stored = load_with_config(run)
    test_set = load_data(from_dict(DataConfig, stored["data"]), "test")
    return evaluate(model, test_set, 256, torch.device("cpu"), limit, precision="fp32")


def images_per_sec(run: Path) -> float:
    """The median training images/s of ``run``'s metrics.jsonl (logged every 10 steps; NaN before)."""
    rates = [r["images_per_sec"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
             if "images_per_sec" in r]
    return statistics.median(rates) if rates else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, help="steps of each run (default: the recipe's; fewer for a smoke run)")
    p.add_argument("--eval-limit", type=int, help="measure the first N test images only (a smoke run)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "precision", help="the runs go to OUT/fp32, OUT/bf16")
    p.add_argument("--train-flags", default="", help="flags appended to the recipe's (they win): a smoke run's")
    args = p.parse_args()
    flags, steps = recipe()
    steps = args.steps or steps
    train_flags = [*shlex.split(flags), "--max-steps", str(steps), *shlex.split(args.train_flags)]
    timed = train_side_by_side(train_flags, args.out)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    bpd = {precision: measure_bpd(args.out / precision, args.eval_limit) for precision in timed}

    from pixelmodels.devices import describe_machine

    measured = "whole test split" if args.eval_limit is None else f"first {args.eval_limit} test images"
    print(f"\n{RECIPE} recipe, {steps} steps, two processes side by side of one thread each; {describe_machine()}")
    print(f"\n| precision | steps | wall time (min) | CPU thread-minutes | images/s | test bits/dim (EMA, {measured}, "
          "fp32) | relative to fp32 |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for precision, (wall, cpu) in timed.items():
        rate = images_per_sec(args.out / precision)
        relative = "-" if precision == "fp32" else f"{100 * (bpd[precision] - bpd['fp32']) / bpd['fp32']:+.2f}%"
        print(f"| {precision} | {steps:,} | {wall / 60:.1f} | {cpu / 60:.1f} | "
              f"{'-' if math.isnan(rate) else f'{rate:.1f}'} | {bpd[precision]:.4f} | {relative} |")
    relative = abs(bpd["bf16"] - bpd["fp32"]) / bpd["fp32"]
    print(f"\nbf16 ends {100 * relative:.2f}% from fp32's bits/dim: "
          f"{'within' if relative <= LIMIT else 'outside'} the {100 * LIMIT:g}% that --precision auto allows")


if __name__ == "__main__":
    main()
