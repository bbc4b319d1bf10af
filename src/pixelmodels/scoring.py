"""Scoring images: bits/dim per image and NLL per pixel under a model (:func:`score`)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from pixelmodels.config import ScoreOptions
from pixelmodels.errors import PixelModelsError
from pixelmodels.likelihoods import bits_per_dim
from pixelmodels.settings import check_field


class Scores(NamedTuple):
    """What :func:`score` returns, one entry per image, on the CPU.

    Attributes:
        bits_per_dim: float32 (N,), NLL / (ln 2 * C * H * W), as ``model.bits_per_dim`` gives it.
        nll: float32 (N,), negative log-likelihood of each whole image, nats.
        pixel_nll: float32 (N, H, W), NLL of each pixel (its channels summed), nats;
            None unless ``per_pixel=True``. ``pixel_nll.sum((1, 2))`` is ``nll``.
    """

    bits_per_dim: torch.Tensor
    nll: torch.Tensor
    pixel_nll: torch.Tensor | None


@torch.no_grad()
def score(model, images: torch.Tensor, y=None, *, cond=None, batch_size: int = 64, per_pixel: bool = False,
          progress: bool = False) -> Scores:
    """Bits per dimension of every image (and, if asked, the NLL of every pixel) under ``model``.

    The model is used as it is (``pixelmodels.load`` gives eval mode and the EMA
    weights); batches go to the model's device, results come back to the CPU.

    Args:
        model: a model from ``create_model``, ``load`` or ``load_pretrained``.
        images: integer tensor (N, C, H, W) with values in [0, 2**model.n_bits) (or code maps in
            [0, n_codes)), what the datasets give.
        y: class labels for a conditional model: an int for all images or (N,) integers; None otherwise.
        cond: the condition of a model with ``cond_shape``, (N, *cond_shape); None otherwise.
        batch_size: images per forward pass, 1 to 65,536 (``config.ScoreOptions``; bounds memory, does not
            change the result).
        per_pixel: also return the per-pixel NLL, (N, H, W) nats.
        progress: show a progress bar (on a terminal).

    Returns:
        :class:`Scores` (bits_per_dim, nll, pixel_nll).

    Raises:
        PixelModelsError: images of another shape or depth than the model's, missing / bad labels, or a
            batch_size out of its range.
    """
    batch_size = check_field(ScoreOptions, "batch_size", batch_size)
    images = torch.as_tensor(images)
    model.check_images(images)
    n = len(images)
    if y is not None:
        y = torch.as_tensor(y).long().reshape(-1)
        if y.numel() not in (1, n):
            raise PixelModelsError(f"labels: expected one label or {n}, found {y.numel()}")
    device = next(model.parameters()).device
    nll, pixels = [], []
    for start in tqdm(range(0, n, batch_size), desc="scoring", disable=None if progress else True,
                      leave=False):
        x = images[start:start + batch_size].to(device)
        yb = None if y is None else (y if y.numel() == 1 else y[start:start + len(x)]).to(device)
        cb = None if cond is None else torch.as_tensor(cond)[start:start + len(x)].to(device)
        lp = model.log_prob(x, yb, cb, per_pixel=True)  # (B, H, W) nats
        nll.append(-lp.sum(dim=(1, 2)).float().cpu())  # the same sum log_prob takes
        if per_pixel:
            pixels.append(-lp.float().cpu())
    _, h, w = model.image_shape
    nll = torch.cat(nll) if nll else torch.zeros(0)
    pixel_nll = (torch.cat(pixels) if pixels else torch.zeros(0, h, w)) if per_pixel else None
    return Scores(bits_per_dim(nll, math.prod(model.image_shape)), nll, pixel_nll)


