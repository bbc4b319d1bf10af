"""Training throughput of the PixelRNN models beside the Gated PixelCNN, at similar parameter counts.

Images per second of one training step (forward, bits/dim loss, backward, Adam
step; fp32, 8 bits, 1x28x28, batch 32) for ``row-lstm``, ``diagonal-bilstm``
and ``gated-pixelcnn``, each from the ``small`` preset with widths picked so
the three have about the same number of parameters. The models take turns
(``--reps`` rounds of ``--steps`` steps each, after warm-up steps), so a change
in the machine's load hits all of them; the table gives each one's median
round and its ratio to ``gated-pixelcnn``.

    python benchmarks/pixelrnn_throughput.py --reps 5 --steps 5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

from pixelmodels import create_model

# Widths at which the three have ~210k parameters (small preset: 4 LSTM layers / 5 gated layers, 128 output features).
MODELS = {
    "gated-pixelcnn": {},
    "row-lstm": dict(n_channels=74, n_state=37),
    "diagonal-bilstm": dict(n_channels=70, n_state=35),
}


def train_step(model, optimizer, x) -> None:
    optimizer.zero_grad(set_to_none=True)
    model.bits_per_dim(x).mean().backward()
    optimizer.step()


def rounds(args) -> dict[str, list[float]]:
    """Images per second of each round of ``args.steps`` steps, per model."""
    x = torch.randint(0, 256, (args.batch_size, 1, 28, 28), dtype=torch.uint8)
    runs = {}
    for name, overrides in MODELS.items():
        model = create_model(name, image_shape=(1, 28, 28), n_bits=8, preset="small", **overrides).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
        for _ in range(args.warmup):
            train_step(model, optimizer, x)
        runs[name] = (model, optimizer)
    speeds = {name: [] for name in MODELS}
    for rep in range(args.reps):
        for name, (model, optimizer) in runs.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, optimizer, x)
            speeds[name].append(args.steps * args.batch_size / (time.perf_counter() - start))
        print(f"round {rep + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in speeds.items()) + " images/s; "
              f"load {os.getloadavg()[0]:.2f}", flush=True)
    return speeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=5, help="rounds over the models")
    p.add_argument("--steps", type=int, default=5, help="training steps per model per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model first")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()[0]
    speeds = rounds(args)
    load_after = os.getloadavg()[0]
    base = statistics.median(speeds["gated-pixelcnn"])
    print(f"python benchmarks/{' '.join([sys.argv[0].split('/')[-1], *sys.argv[1:]])}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, 8 bits, 1x28x28, "
          f"batch {args.batch_size}, median of {args.reps} rounds of {args.steps} steps; "
          f"1-minute load average {load_before:.2f} before, {load_after:.2f} after\n")
    print("| model (preset small) | overrides | parameters | images/s | ratio to gated-pixelcnn |")
    print("| --- | --- | --- | --- | --- |")
    for name, overrides in MODELS.items():
        n_params = create_model(name, image_shape=(1, 28, 28), n_bits=8, preset="small", **overrides).n_parameters()
        median = statistics.median(speeds[name])
        shown = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "-"
        print(f"| {name} | {shown} | {n_params:,} | {median:.1f} | {median / base:.2f} |")


if __name__ == "__main__":
    main()
