"""A prior over 32x32 maps of K=512 codes against the same network over 8-bit 32x32 images.

For each model (preset ``--preset``, default ``small``) two models with the same network options:
one over code maps (1x32x32, ``n_codes=512``: a learned embedding in, a 512-way categorical out)
and one over 8-bit images (1x32x32, ``n_bits=8``, the preset's likelihood: a 256-way categorical
for gated-pixelcnn, a logistic mixture for pixelsnail, unless ``--image-likelihood``). Measured:

* training images/s: one step = forward, bits/dim loss, backward, Adam step, fp32, batch
  ``--batch`` (16); ``--warmup`` untimed steps of each variant, then ``--steps`` timed steps
  interleaved between the two variants (codes, images, codes, ...) so that machine noise hits both;
  images/s = batch / median step;
* sampling: seconds for ``--batch`` samples on the cached path (``pixelmodels.sample(..., cached=True)``),
  each variant once (``--sample-repeats`` for more, interleaved; the median is reported).

The table gives both rows per model and the codes / images ratio of each column.

    python benchmarks/prior.py                          # ~10 min on 2 CPU cores
    python benchmarks/prior.py --quick                  # smoke run: tiny presets at 8x8, seconds
    python benchmarks/prior.py --models gated-pixelcnn --steps 10 --device cuda
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from pixelmodels import create_model, sample


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(name: str, preset: str, size: int, variant: str, image_likelihood: str | None, device: str):
    """The codes or the images model of ``name`` at ``preset``, seeded so both start alike."""
    torch.manual_seed(0)
    kind = dict(n_codes=512) if variant == "codes" else dict(n_bits=8)
    if variant == "images" and image_likelihood:
        kind["likelihood"] = image_likelihood
    return create_model(name, image_shape=(1, size, size), preset=preset, **kind).to(device)


def batch_of(model, n: int, device: str) -> torch.Tensor:
    if model.n_codes:
        return torch.randint(0, model.n_codes, (n, *model.image_shape), device=device)
    return torch.randint(0, 2**model.n_bits, (n, *model.image_shape), dtype=torch.uint8, device=device)


def measure(name: str, args) -> dict:
    """Training seconds per step (interleaved) and cached sampling seconds for both variants of ``name``."""
    variants = ("codes", "images")
    models = {v: build(name, args.preset, args.size, v, args.image_likelihood, args.device) for v in variants}
    opts = {v: torch.optim.Adam(m.parameters(), lr=1e-4) for v, m in models.items()}
    data = {v: batch_of(m, args.batch, args.device) for v, m in models.items()}

    def step(v: str) -> float:
        model, opt = models[v], opts[v]
        model.train()
        sync(args.device)
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        model.bits_per_dim(data[v]).mean().backward()
        opt.step()
        sync(args.device)
        return time.perf_counter() - start

    for v in variants:
        for _ in range(args.warmup):
            step(v)
    times = {v: [] for v in variants}
    for _ in range(args.steps):
        for v in variants:
            times[v].append(step(v))
    sampling = {v: [] for v in variants}
    for r in range(args.sample_repeats):
        for v in variants:
            model = models[v].eval()
            sync(args.device)
            start = time.perf_counter()
            sample(model, args.batch, generator=torch.Generator(args.device).manual_seed(r), cached=True)
            sync(args.device)
            sampling[v].append(time.perf_counter() - start)
    out = {}
    for v, model in models.items():
        out[v] = dict(parameters=model.n_parameters(), likelihood=model.options.likelihood,
                      train=args.batch / statistics.median(times[v]), sampling=statistics.median(sampling[v]))
        print(f"{name} {v}: {out[v]['train']:.1f} images/s (steps {', '.join(f'{t:.3f}' for t in times[v])} s), "
              f"sampling {out[v]['sampling']:.2f} s / {args.batch}", flush=True)
    return out


def machine(args) -> str:
    cpu, flags = "?", ""
    if os.path.exists("/proc/cpuinfo"):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    amx = "AMX" if "amx" in flags.split() or any(f.startswith("amx") for f in flags.split()) else "no AMX"
    gpu = f", {torch.cuda.get_device_name()}" if args.device.startswith("cuda") else ""
    return (f"torch {torch.__version__}, device {args.device}{gpu}, CPU {cpu} ({os.cpu_count()} cores, {amx}), "
            f"{torch.get_num_threads()} torch threads")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="gated-pixelcnn,pixelsnail", help="comma-separated model names")
    p.add_argument("--preset", default="small")
    p.add_argument("--size", type=int, default=32, help="side of the code maps and images")
    p.add_argument("--batch", type=int, default=16, help="training batch and number of samples")
    p.add_argument("--steps", type=int, default=5, help="timed training steps per variant")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps per variant first")
    p.add_argument("--sample-repeats", type=int, default=1, help="cached sampling runs per variant")
    p.add_argument("--image-likelihood", choices=["categorical", "logistic-mixture"],
                   help="head of the 8-bit image models (default: the preset's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="smoke run: tiny presets at 8x8, 2 steps")
    args = p.parse_args()
    if args.quick:
        args.preset, args.size, args.steps, args.warmup = "tiny", 8, 2, 1
    print("command: python " + " ".join(sys.argv))
    print(machine(args))
    load0, start = os.getloadavg()[0], time.time()
    results = {name: measure(name, args) for name in args.models.split(",")}
    print(f"\npreset {args.preset}, 1x{args.size}x{args.size}, batch {args.batch}, fp32; train: median of "
          f"{args.steps} interleaved timed steps after {args.warmup} warm-up; sampling: cached path, median of "
          f"{args.sample_repeats}; wall {time.time() - start:.0f} s; 1-minute load {load0:.2f} before, "
          f"{os.getloadavg()[0]:.2f} after\n")
    print("| model | input | parameters | train images/s | sampling s / %d |" % args.batch)
    print("| --- | --- | --- | --- | --- |")
    for name, r in results.items():
        c, i = r["codes"], r["images"]
        print(f"| {name} | codes, K=512 ({c['likelihood']}) | {c['parameters']:,} | {c['train']:.1f} | "
              f"{c['sampling']:.2f} |")
        print(f"| {name} | 8-bit images ({i['likelihood']}) | {i['parameters']:,} | {i['train']:.1f} | "
              f"{i['sampling']:.2f} |")
        print(f"| {name} | codes / images | {c['parameters'] / i['parameters']:.2f}x | "
              f"{c['train'] / i['train']:.2f}x | {c['sampling'] / i['sampling']:.2f}x |")


if __name__ == "__main__":
    main()
