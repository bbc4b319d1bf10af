"""The short side-by-side trials that chose the recipes of the shipped models (issue 24's zoo).

Each trial trains one candidate on Fashion-MNIST (8 bits, class-conditional, batch 32, Adam, EMA 0.995)
for a fixed number of steps: about the same CPU-thread-minutes for every candidate, measured beforehand
with ``benchmarks/train.py --threads 1 --batch-size 32``. Two trials run at a time, one torch thread each,
so the candidates of a family share the machine's load. Each trial's figure is the EMA weights' bits/dim
on the first 1,000 test images.

    scripts/pretrained_trials.py                  # every trial, two at a time; prints the table
    scripts/pretrained_trials.py --only gated     # the trials whose name contains "gated"
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMON = ("--dataset fashion-mnist --conditional --batch-size 32 --epochs 100 --eval-every 100 --eval-limit 32 "
          "--ema 0.995 --seed 0 --n-samples 0 --lr 2e-3")
COSINE = "--lr-schedule cosine --warmup-steps 20"

# name -> (flags, steps); the steps give each candidate about 4 thread-minutes on the reference machine
TRIALS = {
    "gated small, exponential": ("--model gated-pixelcnn --preset small --lr-decay 0.998", 390),
    "gated small, cosine": (f"--model gated-pixelcnn --preset small {COSINE}", 390),
    "pixelcnn small": (f"--model pixelcnn --preset small {COSINE}", 600),
    "pixelcnn 48x6": (f"--model pixelcnn --preset small --n-channels 48 --n-blocks 6 {COSINE}", 250),
    "gated 48x8": (f"--model gated-pixelcnn --preset small --n-channels 48 --n-layers 8 {COSINE}", 137),
    "pixelcnnpp small": (f"--model pixelcnnpp --preset small {COSINE}", 170),
    "pixelcnnpp 48x2": (f"--model pixelcnnpp --preset small --n-filters 48 {COSINE}", 80),
    "pixelsnail small": (f"--model pixelsnail --preset small {COSINE}", 95),
    "pixelsnail 32": (f"--model pixelsnail --preset small --n-filters 32 {COSINE}", 222),
    "row-lstm small": (f"--model row-lstm --preset small {COSINE}", 215),
    "row-lstm 64/32x3": (f"--model row-lstm --preset small --n-channels 64 --n-state 32 --n-layers 3 {COSINE}", 440),
    "diagonal-bilstm small": (f"--model diagonal-bilstm --preset small {COSINE}", 63),
    "diagonal-bilstm 48/24x3": (f"--model diagonal-bilstm --preset small --n-channels 48 --n-state 24 "
                                f"--n-layers 3 {COSINE}", 200),
}
# The flagship's width: PixelCNN++ (the best family of the zoo at 30 thread-minutes) wider than the zoo's
# small preset, for about 35 thread-minutes with the zoo's schedule (exponential decay to a quarter of
# the learning rate at the last step), to compare with the zoo's pixelcnnpp at the same compute.
for filters, steps in ((48, 700),):
    TRIALS[f"flagship pixelcnnpp {filters}"] = (
        f"--model pixelcnnpp --preset small --n-filters {filters} --lr-decay {0.25 ** (1 / steps):.7f}", steps)

EVALUATE = """
import json, sys, torch, pixelmodels
model = pixelmodels.load(sys.argv[1])
test = pixelmodels.load_dataset("fashion-mnist", "test")
print(json.dumps(dict(bpd=pixelmodels.evaluate(model, test, 250, limit=1000), params=model.n_parameters())))
"""


def start(name: str, out: Path) -> subprocess.Popen:
    flags, steps = TRIALS[name]
    run = out / name.replace(" ", "_").replace(",", "").replace("/", "-")
    train = [sys.executable, "-m", "pixelmodels", "train", *shlex.split(COMMON), *shlex.split(flags),
             "--max-steps", str(steps), "--out", str(run), "--overwrite", "--no-progress"]
    script = (f"{shlex.join(train)} > {run}.log 2>&1 && "
              f"{shlex.join([sys.executable, '-c', EVALUATE, str(run)])} > {run}.json")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(["bash", "-c", f"mkdir -p {out} && {script}"], cwd=ROOT, env=env)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="run the trials whose name contains this")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "trials")
    p.add_argument("--parallel", type=int, default=2)
    args = p.parse_args()
    names = [n for n in TRIALS if args.only in n]
    rows, running = [], []
    while names or running:
        while names and len(running) < args.parallel:
            name = names.pop(0)
            running.append((name, start(name, args.out), time.perf_counter()))
        name, proc, t0 = running.pop(0)
        _, status, usage = os.wait4(proc.pid, 0)  # the CPU time of the trial's processes, once they ended
        proc.returncode = os.waitstatus_to_exitcode(status)
        run = args.out / name.replace(" ", "_").replace(",", "").replace("/", "-")
        result = json.loads(run.with_suffix(".json").read_text()) if proc.returncode == 0 else {}
        minutes = (usage.ru_utime + usage.ru_stime) / 60
        rows.append((name, TRIALS[name][1], result.get("params"), result.get("bpd"), minutes))
        print(f"{name}: {result}, wall {time.perf_counter() - t0:.0f} s, {minutes:.1f} CPU thread-minutes", flush=True)
    print("\n| trial | steps | images | parameters | CPU thread-minutes | test bits/dim (first 1,000, EMA) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, steps, params, bpd, minutes in rows:
        print(f"| {name} | {steps} | {32 * steps:,} | {params or 0:,} | {minutes:.1f} | "
              f"{bpd if bpd is None else f'{bpd:.4f}'} |")


if __name__ == "__main__":
    main()
