"""Generation and completion: draw images pixel by pixel in raster order.

Two paths give the parameters at the current position:

* the *reference* path runs the whole network (once per pixel, once per
  sub-pixel for channel-masked networks) and reads the current position. For a
  network whose output at row i depends on at most ``model.receptive_rows``
  rows above it, it runs on those rows only: every value in the dependency cone
  of row i is then computed from the same inputs, so the result is the full
  pass's;
* the *cached* path (``cached=True``) keeps every layer's activations and
  computes, at each step, only what the new pixel changes (Ramachandran et al.
  2017, https://arxiv.org/abs/1704.06001): the model's ``SamplingCache``
  (``pixelmodels.models.base``), stepped ``model.steps_per_position`` times at
  every position.

The condition (class labels, a vector or a spatial map) is turned into a
``Condition`` once per run. ``temperature`` reshapes every position's
distribution (``pixelmodels.likelihoods``) the same way on both paths.

Random numbers are drawn once per pixel by ``head.noise``, in the same order and
shape on both paths, so both give the same images for the same generator.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from pixelmodels.config import SamplingOptions
from pixelmodels.errors import PixelModelsError
from pixelmodels.settings import check_field


def _per_example(value, n: int, shape: tuple | None):
    """A condition or labels given once for all n examples -> one per example (a view); else as given."""
    if value is None:
        return None
    value = torch.as_tensor(value)
    if shape is None:  # labels
        return value.reshape(-1).expand(n) if value.numel() == 1 else value
    return value.expand(n, *shape) if tuple(value.shape) == tuple(shape) else value


def _output(model, x: torch.Tensor) -> torch.Tensor:
    """Images as uint8, code maps as int64."""
    return x if model.n_codes else x.to(torch.uint8)


@torch.no_grad()
def sample(model, n: int, y=None, cond=None, generator: torch.Generator | None = None, cached: bool = True,
           progress: bool = False, batch_size: int | None = None, temperature: float = 1.0) -> torch.Tensor:
    """Draw ``n`` images from ``model``: uint8 (n, C, H, W) in [0, 2**n_bits), or int64 code maps in [0, n_codes).

    Args:
        model: a registered model (use its EMA weights, in eval mode: ``pixelmodels.load``).
        n: number of images.
        y: class labels for a conditional model: an int for all images or a tensor (n,).
        cond: the condition of a model with ``cond_shape``: one for all images, ``cond_shape``,
            or one each, (n, *cond_shape).
        generator: a ``torch.Generator`` on the model's device, for reproducible samples.
        cached: use the cached-activations path (else the reference path).
        progress: show a progress bar over rows.
        batch_size: sample at most this many images at a time (to bound memory); the chunks
            are drawn one after the other from the same generator.
        temperature: T in (0, 100] sharpens (T < 1) or flattens (T > 1) every position's distribution
            (see ``pixelmodels.likelihoods``); 1 samples the model. ``config.SamplingOptions`` declares it (the
            CLI's ``--temperature``).
    """
    temperature = check_field(SamplingOptions, "temperature", temperature)
    if batch_size is not None and n > batch_size:
        labels, conds = _per_example(y, n, None), _per_example(cond, n, model.cond_shape)
        return torch.cat([
            sample(model, min(batch_size, n - start), None if labels is None else labels[start:start + batch_size],
                   None if conds is None else conds[start:start + batch_size], generator, cached, progress,
                   temperature=temperature)
            for start in range(0, n, batch_size)
        ])
    device = next(model.parameters()).device
    x = torch.zeros((n,) + tuple(model.image_shape), dtype=torch.long, device=device)
    known = torch.zeros(x.shape[2:], dtype=torch.bool, device=device)
    return _output(model, _fill(model, x, known, y, cond, generator, cached, progress, temperature))


@torch.no_grad()
def complete(model, x: torch.Tensor, known: torch.Tensor, y=None, generator: torch.Generator | None = None,
             cached: bool = True, progress: bool = False, cond=None, temperature: float = 1.0) -> torch.Tensor:
    """Keep the pixels of ``x`` (n, C, H, W) where ``known`` (H, W) is True, sample the others in raster order.

    ``known`` is usually the first k rows or a raster-order prefix; any mask works
    (unknown pixels are conditioned on every known pixel before them only). ``cond`` and
    ``temperature`` as for ``sample``.
    """
    temperature = check_field(SamplingOptions, "temperature", temperature)
    device = next(model.parameters()).device
    known = torch.as_tensor(known, dtype=torch.bool, device=device)
    if tuple(known.shape) != tuple(model.image_shape[1:]):
        raise PixelModelsError(f"known: expected a mask of shape {tuple(model.image_shape[1:])}, "
                               f"found {tuple(known.shape)}")
    x = x.to(device).long().clone()
    model.check_input(x, y)
    return _output(model, _fill(model, x, known, y, cond, generator, cached, progress, temperature))


def reference_step(model, x: torch.Tensor, c, i: int, j: int) -> torch.Tensor:
    """Parameters (n, P) at (i, j) from a full forward pass (on the rows that can reach row i); c: the Condition."""
    h = x.shape[2]
    reach = model.receptive_rows
    top, bottom = (0, h) if reach is None else (max(0, i - reach), i + 1)
    c = c if c is None or (top, bottom) == (0, h) else c.rows(top, bottom)
    return model.network(model.embed(x[:, :, top:bottom]), c)[:, :, i - top, j]


def _fill(model, x, known, y, cond, generator, cached, progress, temperature):
    n, _, h, w = x.shape
    passes = model.steps_per_position
    if cached:
        cache = model.sampling_cache(n, y, cond)
        step = cache.step
    else:
        c = model.condition(y, n, cond)
        step = lambda x, i, j: reference_step(model, x, c, i, j)  # noqa: E731
    for i in tqdm(range(h), desc="sampling rows", disable=not progress, leave=False):
        for j in range(w):
            if known[i, j]:
                if cached:
                    step(x, i, j)  # the cache sees every position; once, since the whole pixel is known
                continue
            noise = model.head.noise(n, generator, x.device)
            for channel in range(passes):
                values = model.head.sample(step(x, i, j), noise, temperature)  # (n, C)
                if model.channel_masked:
                    x[:, channel, i, j] = values[:, channel]
                else:
                    x[:, :, i, j] = values
    return x
