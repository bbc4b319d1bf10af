"""Where a training step's time goes: ``torch.profiler`` over training steps of one configuration.

One step = forward, bits/dim loss (n_bits 8), backward, Adam step, as in ``benchmarks/train.py``
(same model construction, same reference configurations). After ``--warmup`` untimed steps,
``--steps`` steps run under the profiler (CPU activities; CUDA too on a GPU) and the top
operators by self CPU time are printed as a markdown table: operator, share of the total self
CPU time, self CPU ms per step, calls per step.

    python benchmarks/profile_train.py                           # PixelCNN++ 32x2 (10 mixtures, dropout 0.5)
    python benchmarks/profile_train.py --config gated-64x5 --top 15
    python benchmarks/profile_train.py --config pixelsnail-64-2x2 --threads 1 --steps 5
    python benchmarks/profile_train.py --list                    # the configuration names
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train import REFERENCES  # noqa: E402  (the reference configurations, one declaration)


def _name(cfg) -> str:
    return cfg.label.removeprefix("ref ").replace(" ", "-").replace("pixelcnn++", "pixelcnnpp")


CONFIGS = {}
for _cfg in REFERENCES:  # the first shape of each label is its name; "<name>@<shape>" for the others
    CONFIGS.setdefault(_name(_cfg), _cfg)
    CONFIGS[f"{_name(_cfg)}@{_cfg.shape}"] = _cfg


def profile(cfg, threads: int, warmup: int, steps: int, top: int, device: str = "cpu", compile: bool = False):
    """Run the steps; returns (markdown table, seconds per step under the profiler, the last loss)."""
    import torch
    from torch.profiler import ProfilerActivity, profile as torch_profile

    from pixelmodels import create_model

    torch.set_num_threads(threads)
    if device == "cpu":
        from pixelmodels.evaluation import keep_freed_memory

        keep_freed_memory()  # as pixelmodels train does on the CPU
    torch.manual_seed(0)
    c, h, w = map(int, cfg.shape.split("x"))
    model = create_model(cfg.model, image_shape=(c, h, w), n_bits=8, preset=cfg.preset, **cfg.overrides).to(device)
    x = torch.randint(0, 256, (cfg.batch, c, h, w), dtype=torch.uint8, device=device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    forward = torch.compile(model) if compile else model
    scale = math.log(2) * c * h * w

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model.head.nll(forward(x).float(), x).sum() / (scale * cfg.batch)  # bits/dim
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(warmup):
        step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with torch_profile(activities=activities) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / steps
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    rows = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:top]
    lines = ["| operator | self CPU % | self CPU ms / step | calls / step |", "| --- | --- | --- | --- |"]
    for e in rows:
        lines.append(f"| `{e.key}` | {100 * e.self_cpu_time_total / total:.1f}% | "
                     f"{e.self_cpu_time_total / 1e3 / steps:.1f} | {e.count / steps:g} |")
    shown = sum(e.self_cpu_time_total for e in rows)
    lines.append(f"| (the other {len(events) - len(rows)} operators) | {100 * (total - shown) / total:.1f}% | "
                 f"{(total - shown) / 1e3 / steps:.1f} | |")
    lines.append(f"| total | 100% | {total / 1e3 / steps:.1f} | |")
    return "\n".join(lines), seconds, float(loss.detach())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="pixelcnnpp-32x2", help="a reference configuration of benchmarks/train.py "
                   "(see --list)")
    p.add_argument("--batch-size", type=int, default=0, help="override the configuration's batch")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    p.add_argument("--steps", type=int, default=3, help="profiled steps")
    p.add_argument("--top", type=int, default=20, help="operators shown")
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="the model's forward under torch.compile")
    p.add_argument("--list", action="store_true", help="print the configuration names and exit")
    args = p.parse_args()
    if args.list:
        for name, cfg in CONFIGS.items():
            print(f"{name}: {cfg.model} preset {cfg.preset} {cfg.overrides} {cfg.shape} batch {cfg.batch}")
        return
    if args.config not in CONFIGS:
        p.error(f"--config: unknown configuration {args.config!r}; expected one of {', '.join(CONFIGS)}")
    cfg = CONFIGS[args.config]
    if args.batch_size:
        cfg = type(cfg)(**{**cfg.__dict__, "batch": args.batch_size})
    import torch

    print("command: python " + " ".join(sys.argv))
    table, seconds, loss = profile(cfg, args.threads, args.warmup, args.steps, args.top, args.device, args.compile)
    print(f"\n{cfg.label}: {cfg.model} {cfg.overrides or ''} preset {cfg.preset}, {cfg.shape}, batch {cfg.batch}, "
          f"torch {torch.__version__}, {args.device}, {args.threads} threads, {args.steps} profiled steps after "
          f"{args.warmup} warm-up: {seconds:.3f} s/step under the profiler "
          f"({cfg.batch / seconds:.1f} images/s), last loss {loss:.6f} bits/dim, "
          f"1-minute load {os.getloadavg()[0]:.2f}\n")
    print(table)


if __name__ == "__main__":
    main()
