"""Training throughput, achieved FLOP/s against the machine's matmul peak, and peak memory, fp32 and bf16.

For every model at a practical small preset (``small``) and at ``default``, at
1x28x28 and 3x32x32, and for the reference configurations below, one training
step = forward, bits/dim loss (n_bits=8), backward, Adam step, in fp32 and under
``torch.autocast(device, dtype=torch.bfloat16)``. Each (configuration, dtype)
runs in a fresh subprocess: ``--warmup`` untimed steps, then up to ``--steps``
timed ones (fewer once ``--max-seconds`` are spent; at least one); images/s is
the batch over the median step. FLOPs of a step are counted from the shapes of
the matrix products (``pixelmodels.flops``: 2 * multiply-accumulates of every
convolution, linear layer and attention product, a step = 3x the forward) and
compared with the peak of a large square matmul (fp32 and bf16, same thread
count) measured by this run, before and after the configurations (the larger
of the two is used). Peak memory: the child's peak resident set size
(``ru_maxrss``, the imported libraries included, about 0.4 GiB) on the CPU,
``torch.cuda.max_memory_allocated`` on CUDA.

    python benchmarks/train.py                      # ~12-15 min on 2 CPU cores
    python benchmarks/train.py --large              # + pixelsnail:default, the large reference rows (+~15 min)
    python benchmarks/train.py --quick              # smoke run (tiny presets), ~1 min
    python benchmarks/train.py --device cuda --large --batch-size 16
    python benchmarks/train.py --models gated-pixelcnn,pixelcnnpp --shapes 1x28x28 --dtypes fp32
    python benchmarks/train.py --only-references --compile   # + rows with the forward under torch.compile
    python benchmarks/train.py --only-references --dtypes fp32 --shapes 1x28x28 \
        --reference-labels "gated 64x5,pixelcnn++ 32x2,pixelsnail 64"        # the issue-15 rows only

With ``--compile`` every configuration runs twice, eagerly and with the model's forward under
``torch.compile`` (as the trainer's ``--compile``: the loss's head stays eager); the compiled row's
warm-up steps (at least one) include the compilation, whose seconds are printed.

Reference configurations ("figures to beat": a reference PyTorch implementation,
fp32, n_bits=8, 2 threads, images/s), mapped onto our options:

* ref gated 64x5: gated PixelCNN, 64 channels, 5 gated layers, 5x5 kernels, 256
  output channels -> ``gated-pixelcnn`` n_channels=64, n_layers=5, kernel_size=5,
  input_kernel_size=5, n_out_channels=256; 22.9 at 1x28x28 batch 16, 14.4 at 3x32x32 batch 16.
* ref gated 128x12: 128 channels, 12 layers, 1024 output channels -> n_channels=128,
  n_layers=12, n_out_channels=1024, kernel_size=5, input_kernel_size=5 (the kernel is
  not given: taken as the first configuration's 5x5); 2.6 at 1x28x28 batch 16.
* ref pixelcnn++ 32x2: 32 filters, 2 blocks per resolution -> ``pixelcnnpp``
  n_filters=32, n_blocks=2, n_mixtures=10, dropout=0.5 (the paper's head and
  dropout); 42.0 at 1x28x28 batch 16, 31.9 at 3x32x32 batch 16.
* ref pixelcnn++ 128x5: 128 filters, 5 blocks -> n_filters=128, n_blocks=5 (10
  mixtures, dropout 0.5 as in ``default``); 2.6 at 1x28x28 batch 16.
* ref pixelsnail 64 2x2: 64 filters, 2 blocks of 2 residual layers -> ``pixelsnail``
  preset ``small`` (key 16, value 32 features, 5 mixtures); 16.2 at 1x28x28 batch 16.
* ref pixelsnail 64 2x2 v128: the same with the attention and head issue 15 names (keys 16, values
  128, 10 mixtures) -> preset ``small`` with value_size=128, n_mixtures=10; no reference figure.
* ref pixelsnail 256 12x5: 256 filters, 12 blocks of 5 residual layers -> preset
  ``default`` (1 head, keys 16, values 128, 10 mixtures, dropout 0.5), taken at
  3x32x32 (the shape is not given; the CIFAR-10 model's); 0.25 at batch 2, out of
  memory at batch 16 in 20 GB. Only with ``--large``: at batch 2 as the reference runs, and at
  batch 16 with ``checkpoint_activations=True`` (the goal: under 8 GB); the ``pixelsnail:default``
  rows are checkpointed too.

Weight-normalized models train without the data-dependent initialization here
(it changes the weights' values, not the cost of a step).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field

MODELS = ("pixelcnn", "gated-pixelcnn", "pixelcnnpp", "pixelsnail", "row-lstm", "diagonal-bilstm")
SHAPES = ("1x28x28", "3x32x32")
DTYPES = ("fp32", "bf16")
LARGE = {("pixelsnail", "default")}  # only with --large (minutes per step on 2 cores)


@dataclass
class Config:
    label: str
    model: str
    preset: str
    shape: str
    batch: int
    overrides: dict = field(default_factory=dict)
    reference: float | None = None  # images/s of the reference implementation, fp32, 2 threads
    large: bool = False


GATED_64 = dict(n_channels=64, n_layers=5, kernel_size=5, input_kernel_size=5, n_out_channels=256)
GATED_128 = dict(n_channels=128, n_layers=12, kernel_size=5, input_kernel_size=5, n_out_channels=1024)
PCNNPP_32 = dict(n_filters=32, n_blocks=2, n_mixtures=10, dropout=0.5)
PCNNPP_128 = dict(n_filters=128, n_blocks=5)
SNAIL_64_V128 = dict(value_size=128, n_mixtures=10)
SNAIL_LARGE = dict(checkpoint_activations=True)

REFERENCES = [
    Config("ref gated 64x5", "gated-pixelcnn", "default", "1x28x28", 16, GATED_64, 22.9),
    Config("ref gated 64x5", "gated-pixelcnn", "default", "3x32x32", 16, GATED_64, 14.4),
    Config("ref gated 128x12", "gated-pixelcnn", "default", "1x28x28", 16, GATED_128, 2.6),
    Config("ref pixelcnn++ 32x2", "pixelcnnpp", "default", "1x28x28", 16, PCNNPP_32, 42.0),
    Config("ref pixelcnn++ 32x2", "pixelcnnpp", "default", "3x32x32", 16, PCNNPP_32, 31.9),
    Config("ref pixelcnn++ 128x5", "pixelcnnpp", "default", "1x28x28", 16, PCNNPP_128, 2.6),
    Config("ref pixelsnail 64 2x2", "pixelsnail", "small", "1x28x28", 16, {}, 16.2),
    Config("ref pixelsnail 64 2x2 v128", "pixelsnail", "small", "1x28x28", 16, SNAIL_64_V128, None),
    Config("ref pixelsnail 256 12x5", "pixelsnail", "default", "3x32x32", 2, {}, 0.25, large=True),
    Config("ref pixelsnail 256 12x5", "pixelsnail", "default", "3x32x32", 16, SNAIL_LARGE, None, large=True),
]


# -- the child: one configuration, one dtype ---------------------------------------------------------------

def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run_config(cfg: Config, dtype: str, device: str, threads: int, warmup: int, steps: int,
               max_seconds: float, compile: bool = False, keep_freed: bool | None = None) -> dict:
    """Train ``cfg`` for warmup + timed steps in this process; the measurements as a dict.

    ``keep_freed``: whether the process keeps its freed memory (``pixelmodels.evaluation.keep_freed_memory``);
    None does what ``pixelmodels train`` does: on the CPU, where the library under test has it.
    """
    import torch

    from pixelmodels import create_model
    from pixelmodels.flops import training_step_flops

    torch.set_num_threads(threads)
    kept = False
    if keep_freed or (keep_freed is None and torch.device(device).type == "cpu"):
        try:
            from pixelmodels.evaluation import keep_freed_memory
        except ImportError:  # an older tree (benchmarks/before_after.py): its Trainer did not either
            keep_freed_memory = None
        if keep_freed and keep_freed_memory is None:
            raise SystemExit("keep_freed: this tree has no pixelmodels.evaluation.keep_freed_memory")
        kept = bool(keep_freed_memory and keep_freed_memory())
    torch.manual_seed(0)
    c, h, w = map(int, cfg.shape.split("x"))
    overrides = dict(cfg.overrides)
    model = create_model(cfg.model, image_shape=(c, h, w), n_bits=8, preset=cfg.preset, **overrides).to(device)
    x = torch.randint(0, 256, (cfg.batch, c, h, w), dtype=torch.uint8, device=device)
    flops = training_step_flops(model, x[:1]) * cfg.batch  # images are independent: linear in the batch
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compile else model
    scale = math.log(2) * c * h * w
    device_type = torch.device(device).type
    if device_type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=dtype == "bf16"):
            params = forward(x)
        loss = model.head.nll(params.float(), x).sum() / (scale * cfg.batch)  # bits/dim, float32
        loss.backward()
        optimizer.step()
        return loss

    start = time.perf_counter()
    for _ in range(max(warmup, 1 if compile else 0)):
        step()
    sync(device)
    warmup_s = time.perf_counter() - start
    times = []
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    while len(times) < max(1, steps) and (not times or sum(times) < max_seconds):
        sync(device)
        start = time.perf_counter()
        loss = step()
        sync(device)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / len(times)
    if device_type == "cuda":
        memory = torch.cuda.max_memory_allocated() / 2**20
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return dict(images_per_s=cfg.batch / seconds, step_s=seconds, steps=len(times), flops=flops,
                flops_per_s=flops / seconds, memory_mib=memory, loss=float(loss.detach()),
                parameters=model.n_parameters(), threads=torch.get_num_threads(), warmup_s=warmup_s,
                page_faults_per_step=faults, kept_freed_memory=kept)


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


# -- the parent ----------------------------------------------------------------------------------------------

def child(args, payload: dict) -> dict:
    """Run ``payload`` in a fresh subprocess (CPU: under the address-space limit); {"error": ...} if it fails."""
    limit = int(args.memory_limit_gb * 2**30)

    def limit_memory():
        if not args.device.startswith("cuda"):
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--worker", json.dumps(payload)]
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


def worker(payload: dict) -> None:
    if payload["kind"] == "peak":
        result = matmul_peak(payload["dtype"], payload["device"], payload["threads"], payload["n"], payload["seconds"])
    else:
        result = run_config(Config(**payload["config"]), payload["dtype"], payload["device"], payload["threads"],
                            payload["warmup"], payload["steps"], payload["max_seconds"], payload.get("compile", False),
                            payload.get("keep_freed"))
    print(json.dumps(result))


def configs(args) -> list[Config]:
    out = []
    for preset in args.presets:
        for model in args.models:
            if (model, preset) in LARGE and not args.large:
                continue
            for shape in args.shapes:
                batch = args.batch_size or (args.default_batch if preset == "default" else args.small_batch)
                large = (model, preset) in LARGE
                extra = dict(checkpoint_activations=True) if large else {}
                out.append(Config(f"{model}:{preset}", model, preset, shape, batch, extra, large=large))
    if args.references:
        wanted = [w for w in args.reference_labels.split(",") if w]
        out += [c for c in REFERENCES if (args.large or not c.large)
                and (not wanted or any(w in c.label for w in wanted))
                and (not args.reference_shapes or c.shape in args.reference_shapes)]
    return out


def fmt(x, spec="{:.1f}", missing="-"):
    return missing if x is None else spec.format(x)


def no_native(peaks: dict, device: str) -> set:
    """The precisions this machine has no native units for: bf16 where ``native_bf16`` says so, or whose
    measured matmul peak is near zero (under 2% of fp32's): reported as such, never as a share of a peak."""
    from pixelmodels.evaluation import native_bf16

    import torch

    out = set()
    if "bf16" in peaks and (not native_bf16(torch.device(device))[0]
                            or not peaks["bf16"] > 0.02 * peaks.get("fp32", 0.0)):
        out.add("bf16")
    return out


def table(rows, peaks, dtypes, emulated=frozenset()) -> None:
    """The markdown table; ``dtypes`` are the columns' keys ("fp32", "bf16", "fp32 compiled", ...);
    ``emulated``: precisions without native hardware (no share of a peak is given for them)."""
    fp32, bf16 = "fp32" in dtypes, "bf16" in dtypes
    head = ["configuration", "image", "batch", "parameters", "GFLOP / image (step)"]
    if fp32:
        head += ["fp32 images/s", "fp32 GFLOP/s", "of fp32 peak"]
    if bf16:
        head += ["bf16 images/s", "bf16 GFLOP/s", "of bf16 peak"]
    if fp32 and bf16:
        head += ["bf16 / fp32"]
    compiled = [d for d in dtypes if d.endswith(" compiled")]
    head += [f"{d} images/s" for d in compiled]
    plain = [d for d in dtypes if d not in compiled]
    head += [f"peak memory {d} (MiB)" for d in plain]
    head += ["reference images/s"] + [f"{d} / reference" for d in dtypes]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for cfg, res in rows:
        ok = {d: r for d, r in res.items() if "error" not in r}
        any_r = next(iter(ok.values()), None)
        cells = [cfg.label + (" (checkpointed)" if cfg.overrides.get("checkpoint_activations") else ""), cfg.shape,
                 str(cfg.batch), fmt(any_r and any_r["parameters"], "{:,}"),
                 fmt(any_r and any_r["flops"] / cfg.batch / 1e9, "{:.2f}")]
        for d in plain:
            r = ok.get(d)
            if r is None:
                cells += [res[d]["error"], "", ""]
                continue
            cells += [fmt(r["images_per_s"], "{:.2f}" if r["images_per_s"] < 10 else "{:.1f}"),
                      fmt(r["flops_per_s"] / 1e9),
                      "no native bf16" if d in emulated else fmt(r["flops_per_s"] / peaks[d], "{:.0%}")]
        if fp32 and bf16:
            cells.append(fmt(ok["bf16"]["images_per_s"] / ok["fp32"]["images_per_s"] if "fp32" in ok and "bf16" in ok
                             else None, "{:.2f}x"))
        cells += [fmt(ok[d]["images_per_s"], "{:.2f}" if ok[d]["images_per_s"] < 10 else "{:.1f}") if d in ok
                  else res[d]["error"] for d in compiled]
        cells += [fmt(ok[d]["memory_mib"], "{:,.0f}") if d in ok else "-" for d in plain]
        cells.append(fmt(cfg.reference, "{:g}"))
        cells += [fmt(ok[d]["images_per_s"] / cfg.reference if d in ok and cfg.reference else None, "{:.2f}x")
                  for d in dtypes]
        print("| " + " | ".join(cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated model names")
    p.add_argument("--presets", default="small,default", help="comma-separated presets")
    p.add_argument("--shapes", default=None, help="comma-separated CxHxW (default: %s; given, it also selects "
                   "the reference rows)" % ",".join(SHAPES))
    p.add_argument("--dtypes", default=",".join(DTYPES), help="fp32 and/or bf16")
    p.add_argument("--batch-size", type=int, default=0, help="every model row's batch (default: per preset)")
    p.add_argument("--small-batch", type=int, default=16, help="batch of the small-preset rows")
    p.add_argument("--default-batch", type=int, default=4, help="batch of the default-preset rows")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=3, help="timed steps per configuration (at most)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    p.add_argument("--max-seconds", type=float, default=15.0, help="stop timing after this many seconds of steps")
    p.add_argument("--no-references", dest="references", action="store_false", help="skip the reference rows")
    p.add_argument("--only-references", action="store_true", help="only the reference rows")
    p.add_argument("--reference-labels", default="", help="comma-separated substrings: only the reference rows "
                   "whose label contains one (e.g. 'gated 64x5,pixelcnn++ 32x2')")
    p.add_argument("--large", action="store_true", help="add pixelsnail:default and the large reference rows")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: tiny presets at 1x28x28, batch 4, one step, the first reference row")
    p.add_argument("--compile", action="store_true", help="also time every row with the forward under torch.compile")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per child")
    p.add_argument("--memory-limit-gb", type=float, default=20.0, help="address-space limit per child (CPU)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    args.models, args.presets = args.models.split(","), args.presets.split(",")
    args.reference_shapes = args.shapes.split(",") if args.shapes else None
    args.shapes, dtypes = (args.shapes or ",".join(SHAPES)).split(","), args.dtypes.split(",")
    peak_n, peak_s = 2048, 2.0
    if args.only_references:
        args.models = []
    if args.quick:
        args.presets, args.shapes, args.small_batch, args.default_batch = ["tiny"], ["1x28x28"], 4, 4
        args.steps, args.warmup, peak_n, peak_s = 1, 1, 1024, 0.3
    if args.device.startswith("cuda"):
        peak_n = 8192
    print("command: python " + " ".join(sys.argv), flush=True)
    todo = configs(args)
    if args.quick:
        todo = [c for c in todo if c.reference is None or c is REFERENCES[0]]

    def peak(d):
        r = child(args, dict(kind="peak", dtype=d, device=args.device, threads=args.threads, n=peak_n, seconds=peak_s))
        return r if isinstance(r, float) else float("nan")

    start = time.time()
    load0 = os.getloadavg()[0]
    before = {d: peak(d) for d in dtypes}
    print("matmul peak before: " + ", ".join(f"{d} {v / 1e9:.0f} GFLOP/s" for d, v in before.items()), flush=True)
    columns = dtypes + ([f"{d} compiled" for d in dtypes] if args.compile else [])
    rows = []
    for cfg in todo:
        res = {}
        for key in columns:
            d, compiled = key.split(" ")[0], key.endswith(" compiled")
            payload = dict(kind="config", config=asdict(cfg), dtype=d, device=args.device, threads=args.threads,
                           warmup=args.warmup, steps=args.steps, max_seconds=args.max_seconds, compile=compiled)
            res[key] = r = child(args, payload)
            shown = r.get("error") or (f"{r['images_per_s']:.2f} images/s, {r['step_s']:.2f} s/step x {r['steps']}, "
                                       f"warm-up {r['warmup_s']:.1f} s")
            print(f"{cfg.label} {cfg.shape} b{cfg.batch} {key}: {shown} [{time.time() - start:.0f} s]", flush=True)
        rows.append((cfg, res))
    after = {d: peak(d) for d in dtypes}
    peaks = {d: max(before[d], after[d]) for d in dtypes}
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               "?") if os.path.exists("/proc/cpuinfo") else "?"
    print(f"\ntorch {torch.__version__}, device {args.device} ({cpu}), {args.threads} threads; one training step = "
          f"forward, bits/dim loss, backward, Adam (n_bits 8); median of up to {args.steps} timed steps after "
          f"{args.warmup} warm-up; wall {time.time() - start:.0f} s; 1-minute load {load0:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after")
    emulated = no_native(peaks, args.device)
    print("matmul peak (n=%d, best of before/after): " % peak_n + ", ".join(
        (f"{d}: no native {d} (measured {peaks[d] / 1e9:.0f} GFLOP/s, emulated)" if d in emulated else
         f"{d} {peaks[d] / 1e9:.0f} GFLOP/s (before {before[d] / 1e9:.0f}, after {after[d] / 1e9:.0f})")
        for d in dtypes) + "\n")
    from pixelmodels.evaluation import native_bf16, resolve_precision

    device = torch.device(args.device)
    print(f"--precision auto (pixelmodels train's default) resolves to {resolve_precision('auto', device)} on this "
          f"machine: {native_bf16(device)[1]}\n")
    table(rows, peaks, columns, emulated)


if __name__ == "__main__":
    main()
