"""Training steps with the process keeping its freed memory, against glibc's defaults, side by side.

``pixelmodels train`` on the CPU calls ``pixelmodels.evaluation.keep_freed_memory()`` (glibc's mmap
threshold raised, heap trimming off), so that the activations a step frees are reused by the next step
instead of being unmapped and mapped again as fresh zero-filled pages. This measures what that buys:
for the issue-15 reference configurations of ``benchmarks/train.py`` (fp32, 1x28x28, batch 16), fresh
processes of this tree alternating between the two settings (``kept``, ``system``), each running that
script's own step; the median over ``--rounds`` of each process's median step, the page faults per
timed step, the peak resident memory, and the spread of the last losses (the same computation: 0).

    python benchmarks/allocator.py                       # ~8 min on 2 cores
    python benchmarks/allocator.py --rounds 3 --labels "ref pixelcnn++ 32x2"
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from before_after import ROOT, TRAIN_LABELS, alternate, errors, fmt, run, train_labels  # noqa: E402
from train import REFERENCES  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=5, help="processes per setting and configuration")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps per process")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--labels", default=",".join(TRAIN_LABELS), help="comma-separated configurations")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per process")
    args = p.parse_args()
    labels = train_labels(p, args.labels)
    if args.rounds < 1 or args.steps < 1:
        p.error("--rounds and --steps must be at least 1")
    start = time.perf_counter()
    rows = []
    for label in labels:
        cfg = next(c for c in REFERENCES if c.label == label and c.shape == "1x28x28")

        def measure(setting):
            payload = dict(kind="train", config=dict(cfg.__dict__), dtype="fp32", device="cpu", threads=args.threads,
                           warmup=args.warmup, steps=args.steps, max_seconds=1e9, keep_freed=setting == "kept")
            cmd = [sys.executable, str(HERE / "train.py"), "--worker", json.dumps(payload)]
            return run(cmd, ROOT / "src", args.threads, args.timeout)

        results = alternate(args.rounds, measure, ("system", "kept"))
        row = [label]
        for setting in ("system", "kept"):
            ok = [r for r in results[setting] if "error" not in r]
            row.append(dict(step=statistics.median(r["step_s"] for r in ok) if ok else None,
                            faults=statistics.median(r["page_faults_per_step"] for r in ok) if ok else None,
                            memory=max((r["memory_mib"] for r in ok), default=None),
                            applied=all(r["kept_freed_memory"] == (setting == "kept") for r in ok)))
        losses = [r["loss"] for rs in results.values() for r in rs if "error" not in r]
        row.append(max(losses) - min(losses) if losses else None)
        print(f"{label}: {row[1]} {row[2]} {errors(results)}", flush=True)
        rows.append(row)
    print(f"\n{args.threads} thread(s), median of {args.rounds} processes per setting ({args.warmup} warm-up + "
          f"{args.steps} timed steps each), wall {time.perf_counter() - start:.0f} s:\n")
    print("| configuration | system ms/step | kept ms/step | speed-up | page faults per step, system | kept | "
          "peak memory MiB, system | kept | largest difference of the last losses |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, system, kept, spread in rows:
        if not (system["applied"] and kept["applied"]):
            print(f"| {label.removeprefix('ref ')} | the setting was not applied as asked (no glibc?) |")
            continue
        ratio = system["step"] / kept["step"] if system["step"] and kept["step"] else None
        ms = [None if s["step"] is None else s["step"] * 1e3 for s in (system, kept)]
        print(f"| {label.removeprefix('ref ')} | {fmt(ms[0], '{:.0f}')} | {fmt(ms[1], '{:.0f}')} | "
              f"{fmt(ratio, '{:.3f}x')} | {fmt(system['faults'], '{:.0f}')} | {fmt(kept['faults'], '{:.0f}')} | "
              f"{fmt(system['memory'], '{:.0f}')} | {fmt(kept['memory'], '{:.0f}')} | {fmt(spread, '{:.1e}')} |")


if __name__ == "__main__":
    main()
