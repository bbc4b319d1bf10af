"""PixelSNAIL's attention memory: a materialized softmax against ``scaled_dot_product_attention``.

A training step keeps, for the backward, what each of PixelSNAIL's ``n_blocks`` attention layers computed.
At the attention shapes of a PixelSNAIL preset (T = H * W positions, ``n_heads`` heads, ``key_size`` and
``value_size`` features per head, ``n_blocks`` layers) this runs the forward and backward of ``n_blocks``
causal attentions over a batch, each variant in its own subprocess:

* ``materialized``: ``softmax(q k^T / sqrt(key_size) + causal mask) v``, written out here: (T, T)
  scores and weights per head, kept for the backward;
* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)``, a fused
  kernel where the backend has one for these shapes. NOTE: on the CPU the flash kernel needs one head
  size for q, k and v; with ``key_size != value_size`` PyTorch falls back to the materialized math;
* ``sdpa, one head size`` (when the sizes differ): q, k and v zero-padded to the larger size (the dot
  products are unchanged), so that the CPU's flash kernel runs;
* ``training step``: one whole training step of the model as the library runs it (forward, loss,
  backward, Adam), for scale (``--no-step`` skips it).

Memory is what a pass adds once warm (after one untimed pass: the kernels' code and the libraries'
buffers loaded, Adam's state allocated): on the CPU the child's peak resident set (``VmHWM``, reset to
the current resident set just before by writing 5 to ``/proc/self/clear_refs``) less the resident set
then (the children run with glibc's mmap threshold fixed at 64 KiB, ``MALLOC_MMAP_THRESHOLD_``, so that
freed tensors leave the resident set instead of being kept for reuse); on CUDA
``torch.cuda.max_memory_allocated`` less the memory allocated then. The children run under
an address-space limit (``--memory-limit-gb``, CPU), so a batch that does not fit fails alone. Time is
the median of ``--steps`` passes after the warm-up. The variants' outputs are compared in this process
at batch 1 (the largest difference is printed).

    python benchmarks/attention_memory.py --preset small --batch-size 16
    python benchmarks/attention_memory.py --preset default --batch-size 4 --batch-size 16 --no-step
    python benchmarks/attention_memory.py --preset default --batch-size 4 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

VARIANTS = ("materialized", "sdpa", "sdpa, one head size", "training step")


def materialized(q, k, v):
    """Causal attention (key s <= query t) with the (T, T) weights written out."""
    import torch

    t = q.shape[-2]
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, heads, T, T)
    future = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    return torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1) @ v  # (B, heads, T, value_size)


def sdpa(q, k, v, one_size: bool = False):
    import torch.nn.functional as F

    key_size, value_size = q.shape[-1], v.shape[-1]
    if one_size:
        d = max(key_size, value_size)
        q, k, v = F.pad(q, (0, d - key_size)), F.pad(k, (0, d - key_size)), F.pad(v, (0, d - value_size))
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=key_size**-0.5)
    return out[..., :value_size]


ATTENTION = {"materialized": materialized, "sdpa": sdpa, "sdpa, one head size": lambda q, k, v: sdpa(q, k, v, True)}


def shapes(preset: str, size: int) -> dict:
    """The attention sizes of pixelsnail at ``preset`` on 3 x size x size images."""
    from pixelmodels import create_model

    o = create_model("pixelsnail", image_shape=(3, size, size), preset=preset).config.options
    return dict(t=size * size, blocks=o["n_blocks"], heads=o["n_heads"], key_size=o["key_size"],
                value_size=o["value_size"])


def inputs(s: dict, batch: int, device: str, seed: int = 0):
    """Queries, keys (B, heads, T, key_size) and values (B, heads, T, value_size) of every block, as leaves."""
    import torch

    g = torch.Generator(device).manual_seed(seed)
    q, v = (batch, s["heads"], s["t"], s["key_size"]), (batch, s["heads"], s["t"], s["value_size"])
    return [tuple(torch.randn(shape, generator=g, device=device).requires_grad_() for shape in (q, q, v))
            for _ in range(s["blocks"])]


def resident_kib(field: str = "VmRSS") -> int:
    """The process's resident set (``VmRSS``) or its peak since the last reset (``VmHWM``), KiB."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def measure(variant: str, preset: str, size: int, batch: int, steps: int, device: str, sizes: dict) -> dict:
    """``steps`` forward-and-backward passes of ``variant`` in this process; the measurements. ``sizes``: the
    attention's, from ``shapes`` in the parent (no model is built here for them)."""
    import torch

    cuda = device.startswith("cuda")
    torch.manual_seed(0)
    if variant == "training step":
        from pixelmodels import create_model

        model = create_model("pixelsnail", image_shape=(3, size, size), preset=preset).to(device).train()
        optimizer = torch.optim.Adam(model.parameters())
        x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, device=device)

        def run():
            optimizer.zero_grad(set_to_none=True)
            model.bits_per_dim(x).mean().backward()
            optimizer.step()
    else:
        qkv, attend = inputs(sizes, batch, device), ATTENTION[variant]

        def run():
            for q, k, v in qkv:
                q.grad = k.grad = v.grad = None
            sum(attend(q, k, v).sum() for q, k, v in qkv).backward()
    run()  # warm-up: the kernels' code and the libraries' buffers are loaded, Adam's state allocated
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # the peak resident set starts again from the current one
        base = resident_kib()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if cuda:
        grown = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        grown = (resident_kib("VmHWM") - base) / 1024
    return dict(memory_mib=grown, seconds=statistics.median(times), threads=torch.get_num_threads())


def largest_difference(s: dict, device: str) -> dict:
    """The largest difference of each sdpa variant's output from the materialized one, at batch 1."""
    import torch

    q, k, v = inputs(dict(s, blocks=1), 1, device)[0]
    with torch.no_grad():
        ref = materialized(q, k, v)
        return {name: float((f(q, k, v) - ref).abs().max()) for name, f in ATTENTION.items() if name != "materialized"}


def run_child(args, variant: str, batch: int, sizes: dict) -> dict:
    """``measure`` in a fresh subprocess (CPU: under the address-space limit); {"error": ...} if it fails."""
    limit = int(args.memory_limit_gb * 2**30)

    def limit_memory():
        if not args.device.startswith("cuda"):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    payload = dict(variant=variant, preset=args.preset, size=args.size, batch=batch, steps=args.steps,
                   device=args.device, sizes=sizes)
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")  # freed memory goes back
    if args.threads:
        env["OMP_NUM_THREADS"] = str(args.threads)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(payload)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, preexec_fn=limit_memory,
                              env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"over the {args.timeout:g} s timeout"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        oom = any(s in last.lower() for s in ("alloc", "out of memory", "memoryerror")) or proc.returncode == -9
        return {"error": f"out of memory ({args.memory_limit_gb:g} GiB limit)" if oom else last[:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="default", help="the pixelsnail preset whose attention sizes are used")
    p.add_argument("--size", type=int, default=32, help="image height and width (T = size^2 positions)")
    p.add_argument("--batch-size", type=int, action="append", help="repeatable; default 16")
    p.add_argument("--steps", type=int, default=1, help="passes per variant; time is their median")
    p.add_argument("--no-step", action="store_true", help="skip the whole model's training step")
    p.add_argument("--threads", type=int, default=0, help="torch threads per child (0: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per child")
    p.add_argument("--memory-limit-gb", type=float, default=16.0, help="address-space limit per child (CPU)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(measure(**json.loads(args.worker))))
        return
    print("command: python " + " ".join(sys.argv), flush=True)
    s = shapes(args.preset, args.size)
    differences = largest_difference(s, args.device)
    variants = [v for v in VARIANTS if not (v == "training step" and args.no_step)
                and not (v == "sdpa, one head size" and s["key_size"] == s["value_size"])]
    rows = []
    for batch in args.batch_size or [16]:
        for variant in variants:
            r = run_child(args, variant, batch, s)
            rows.append((batch, variant, r))
            print(f"batch {batch}, {variant}: {r}", flush=True)
    import torch

    threads = ",".join(sorted({str(r["threads"]) for *_, r in rows if "threads" in r}))
    print(f"\npixelsnail:{args.preset} attention, 3x{args.size}x{args.size}: T = {s['t']} positions, {s['blocks']} "
          f"layers of {s['heads']} head(s), key_size {s['key_size']}, value_size {s['value_size']}; forward and "
          f"backward of every layer (the training step: forward, loss, backward, Adam of the whole model); "
          f"{args.device}, {threads} threads, torch {torch.__version__}; largest difference from the materialized "
          "output: " + ", ".join(f"{k} {v:.1e}" for k, v in differences.items()) + "\n")
    print("| batch | variant | memory (MiB) | s / pass | memory / sdpa's |")
    print("| --- | --- | --- | --- | --- |")
    for batch, variant, r in rows:
        if "error" in r:
            print(f"| {batch} | {variant} | failed: {r['error']} | | |")
            continue
        best = min((x["memory_mib"] for b, v, x in rows if b == batch and v.startswith("sdpa") and "error" not in x),
                   default=0.0)
        ratio = f"{r['memory_mib'] / best:.2f}x" if best > 0 else "-"
        print(f"| {batch} | {variant} | {r['memory_mib']:,.0f} | {r['seconds']:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
