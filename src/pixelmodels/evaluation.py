"""Measuring a model: bits per dimension over a dataset, and the periodic sample grid."""

from __future__ import annotations

import math

import torch

from pixelmodels.devices import autocast
from pixelmodels.distributed import World, all_reduce_sum, shard
from pixelmodels.errors import PixelModelsError
from pixelmodels.likelihoods import bits_per_dim
from pixelmodels.sampling import sample


@torch.no_grad()
def evaluate(model, dataset, batch_size: int = 256, device=None, limit: int | None = None, *,
             forward=None, precision: str = "fp32", world: World = World()) -> float:
    """Bits per dimension of ``model`` on ``dataset`` (the first ``limit`` images), summed in float64.

    ``forward`` replaces ``model(x, y, cond)`` (a compiled copy, say); the network runs under ``precision``'s
    autocast and the head in float32. Under torchrun each rank scores its part and the sums are added.
    """
    device = device or next(model.parameters()).device
    forward = model if forward is None else forward
    n = len(dataset) if limit is None else min(limit, len(dataset))
    mine = shard(torch.arange(n), world)
    total = torch.zeros((), dtype=torch.float64, device=device)
    for start in range(0, len(mine), batch_size):
        idx = mine[start:start + batch_size]
        x = dataset.images[idx].to(device)
        y = dataset.labels[idx].to(device) if model.n_classes else None
        cond = dataset.cond[idx].to(device) if model.cond_shape else None
        with autocast(device, precision):
            params = forward(x, y, cond)
        total += model.head.nll(params.float(), x).double().sum()
    total = all_reduce_sum(total, world)
    return bits_per_dim(total.item(), n * math.prod(model.image_shape))


def sample_grid(model, n_samples: int, seed: int, batch_size: int | None = None, cond=None,
                temperature: float = 1.0):
    """Samples for a grid: one row per class for a conditional model. Returns (images, images per row).

    A model with ``cond_shape`` takes the conditions from ``cond`` (e.g. a test set's), the first one
    for each image of a row."""
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    per_class = max(1, math.ceil(n_samples / model.n_classes)) if model.n_classes else n_samples
    y = torch.arange(model.n_classes, device=device).repeat_interleave(per_class) if model.n_classes else None
    n = per_class * (model.n_classes or 1)
    if model.cond_shape is not None:
        if cond is None or len(cond) == 0:
            raise PixelModelsError(f"sample grid: the model is conditional on cond_shape {model.cond_shape}; "
                                   "found no conditions to sample with")
        cond = cond[torch.arange(per_class).repeat(model.n_classes or 1) % len(cond)].to(device)
    images = sample(model, n, y, cond, generator=gen, batch_size=batch_size, temperature=temperature)
    return images, (per_class if model.n_classes else None)
