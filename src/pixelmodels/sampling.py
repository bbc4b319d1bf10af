"""Generation: draw images pixel by pixel in raster order.

The reference path runs the whole network once per pixel (once per sub-pixel
for channel-masked networks) and reads the parameters at the current
position. For a network whose output at row i depends on at most
``model.receptive_rows`` rows above it (a stack of convolutions), it runs on
those rows only: every value in the dependency cone of row i is then computed
from the same inputs, so the result is the full pass's. Random numbers are drawn once per pixel by ``head.noise`` in the same
order and shape on every path, so any faster path fed the same generator must
give the same images.

NOTE: ``cached=True`` currently runs the reference loop too; the cached
activations path is planned (see the fast-sampling issue).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


@torch.no_grad()
def sample(model, n: int, y=None, generator: torch.Generator | None = None, cached: bool = True,
           progress: bool = False) -> torch.Tensor:
    """Draw ``n`` images from ``model``: uint8 (n, C, H, W) in [0, 2**n_bits).

    Args:
        model: a registered model (use its EMA weights, in eval mode: ``pixelmodels.load``).
        n: number of images.
        y: class labels for a conditional model: an int for all images or a tensor (n,).
        generator: a ``torch.Generator`` on the model's device, for reproducible samples.
        cached: use the cached-activations path (currently the reference loop).
        progress: show a progress bar over rows.
    """
    device = next(model.parameters()).device
    x = torch.zeros((n,) + tuple(model.image_shape), dtype=torch.long, device=device)
    known = torch.zeros(x.shape[2:], dtype=torch.bool, device=device)
    return _fill(model, x, known, y, generator, progress).to(torch.uint8)


@torch.no_grad()
def complete(model, x: torch.Tensor, known: torch.Tensor, y=None, generator: torch.Generator | None = None,
             cached: bool = True, progress: bool = False) -> torch.Tensor:
    """Keep the pixels where ``known`` (H, W) is True and sample the others, in raster order."""
    device = next(model.parameters()).device
    return _fill(model, x.to(device).long().clone(), known.to(device), y, generator, progress).to(torch.uint8)


def _labels(model, n: int, y, device) -> torch.Tensor | None:
    if model.n_classes is None:
        return None
    return model.check_input(torch.zeros((n,) + tuple(model.image_shape), device=device), y)


def _fill(model, x, known, y, generator, progress):
    n, c, h, w = x.shape
    y = _labels(model, n, y, x.device)
    passes = c if model.channel_masked else 1
    reach = model.receptive_rows
    for i in tqdm(range(h), desc="sampling rows", disable=not progress, leave=False):
        top, bottom = (0, h) if reach is None else (max(0, i - reach), i + 1)
        for j in range(w):
            if known[i, j]:
                continue
            noise = model.head.noise(n, generator, x.device)
            for channel in range(passes):
                params = model.network(model.scale(x[:, :, top:bottom]), y)[:, :, i - top, j]
                values = model.head.sample(params, noise)  # (n, C)
                if model.channel_masked:
                    x[:, channel, i, j] = values[:, channel]
                else:
                    x[:, :, i, j] = values
    return x
