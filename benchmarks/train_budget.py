"""Test bits/dim reached by training recipes for the same budget, and the wall time each took.

A recipe is a model, its preset and any ``pixelmodels train`` flags (batch, steps,
learning-rate schedule, EMA, conditioning). Each trains in its own process, then
its EMA weights (what ``pixelmodels train`` evaluates) and its raw weights are
evaluated on the whole test set.

* side by side (the default): every recipe at the same time, one thread each, so
  that all of them see the same machine load; ``--minutes`` gives every one the
  same wall-clock budget of training steps (or the recipes fix their steps);
* ``--sequential``: one after another with ``--threads`` threads each (the
  machine to itself): the wall time of each run as ``make demo`` sees it.

    python benchmarks/train_budget.py --minutes 10 --dataset fashion-mnist \\
        --model gated-pixelcnn:small --model pixelcnnpp:small
    python benchmarks/train_budget.py --sequential --threads 2 \\
        --recipe "demo before=gated-pixelcnn:small --conditional --batch-size 32 --max-steps 900 --lr 2e-3 --lr-decay 0.9995" \\
        --recipe "demo now=gated-pixelcnn:small --conditional --batch-size 16 --max-steps 1800 --lr 2e-3 --lr-decay 0.99975"

``--model NAME:PRESET`` is the recipe of the issue-3 table (batch 32, ``--ema 0.995``, the learning
rates below); a ``--recipe`` starts from ``pixelmodels train``'s own defaults.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from pixelmodels import evaluate, load, load_dataset

COMMON = ["--batch-size", "32", "--ema", "0.995", "--n-samples", "16", "--epochs", "100", "--no-progress",
          "--overwrite", "--log-every", "50"]
LR = {"gated-pixelcnn": ["--lr", "2e-3", "--lr-decay", "0.9998"], "pixelcnnpp": ["--lr", "2e-3", "--lr-decay", "0.9998"]}
RECIPE = ["--n-samples", "0", "--epochs", "100", "--no-progress", "--overwrite", "--log-every", "50"]


def parse_recipe(text: str) -> tuple[str, str, str, list[str]]:
    """'LABEL=NAME:PRESET [flags]' -> (label, name, preset, flags)."""
    label, sep, rest = text.partition("=")
    words = shlex.split(rest)
    if not sep or not label.strip() or not words or ":" not in words[0]:
        raise SystemExit(f"--recipe: expected 'LABEL=NAME:PRESET [train flags]', found {text!r}")
    name, _, preset = words[0].partition(":")
    return label.strip(), name, preset or "default", words[1:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", default=[], help="NAME:PRESET with the issue-3 recipe, repeatable")
    p.add_argument("--recipe", action="append", default=[], help="'LABEL=NAME:PRESET [pixelmodels train flags]', "
                   "repeatable")
    p.add_argument("--minutes", type=float, default=None, help="training budget of every run (--max-minutes)")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--sequential", action="store_true", help="one run after another instead of side by side")
    p.add_argument("--threads", type=int, default=None, help="threads per run (default: 1 side by side, all "
                   "sequentially)")
    p.add_argument("--out", type=Path, default=Path("runs/train_budget"))
    p.add_argument("--report-only", action="store_true", help="only print the table of runs already in --out")
    args = p.parse_args()
    runs = []
    for spec in args.model:
        name, _, preset = spec.partition(":")
        runs.append((spec, name, preset or "default", COMMON + LR.get(name, [])))
    runs += [(label, name, preset, RECIPE + flags) for label, name, preset, flags in map(parse_recipe, args.recipe)]
    if not runs:
        p.error("give at least one --model or --recipe")
    if args.minutes is None and not all("--max-steps" in flags for *_, flags in runs):
        p.error("--minutes: needed unless every recipe fixes its --max-steps")
    threads = args.threads or (os.cpu_count() if args.sequential else 1)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    start = time.time()
    load_before = os.getloadavg()[0]
    procs, walls = {}, {}
    for label, name, preset, flags in runs:
        out = args.out / re.sub(r"[^A-Za-z0-9_.-]+", "-", label)
        budget = ["--max-minutes", str(args.minutes)] if args.minutes is not None else []
        cmd = [sys.executable, "-m", "pixelmodels", "train", "--model", name, "--preset", preset,
               "--dataset", args.dataset, "--out", str(out), *budget, *flags]
        print(" ".join(cmd[1:]), flush=True)
        if args.report_only:
            procs[label] = (None, out)
            continue
        began = time.time()
        proc = subprocess.Popen(cmd, env=env)
        procs[label] = (proc, out)
        if args.sequential:
            if proc.wait() != 0:
                raise SystemExit(f"{label} failed with exit code {proc.returncode}")
            walls[label] = time.time() - began
    rows = []
    for label, (proc, out) in procs.items():
        if proc is not None and not args.sequential:
            if proc.wait() != 0:
                raise SystemExit(f"{label} failed with exit code {proc.returncode}")
            walls[label] = time.time() - start
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        final = [m for m in metrics if "test_bpd" in m][-1]
        speeds = [m["images_per_sec"] for m in metrics if "images_per_sec" in m]
        config = json.loads((out / "config.json").read_text())
        batch = config.get("train", {}).get("batch_size")
        model = load(out)
        raw = copy.deepcopy(model)
        raw.load_state_dict(torch.load(out / "training_state.pt", weights_only=True)["model"])
        test = load_dataset(args.dataset, "test")
        rows.append((label, model.n_parameters(), batch, final["step"], sum(speeds) / len(speeds) if speeds else None,
                     walls.get(label), final["test_bpd"], evaluate(raw.eval(), test)))
    mode = "one after another" if args.sequential else "side by side"
    budget = f"{args.minutes:g} minutes of training each" if args.minutes is not None else "the recipes' steps"
    wall = "" if args.report_only else f", wall {time.time() - start:.0f} s"
    print(f"\n{budget}, {threads} thread(s) each, {mode}{wall}, 1-minute load {load_before:.2f} before and "
          f"{os.getloadavg()[0]:.2f} after, {args.dataset} test set:")
    print("| recipe | parameters | batch | steps | mean images/s | run wall s (training + evaluation) | "
          "test bits/dim, EMA weights | test bits/dim, raw weights |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, n_params, batch, steps, speed, seconds, bpd, raw_bpd in rows:
        cells = [label, f"{n_params:,}", str(batch), str(steps), "-" if speed is None else f"{speed:.1f}",
                 "-" if seconds is None else f"{seconds:.0f}", f"{bpd:.4f}", f"{raw_bpd:.4f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
