"""Your own model in pixelmodels: a network you write, registered, trained, sampled, saved, loaded back by the
command line and checked for causality. ``docs/own_model.md`` walks through it.

The model, ``own-pixelcnn``: a k x k mask-A convolution, residual 3x3 mask-B convolutions (each with the
bias a class label or condition gives), and 1x1 mask-B convolutions to the likelihood head's parameters,
all ``pixelmodels.nn.MaskedConv2d`` (its channel groups let R see nothing of its own pixel, G see R, B see
R and G). The head, the conditioning, the checks, sampling, scoring, training, saving and compression come
with ``pixelmodels.AutoregressiveModel``.

The data: RGB images of stripes at 2 bits per value (each image one colour on black, horizontal or
vertical, a random period and phase), written as an ``arrays`` dataset, so nothing is downloaded.

    python examples/own_model.py --out runs/own        # data, 300 training steps, samples: half a minute
    pixelmodels generate runs/own/run --import examples/own_model.py --n 16   # the CLI, given the module
    cd examples && pixelmodels check ../runs/own/run --import own_model       # a module name: from here
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import pixelmodels
from pixelmodels import AutoregressiveModel, DataConfig, ModelConfig, ModelOptions, RunConfig, TrainConfig
from pixelmodels import register_model, setting
from pixelmodels.nn import MaskedConv2d


@dataclass
class OwnOptions(ModelOptions):
    """The options of ``own-pixelcnn``: each one a ``pixelmodels train`` flag (--n-features ...) with its range."""

    n_features: int = setting(32, "features of every layer", ge=1, le=1024)
    n_layers: int = setting(3, "residual 3x3 mask-B layers", ge=0, le=64)
    input_kernel: int = setting(5, "side of the first (mask-A) convolution", ge=1, le=15, odd=True)


class OwnPixelCNN(AutoregressiveModel):
    """A small PixelCNN: (B, input_channels, H, W) in, the head's parameters (B, head.n_params, H, W) out."""

    def __init__(self, config, options: OwnOptions):
        super().__init__(config, options)  # image_shape, head, input_channels, conditioning
        c, f = self.image_shape[0], options.n_features
        self.input = MaskedConv2d(self.input_channels, f, options.input_kernel, "A", c)
        self.layers = nn.ModuleList(MaskedConv2d(f, f, 3, "B", c) for _ in range(options.n_layers))
        self.biases = nn.ModuleList(self.conditioning.bias(f) for _ in range(options.n_layers))
        self.hidden = MaskedConv2d(f, f, 1, "B", c)
        self.out = MaskedConv2d(f, self.head.n_params, 1, "B", c, out_groups=self.head.param_groups())

    @property
    def receptive_rows(self) -> int:
        """Rows above a row that reach it (k // 2 for the first layer, 1 for each 3x3): sampling without a cache
        of its own computes only those."""
        return self.options.input_kernel // 2 + self.options.n_layers

    def network(self, x, c):
        h = self.input(x)  # (B, F, H, W)
        for layer, bias in zip(self.layers, self.biases):
            h = h + bias.add(layer(F.relu(h)), c)
        return self.out(F.relu(self.hidden(F.relu(h))))  # (B, head.n_params, H, W)


register_model("own-pixelcnn", OwnPixelCNN, OwnOptions, presets={"tiny": dict(n_features=12, n_layers=1)})


def make_stripes(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` RGB images (n, 3, size, size) of 2-bit values: one colour on black, in stripes."""
    colour = rng.integers(1, 4, (n, 3, 1, 1))
    period = rng.integers(2, 5, (n, 1, 1, 1))
    phase = rng.integers(0, 4, (n, 1, 1, 1))
    along = np.where(rng.random((n, 1, 1, 1)) < 0.5, np.arange(size)[:, None], np.arange(size)[None, :])
    return (colour * ((along + phase) % period == 0)).astype(np.uint8)


def main(argv: list[str] | None = None) -> dict:
    """Write the data, train, load the run back, sample and check; returns what a test reads: the run
    directory, its test bits/dim before and after training, and the samples."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("runs/own"), help="where the data and the run go")
    p.add_argument("--steps", type=int, default=300, help="training steps")
    p.add_argument("--size", type=int, default=12, help="side of the images")
    p.add_argument("--preset", default="default", help="the model's preset (tiny, default)")
    args = p.parse_args(argv)

    rng = np.random.default_rng(0)
    data = args.out / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 512), ("test", 64)):
        np.savez(data / f"{split}.npz", x=make_stripes(n, args.size, rng))

    run = RunConfig(ModelConfig("own-pixelcnn", (3, args.size, args.size), n_bits=2, preset=args.preset),
                    DataConfig(dataset="arrays", data_dir=str(data), n_bits=2),
                    TrainConfig(max_steps=args.steps, batch_size=32, lr=2e-3, ema=0.99, n_samples=0, device="cpu",
                                precision="fp32"))
    test = pixelmodels.load_dataset("arrays", "test", root=data, n_bits=2)
    untrained = pixelmodels.create_model("own-pixelcnn", image_shape=(3, args.size, args.size), n_bits=2,
                                         preset=args.preset)
    before = pixelmodels.evaluate(untrained, test)
    pixelmodels.train(run, args.out / "run", overwrite=True, progress=False)

    model = pixelmodels.load(args.out / "run")  # rebuilt from config.json: own-pixelcnn is registered
    after = pixelmodels.evaluate(model, test)
    samples = pixelmodels.sample(model, 8, generator=torch.Generator().manual_seed(0))  # uint8 (8, 3, H, W)
    report = pixelmodels.check_causality(model)
    print(f"test bits/dim: {before:.3f} untrained, {after:.3f} after {args.steps} steps (2 bits: uniform)")
    print(f"sampled {len(samples)} images {tuple(samples.shape[1:])}; {report.summary()}")
    print(f"the CLI loads it given the module: pixelmodels generate {args.out / 'run'} --import {__file__}")
    return {"run": args.out / "run", "before": before, "after": after, "samples": samples, "report": report}


if __name__ == "__main__":
    main()
