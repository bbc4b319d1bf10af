"""Generation and completion: draw images pixel by pixel in raster order.

Two paths give the parameters at the current position:

* the *reference* path runs the whole network (once per pixel, once per
  sub-pixel for channel-masked networks) and reads the current position. For a
  network whose output at row i depends on at most ``model.receptive_rows``
  rows above it, it runs on those rows only: every value in the dependency cone
  of row i is then computed from the same inputs, so the result is the full
  pass's;
* the *cached* path (``cached=True``, for models with ``sampling_cache``) keeps
  every layer's activations and computes, at each step, only what the new
  pixel changes (Ramachandran et al. 2017, https://arxiv.org/abs/1704.06001).

Random numbers are drawn once per pixel by ``head.noise``, in the same order and
shape on both paths, so both give the same images for the same generator.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from pixelmodels.errors import PixelModelsError


@torch.no_grad()
def sample(model, n: int, y=None, generator: torch.Generator | None = None, cached: bool = True,
           progress: bool = False, batch_size: int | None = None) -> torch.Tensor:
    """Draw ``n`` images from ``model``: uint8 (n, C, H, W) in [0, 2**n_bits).

    Args:
        model: a registered model (use its EMA weights, in eval mode: ``pixelmodels.load``).
        n: number of images.
        y: class labels for a conditional model: an int for all images or a tensor (n,).
        generator: a ``torch.Generator`` on the model's device, for reproducible samples.
        cached: use the cached-activations path where the model has one.
        progress: show a progress bar over rows.
        batch_size: sample at most this many images at a time (to bound memory); the chunks
            are drawn one after the other from the same generator.
    """
    if batch_size is not None and n > batch_size:
        labels = None if y is None else torch.as_tensor(y).reshape(-1).expand(n)
        return torch.cat([
            sample(model, min(batch_size, n - start), None if labels is None else labels[start:start + batch_size],
                   generator, cached, progress)
            for start in range(0, n, batch_size)
        ])
    device = next(model.parameters()).device
    x = torch.zeros((n,) + tuple(model.image_shape), dtype=torch.long, device=device)
    known = torch.zeros(x.shape[2:], dtype=torch.bool, device=device)
    return _fill(model, x, known, y, generator, cached, progress).to(torch.uint8)


@torch.no_grad()
def complete(model, x: torch.Tensor, known: torch.Tensor, y=None, generator: torch.Generator | None = None,
             cached: bool = True, progress: bool = False) -> torch.Tensor:
    """Keep the pixels of ``x`` (n, C, H, W) where ``known`` (H, W) is True, sample the others in raster order.

    ``known`` is usually the first k rows or a raster-order prefix; any mask works
    (unknown pixels are conditioned on every known pixel before them only).
    """
    device = next(model.parameters()).device
    known = torch.as_tensor(known, dtype=torch.bool, device=device)
    if tuple(known.shape) != tuple(model.image_shape[1:]):
        raise PixelModelsError(f"known: expected a mask of shape {tuple(model.image_shape[1:])}, "
                               f"found {tuple(known.shape)}")
    x = x.to(device).long().clone()
    model.check_input(x, y)
    return _fill(model, x, known, y, generator, cached, progress).to(torch.uint8)


def _labels(model, n: int, y, device) -> torch.Tensor | None:
    if model.n_classes is None:
        return None
    return model.check_input(torch.zeros((n,) + tuple(model.image_shape), device=device), y)


def reference_step(model, x: torch.Tensor, y, i: int, j: int) -> torch.Tensor:
    """Parameters (n, P) at (i, j) from a full forward pass (on the rows that can reach row i)."""
    h = x.shape[2]
    reach = model.receptive_rows
    top, bottom = (0, h) if reach is None else (max(0, i - reach), i + 1)
    return model.network(model.scale(x[:, :, top:bottom]), y)[:, :, i - top, j]


def _fill(model, x, known, y, generator, cached, progress):
    n, c, h, w = x.shape
    y = _labels(model, n, y, x.device)
    passes = c if model.channel_masked else 1
    cache = model.sampling_cache(n, y) if cached and hasattr(model, "sampling_cache") else None
    step = (lambda i, j: cache.step(x, i, j)) if cache is not None else (lambda i, j: reference_step(model, x, y, i, j))
    for i in tqdm(range(h), desc="sampling rows", disable=not progress, leave=False):
        for j in range(w):
            if known[i, j]:
                if cache is not None:
                    cache.step(x, i, j)  # the cache must see every position once
                continue
            noise = model.head.noise(n, generator, x.device)
            for channel in range(passes):
                values = model.head.sample(step(i, j), noise)  # (n, C)
                if model.channel_masked:
                    x[:, channel, i, j] = values[:, channel]
                else:
                    x[:, :, i, j] = values
    return x
