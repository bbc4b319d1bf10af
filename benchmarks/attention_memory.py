"""Peak memory and time of one PixelSNAIL training step: SDPA attention against the explicit (T x T) path.

One training step (forward, loss, backward, Adam step) on random 32x32 RGB
images, ``attention="sdpa"`` and ``attention="explicit"``, each variant in its
own subprocess so the peaks do not mix. Memory is the growth of the child's
peak resident set size, ``getrusage(RUSAGE_SELF).ru_maxrss`` after the step(s)
minus before building the batch (so it counts the activations, the gradients
and Adam's state, not the weights); time is the wall-clock seconds of a step
(the median of ``--steps``, default 1: the first step, Adam's state allocation included).
Each child runs under an address-space limit (``--memory-limit-gb``), so a
batch that does not fit fails alone instead of waking the OOM killer.

    python benchmarks/attention_memory.py                          # default preset, batch 16
    python benchmarks/attention_memory.py --batch-size 16 --batch-size 4
    python benchmarks/attention_memory.py --preset small --batch-size 8
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = ("sdpa", "explicit")


def step(preset: str, attention: str, batch: int, size: int, steps: int = 1, threads: int = 0) -> dict:
    """``steps`` training steps in this process; the measurements as a dict (time: the median step)."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from pixelmodels import create_model
    from pixelmodels.models.pixelsnail import TRAIN_DEFAULTS

    torch.manual_seed(0)
    model = create_model("pixelsnail", image_shape=(3, size, size), preset=preset, attention=attention)
    opt = torch.optim.Adam(model.parameters(), lr=TRAIN_DEFAULTS["lr"], betas=TRAIN_DEFAULTS["adam_betas"])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        loss = model.bits_per_dim(x).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return dict(peak_increase_mib=(after - before) / 1024, peak_mib=after / 1024, seconds=seconds,
                loss=loss.item(), parameters=model.n_parameters(), threads=torch.get_num_threads())


def run_child(args, attention: str, batch: int) -> dict:
    """``step`` in a fresh subprocess under the address-space limit; {"error": ...} if it fails."""
    limit = int(args.memory_limit_gb * 2**30)

    def limit_memory():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    cmd = [sys.executable, __file__, "--worker", attention, "--preset", args.preset, "--batch-size", str(batch),
           "--size", str(args.size), "--steps", str(args.steps), "--threads", str(args.threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, preexec_fn=limit_memory)
    except subprocess.TimeoutExpired:
        return {"error": f"over the {args.timeout:g} s timeout"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        oom = "alloc" in last.lower() or "memory" in last.lower()
        return {"error": f"out of memory (limit {args.memory_limit_gb:g} GiB)" if oom else last[:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def threads_used(rows) -> str:
    """The torch thread counts the children reported."""
    return ",".join(sorted({str(r["threads"]) for _, results in rows for r in results.values() if "threads" in r}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default")
    p.add_argument("--batch-size", type=int, action="append", help="repeatable; default 16")
    p.add_argument("--size", type=int, default=32, help="image height and width")
    p.add_argument("--steps", type=int, default=1, help="training steps per variant; time is their median")
    p.add_argument("--threads", type=int, default=0, help="torch threads per child (0: torch's default)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per child")
    p.add_argument("--memory-limit-gb", type=float, default=16.0, help="address-space limit per child")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    batches = args.batch_size or [16]
    if args.worker:
        print(json.dumps(step(args.preset, args.worker, batches[0], args.size, args.steps, args.threads)))
        return
    print("command: python " + " ".join(sys.argv), flush=True)
    rows = []
    for batch in batches:
        results = {}
        for attention in VARIANTS:
            results[attention] = r = run_child(args, attention, batch)
            print(f"batch {batch}, {attention}: {r}", flush=True)
        rows.append((batch, results))
    print(f"\npixelsnail:{args.preset}, {args.size}x{args.size} RGB, {args.steps} training step(s) (forward, loss, "
          f"backward, Adam), each variant in its own process ({threads_used(rows)} torch threads); "
          f"memory = growth of peak RSS (ru_maxrss) over the step(s)")
    print("| batch | attention | peak RSS increase (MiB) | peak RSS (MiB) | s / step |")
    print("| --- | --- | --- | --- | --- |")
    for batch, results in rows:
        for attention in VARIANTS:
            r = results[attention]
            if "error" in r:
                print(f"| {batch} | {attention} | failed: {r['error']} | | |")
            else:
                print(f"| {batch} | {attention} | {r['peak_increase_mib']:,.0f} | {r['peak_mib']:,.0f} "
                      f"| {r['seconds']:.1f} |")
        s, e = results["sdpa"], results["explicit"]
        if "error" not in s and "error" not in e:
            print(f"| {batch} | explicit / sdpa | {e['peak_increase_mib'] / s['peak_increase_mib']:.2f}x "
                  f"| {e['peak_mib'] / s['peak_mib']:.2f}x | {e['seconds'] / s['seconds']:.2f}x |")


if __name__ == "__main__":
    main()
