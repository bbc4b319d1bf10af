"""Training throughput: images/s, achieved FLOP/s against the machine's matmul peak, peak memory.

One training step = forward, bits/dim loss (float32), backward, Adam step: the library's
``pixelmodels.training.train_step``, which ``pixelmodels train`` runs (without its EMA and schedule updates):
bf16 is ``torch.autocast`` around the forward, ``--compile`` puts the model's forward under
``torch.compile`` (the head stays eager). Each (configuration, dtype) runs in a fresh subprocess:
``--warmup`` untimed steps (at least one when compiled: it compiles), then up to ``--steps`` timed steps
(fewer once ``--max-seconds`` are spent; at least one); images/s = batch / median step. With ``--compile``
the same process times the compiled model too, its steps alternating with the eager ones (so both see
the same load on a shared machine), and evaluation: the forward and loss of the same batch in eval mode
without gradients (compiled: a second graph), eager and compiled alternating after one untimed call each.

* FLOPs of a step: ``torch.utils.flop_counter.FlopCounterMode`` over the forward and backward of one
  image (matrix products, convolutions and attention, as executed), times the batch.
* Peak: the fastest of repeated n x n matrix products in each dtype, measured by this run before and
  after the configurations (the larger of the two is used).
* Peak memory: the child's peak resident set (``ru_maxrss``, the libraries' ~0.4 GiB included) on the
  CPU, ``torch.cuda.max_memory_allocated`` on CUDA.
* ``--profile``: the torch profiler's top operators (self CPU time) over the timed steps' configuration.

Rows: the families' presets (``--models`` x ``--presets`` x ``--shapes``; ``pixelsnail:default`` only
with ``--large``), the reference configurations below, and any ``--config "NAME:PRESET key=value ..."``
(model options, or ``n_codes=K`` for a prior over K codes). Reference configurations, with the images/s
of a reference PyTorch implementation (fp32, 2 CPU threads, batch 16):

* ``ref gated 64x5``: ``gated-pixelcnn`` n_channels=64, n_layers=5, kernel_size=5, input_kernel_size=5,
  n_out_channels=256; 22.9 at 1x28x28, 14.4 at 3x32x32.
* ``ref pixelcnn++ 32x2``: ``pixelcnnpp`` n_filters=32, n_blocks=2, n_mixtures=10, dropout=0.5; 42.0
  at 1x28x28, 31.9 at 3x32x32.
* ``ref pixelsnail 64 2x2``: ``pixelsnail`` preset ``small`` (64 filters, 2 blocks of 2 residual
  layers); 16.2 at 1x28x28.

    python benchmarks/train.py --quick                                # smoke run: tiny presets, one step
    python benchmarks/train.py --no-presets --dtypes fp32             # the reference rows
    python benchmarks/train.py --no-presets --compile --dtypes fp32   # the same, eager beside compiled
    python benchmarks/train.py --no-references --presets small --shapes 1x28x28 --profile
    python benchmarks/train.py --no-presets --no-references --shapes 1x28x28 \\
        --config gated-pixelcnn:small --config "row-lstm:small n_channels=74 n_state=37"
    python benchmarks/train.py --no-presets --no-references --shapes 1x32x32 \\
        --config "gated-pixelcnn:small n_codes=512" --config gated-pixelcnn:small   # codes prior vs images
    python benchmarks/train.py --device cuda --batch-size 64

Weight-normalized models train without the data-dependent initialization here (it changes the weights'
values, not the cost of a step).
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
from dataclasses import asdict, dataclass, field

from pixelmodels.errors import PixelModelsError
from pixelmodels.devices import describe_machine
from pixelmodels.models.registry import parse_model_spec

MODELS = ("pixelcnn", "gated-pixelcnn", "pixelcnnpp", "pixelsnail", "row-lstm", "diagonal-bilstm")
SHAPES = ("1x28x28", "3x32x32")
LARGE = {("pixelsnail", "default")}  # only with --large: 125 M parameters


@dataclass
class Config:
    label: str
    model: str
    preset: str
    shape: str
    batch: int
    options: dict = field(default_factory=dict)
    reference: float | None = None  # images/s of the reference implementation, fp32, 2 CPU threads


GATED_64 = dict(n_channels=64, n_layers=5, kernel_size=5, input_kernel_size=5, n_out_channels=256)
PCNNPP_32 = dict(n_filters=32, n_blocks=2, n_mixtures=10, dropout=0.5)
REFERENCES = [
    Config("ref gated 64x5", "gated-pixelcnn", "default", "1x28x28", 16, GATED_64, 22.9),
    Config("ref gated 64x5", "gated-pixelcnn", "default", "3x32x32", 16, GATED_64, 14.4),
    Config("ref pixelcnn++ 32x2", "pixelcnnpp", "default", "1x28x28", 16, PCNNPP_32, 42.0),
    Config("ref pixelcnn++ 32x2", "pixelcnnpp", "default", "3x32x32", 16, PCNNPP_32, 31.9),
    Config("ref pixelsnail 64 2x2", "pixelsnail", "small", "1x28x28", 16, {}, 16.2),
]


# -- the child: one configuration, one dtype -----------------------------------------------------------------

def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def extra_flops():
    """FlopCounterMode formulas torch's table lacks: the in-place products, the CPU's attention kernels."""
    import torch
    from torch.utils.flop_counter import sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten
    return {aten.addmm_: lambda bias, a, b, *args, out_shape=None, **kwargs: 2 * a[0] * a[1] * b[1],
            aten.baddbmm_: lambda bias, a, b, *args, out_shape=None, **kwargs: 2 * a[0] * a[1] * a[2] * b[2],
            aten._scaled_dot_product_flash_attention_for_cpu:
            lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v),
            aten._scaled_dot_product_flash_attention_for_cpu_backward:
            lambda grad, q, k, v, *args, out_shape=None, **kwargs: sdpa_backward_flop_count(grad, q, k, v)}


def batch_of(model, n: int, device: str):
    """Random inputs of the model's kind: uint8 images, or int64 code maps."""
    import torch

    if model.n_codes:
        return torch.randint(0, model.n_codes, (n, *model.image_shape), device=device)
    return torch.randint(0, 2**model.n_bits, (n, *model.image_shape), dtype=torch.uint8, device=device)


def profile_table(step, steps: int, top: int, device: str) -> str:
    """The top operators by self CPU time over ``steps`` calls of ``step``, as a markdown table."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        sync(device)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    lines = ["| operator | self CPU % | self CPU ms / step | calls / step |", "| --- | --- | --- | --- |"]
    lines += [f"| `{e.key}` | {e.self_cpu_time_total / total:.1%} | {e.self_cpu_time_total / 1e3 / steps:.1f} "
              f"| {e.count / steps:g} |" for e in rows]
    rest = total - sum(e.self_cpu_time_total for e in rows)
    lines.append(f"| (the other {len(events) - len(rows)} operators) | {rest / total:.1%} | "
                 f"{rest / 1e3 / steps:.1f} | |")
    return "\n".join(lines)


def run_config(cfg: Config, dtype: str, device: str, threads: int, warmup: int, steps: int, max_seconds: float,
               compile: bool, profile: int) -> dict:
    """Train ``cfg`` for warm-up + timed steps in this process; the measurements as a dict."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pixelmodels import create_model
    from pixelmodels.training import train_step, training_loss

    torch.set_num_threads(threads)
    device_type = torch.device(device).type
    torch.manual_seed(0)
    c, h, w = map(int, cfg.shape.split("x"))
    options = dict(cfg.options)
    if "n_codes" not in options:
        options.setdefault("n_bits", 8)
    model = create_model(cfg.model, image_shape=(c, h, w), preset=cfg.preset, **options).to(device).train()
    x = batch_of(model, cfg.batch, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    compiled = torch.compile(model) if compile else None

    def loss_of(net, x):  # bits/dim, float32; dtype is a precision of pixelmodels: fp32 or bf16 (autocast)
        return training_loss(model, x, net=net, precision=dtype)

    with FlopCounterMode(display=False, custom_mapping=extra_flops()) as counter:
        loss_of(model, x[:1]).backward()  # images are independent: FLOPs grow linearly with the batch
    flops = counter.get_total_flops() * cfg.batch
    optimizer.zero_grad(set_to_none=True)
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step(net) -> float:
        return train_step(model, x, optimizer=optimizer, net=net, precision=dtype)[0]

    def timed(fn, *args):
        sync(device)
        start = time.perf_counter()
        out = fn(*args)
        sync(device)
        return time.perf_counter() - start, out

    nets = [model] + ([compiled] if compile else [])  # eager and compiled steps alternate: the same noise

    def rounds(fn):
        """Seconds per call of ``fn(net)`` for each net, calls alternating, up to ``steps`` rounds."""
        times = [[] for _ in nets]
        while len(times[0]) < max(1, steps) and (not times[0] or sum(map(sum, times)) < max_seconds):
            for t, net in zip(times, nets):
                t.append(timed(fn, net)[0])
        return [statistics.median(t) for t in times], len(times[0])

    warmup_s = timed(lambda: [step(net) for net in nets for _ in range(max(warmup, 1 if compile else 0))])[0]
    (seconds, *compiled_s), n_steps = rounds(step)
    loss = step(model)
    profiled = {label: profile_table(lambda: step(net), n_steps, profile, device)
                for label, net in zip(["profile", "compiled profile"], nets)} if profile else {}
    model.eval()  # evaluation: the forward and the loss without gradients (compiled: a second graph, for eval mode)
    with torch.no_grad():
        for net in nets:
            loss_of(net, x)
        (eval_s, *compiled_eval_s), _ = rounds(lambda net: loss_of(net, x))
    if device_type == "cuda":
        memory = torch.cuda.max_memory_allocated() / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    result = dict(images_per_s=cfg.batch / seconds, step_s=seconds, steps=n_steps, flops=flops,
                  flops_per_s=flops / seconds, memory_mib=memory, loss=loss,
                  parameters=model.n_parameters(), warmup_s=warmup_s, eval_images_per_s=cfg.batch / eval_s)
    if compile:
        result.update(compiled_images_per_s=cfg.batch / compiled_s[0],
                      compiled_eval_images_per_s=cfg.batch / compiled_eval_s[0])
    return {**result, **profiled}


def matmul_peak(dtype: str, device: str, threads: int, n: int, seconds: float) -> float:
    """FLOP/s of the fastest of repeated n x n matrix products in ``dtype`` (timed for about ``seconds``)."""
    import torch

    torch.set_num_threads(threads)
    dt = torch.float32 if dtype == "fp32" else torch.bfloat16
    a, b = torch.randn(n, n, device=device).to(dt), torch.randn(n, n, device=device).to(dt)
    a @ b
    best, spent = 0.0, 0.0
    while spent < seconds:
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        t = time.perf_counter() - start
        spent += t
        best = max(best, 2 * n**3 / t)
    return best


def worker(payload: dict) -> None:
    if payload["kind"] == "peak":
        result = matmul_peak(payload["dtype"], payload["device"], payload["threads"], payload["n"], payload["seconds"])
    else:
        result = run_config(Config(**payload["config"]), payload["dtype"], payload["device"], payload["threads"],
                            payload["warmup"], payload["steps"], payload["max_seconds"], payload["compile"],
                            payload["profile"])
    print(json.dumps(result))


# -- the parent ----------------------------------------------------------------------------------------------

def child(args, payload: dict) -> dict | float:
    """Run ``payload`` in a fresh subprocess (CPU: under the address-space limit); {"error": ...} if it fails."""
    limit = int(args.memory_limit_gb * 2**30)

    def limit_memory():
        if not args.device.startswith("cuda"):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(payload)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, preexec_fn=limit_memory,
                              env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"over the {args.timeout:g} s timeout"}
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        oom = any(s in last.lower() for s in ("alloc", "out of memory", "memoryerror")) or proc.returncode == -9
        return {"error": f"out of memory ({args.memory_limit_gb:g} GiB limit)" if oom else last[:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def configs(args) -> list[Config]:
    out = []
    if args.presets_rows:
        for preset in args.presets:
            for model in args.models:
                if (model, preset) in LARGE and not args.large:
                    continue
                for shape in args.shapes:
                    batch = args.batch_size or (args.default_batch if preset == "default" else args.small_batch)
                    out.append(Config(f"{model}:{preset}", model, preset, shape, batch))
    if args.references:
        out += [c if not args.batch_size else Config(**{**asdict(c), "batch": args.batch_size})
                for c in REFERENCES if c.shape in args.shapes]
    for spec in args.config:
        name, preset, options = parse_model_spec(spec)
        for shape in args.shapes:
            out.append(Config(spec, name, preset, shape, args.batch_size or args.small_batch, options))
    return out


def fmt(x, spec="{:.1f}"):
    return "-" if x is None else spec.format(x)


def rate(x):
    return fmt(x, "{:.2f}" if x < 10 else "{:.1f}")


def table(rows, peaks: dict, dtypes: list[str], compiled: bool) -> None:
    """The markdown table: per dtype images/s, GFLOP/s, share of the peak (and compiled images/s), memory."""
    head = ["configuration", "image", "batch", "parameters", "GFLOP / image (step)"]
    for d in dtypes:
        head += [f"{d} images/s", f"{d} GFLOP/s", f"of {d} peak"]
        head += [f"{d} compiled images/s", f"{d} compiled / eager", f"{d} evaluation images/s",
                 f"{d} evaluation compiled / eager"] if compiled else []
    head += ["bf16 / fp32"] if {"fp32", "bf16"} <= set(dtypes) else []
    head += [f"peak memory {d} (MiB)" for d in dtypes]
    head += ["reference images/s"] + [f"{d} / reference" for d in dtypes]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for cfg, res in rows:
        ok = {k: r for k, r in res.items() if "error" not in r}
        first = next(iter(ok.values()), None)
        cells = [cfg.label, cfg.shape, str(cfg.batch), fmt(first and first["parameters"], "{:,}"),
                 fmt(first and first["flops"] / cfg.batch / 1e9, "{:.2f}")]
        for d in dtypes:
            r = ok.get(d)
            cells += [rate(r["images_per_s"]), fmt(r["flops_per_s"] / 1e9), fmt(r["flops_per_s"] / peaks[d], "{:.0%}")
                      ] if r else [res[d]["error"], "", ""]
            if compiled:
                cells += [rate(r["compiled_images_per_s"]), fmt(r["compiled_images_per_s"] / r["images_per_s"],
                                                                 "{:.2f}x"),
                          rate(r["eval_images_per_s"]), fmt(r["compiled_eval_images_per_s"] / r["eval_images_per_s"],
                                                            "{:.2f}x")] if r else ["-"] * 4
        if {"fp32", "bf16"} <= set(dtypes):
            cells.append(fmt(ok["bf16"]["images_per_s"] / ok["fp32"]["images_per_s"]
                             if "fp32" in ok and "bf16" in ok else None, "{:.2f}x"))
        cells += [fmt(ok[d]["memory_mib"], "{:,.0f}") if d in ok else "-" for d in dtypes]
        cells.append(fmt(cfg.reference, "{:g}"))
        cells += [fmt(ok[d]["images_per_s"] / cfg.reference if d in ok and cfg.reference else None, "{:.2f}x")
                  for d in dtypes]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names (preset rows)")
    p.add_argument("--presets", default="small,default", help="comma-separated presets (preset rows)")
    p.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated CxHxW (every kind of row)")
    p.add_argument("--config", action="append", default=[], metavar="'NAME:PRESET key=value ...'",
                   help="add a row of any model and options (repeatable), e.g. 'pixelsnail:small n_heads=2'")
    p.add_argument("--no-presets", dest="presets_rows", action="store_false", help="no preset rows")
    p.add_argument("--no-references", dest="references", action="store_false", help="no reference rows")
    p.add_argument("--large", action="store_true", help="also pixelsnail:default (125 M parameters)")
    p.add_argument("--dtypes", default="fp32,bf16", help="fp32 and/or bf16")
    p.add_argument("--compile", action="store_true", help="also time every row with the forward under torch.compile "
                   "(alternating with the eager steps in the same process), training and evaluation")
    p.add_argument("--profile", action="store_true", help="print the torch profiler's top operators of every row")
    p.add_argument("--top", type=int, default=12, help="operators shown by --profile")
    p.add_argument("--batch-size", type=int, default=0, help="every row's batch (default: per preset)")
    p.add_argument("--small-batch", type=int, default=16, help="batch of the tiny/small preset and --config rows")
    p.add_argument("--default-batch", type=int, default=4, help="batch of the default-preset rows")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per row (at most)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--max-seconds", type=float, default=15.0, help="stop timing a row after this many seconds")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny presets at 1x28x28, batch 4, one step, "
                   "the first reference row")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per child process")
    p.add_argument("--memory-limit-gb", type=float, default=20.0, help="address-space limit per child (CPU)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    args.models, args.presets, args.shapes = args.models.split(","), args.presets.split(","), args.shapes.split(",")
    dtypes = args.dtypes.split(",")
    if set(dtypes) - {"fp32", "bf16"}:
        p.error(f"--dtypes: expected fp32 and/or bf16, found {args.dtypes!r}")
    for spec in args.config:
        try:
            parse_model_spec(spec)  # a bad spec stops here, before any child runs
        except PixelModelsError as e:
            p.error(str(e))
    peak_n, peak_s = (8192 if args.device.startswith("cuda") else 2048), 2.0
    if args.quick:
        args.presets, args.shapes, args.small_batch, args.default_batch = ["tiny"], ["1x28x28"], 4, 4
        args.steps, args.warmup, peak_n, peak_s = 1, 1, 1024, 0.3
    todo = configs(args)
    if args.quick:
        todo = [c for c in todo if c.reference is None or c is REFERENCES[0]]
    print("command: python " + " ".join(sys.argv), flush=True)
    print(describe_machine(args.device), flush=True)

    def peak(d):
        r = child(args, dict(kind="peak", dtype=d, device=args.device, threads=args.threads, n=peak_n, seconds=peak_s))
        return r if isinstance(r, float) else float("nan")

    start, load0 = time.time(), os.getloadavg()[0]
    before = {d: peak(d) for d in dtypes}
    rows = []
    for cfg in todo:
        res = {}
        for key in dtypes:
            payload = dict(kind="config", config=asdict(cfg), dtype=key, device=args.device,
                           threads=args.threads, warmup=args.warmup, steps=args.steps, max_seconds=args.max_seconds,
                           compile=args.compile, profile=args.top if args.profile else 0)
            res[key] = r = child(args, payload)
            shown = r.get("error") or (f"{r['images_per_s']:.2f} images/s, {r['step_s']:.3f} s/step x {r['steps']}, "
                                       f"warm-up {r['warmup_s']:.1f} s, evaluation {r['eval_images_per_s']:.1f} "
                                       "images/s" + (f"; compiled {r['compiled_images_per_s']:.2f} images/s, "
                                                     f"evaluation {r['compiled_eval_images_per_s']:.1f} images/s"
                                                     if args.compile else ""))
            print(f"{cfg.label} {cfg.shape} b{cfg.batch} {key}: {shown} [{time.time() - start:.0f} s]", flush=True)
        rows.append((cfg, res))
    after = {d: peak(d) for d in dtypes}
    peaks = {d: max(before[d], after[d]) for d in dtypes}
    print(f"\n{args.device}, {args.threads} threads; one step = forward, bits/dim loss, backward, Adam; median of up "
          f"to {args.steps} timed steps after {args.warmup} warm-up"
          + f"; wall {time.time() - start:.0f} s; 1-minute load {load0:.2f} before, {os.getloadavg()[0]:.2f} after")
    print(f"matmul peak ({peak_n}^3, best of before/after): " + ", ".join(
        f"{d} {peaks[d] / 1e9:.0f} GFLOP/s (before {before[d] / 1e9:.0f}, after {after[d] / 1e9:.0f})"
        for d in dtypes) + "\n")
    table(rows, peaks, dtypes, args.compile)
    for cfg, res in rows:
        for key, r in res.items():
            for label in ("profile", "compiled profile"):
                if label in r:
                    step_s = r["step_s"] if label == "profile" else cfg.batch / r["compiled_images_per_s"]
                    print(f"\n{cfg.label} {cfg.shape} batch {cfg.batch} {key} {label}: {step_s * 1e3:.0f} ms/step\n")
                    print(r[label])


if __name__ == "__main__":
    main()
