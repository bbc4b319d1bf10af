"""Measuring a model: bits per dimension over a dataset."""

from __future__ import annotations

import math

import torch

from pixelmodels.config import ScoreOptions
from pixelmodels.devices import autocast
from pixelmodels.distributed import World, all_reduce_sum, shard
from pixelmodels.likelihoods import bits_per_dim
from pixelmodels.settings import check_field


@torch.no_grad()
def evaluate(model, dataset, batch_size: int = 256, device=None, limit: int | None = None, *,
             forward=None, precision: str = "fp32", world: World = World()) -> float:
    """Bits per dimension of ``model`` on ``dataset`` (the first ``limit`` images), summed in float64;
    ``batch_size`` images per forward pass (checked as ``score``'s).

    ``forward`` replaces ``model(x, y, cond)`` (a compiled copy, say); the network runs under ``precision``'s
    autocast and the head in float32. Under torchrun each rank scores its part and the sums are added.
    """
    batch_size = check_field(ScoreOptions, "batch_size", batch_size)
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

