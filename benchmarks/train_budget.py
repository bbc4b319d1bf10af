"""Test bits/dim reached after the same wall-clock training budget, models side by side.

Every model trains at the same time in its own process with one thread (so the
comparison sees the same machine load), for ``--minutes`` of training steps,
then its EMA weights are evaluated on the whole test set.

    python benchmarks/train_budget.py --minutes 10 --dataset fashion-mnist \\
        --model gated-pixelcnn:small --model pixelcnnpp:small
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from pixelmodels import evaluate, load, load_dataset

COMMON = ["--batch-size", "32", "--ema", "0.995", "--n-samples", "16", "--epochs", "100", "--no-progress",
          "--overwrite", "--log-every", "50"]
LR = {"gated-pixelcnn": ["--lr", "2e-3", "--lr-decay", "0.9998"], "pixelcnnpp": ["--lr", "2e-3", "--lr-decay", "0.9998"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="NAME:PRESET, repeatable")
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--out", type=Path, default=Path("runs/train_budget"))
    p.add_argument("--report-only", action="store_true", help="only print the table of runs already in --out")
    args = p.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = {}
    start = time.time()
    for spec in args.model:
        name, _, preset = spec.partition(":")
        out = args.out / f"{name}-{preset or 'default'}"
        cmd = [sys.executable, "-m", "pixelmodels", "train", "--model", name, "--preset", preset or "default",
               "--dataset", args.dataset, "--max-minutes", str(args.minutes), "--out", str(out),
               *COMMON, *LR.get(name, [])]
        print(" ".join(cmd[1:]), flush=True)
        procs[spec] = (None if args.report_only else subprocess.Popen(cmd, env=env), out)
    rows = []
    for spec, (proc, out) in procs.items():
        if proc is not None and proc.wait() != 0:
            raise SystemExit(f"{spec} failed with exit code {proc.returncode}")
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        final = [m for m in metrics if "test_bpd" in m][-1]
        model = load(out)
        raw = copy.deepcopy(model)
        raw.load_state_dict(torch.load(out / "training_state.pt", weights_only=True)["model"])
        test = load_dataset(args.dataset, "test")
        rows.append((spec, model.n_parameters(), final["step"], final["test_bpd"], evaluate(raw.eval(), test)))
    wall = "" if args.report_only else f" (wall {time.time() - start:.0f} s)"
    print(f"\n{args.minutes:g} minutes of training each, 1 thread each, side by side{wall}, "
          f"{args.dataset} test set:")
    print("| model:preset | parameters | steps (batch 32) | test bits/dim, EMA weights | test bits/dim, raw weights |")
    print("| --- | --- | --- | --- | --- |")
    for spec, n_params, steps, bpd, raw_bpd in rows:
        print(f"| {spec} | {n_params:,} | {steps} | {bpd:.4f} | {raw_bpd:.4f} |")


if __name__ == "__main__":
    main()
