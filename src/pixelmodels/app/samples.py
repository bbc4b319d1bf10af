"""What ``pixelmodels generate`` and ``pixelmodels complete`` draw, from their settings, and the sample grid
of a model that training writes at each evaluation."""

from __future__ import annotations

import math

import torch

from pixelmodels.errors import PixelModelsError
from pixelmodels.sampling import complete, sample


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


def generate_samples(model, s, cond=None):
    """What ``pixelmodels generate`` samples with its settings ``s`` (``GenerateSettings``): for a
    class-conditional model without ``s.class_label``, a row per class (:func:`sample_grid`); else ``s.n``
    for each condition of ``cond`` (a row each), or ``s.n`` without one. Returns (images, images per row,
    labels or None)."""
    if model.n_classes and s.class_label is None:
        images, nrow = sample_grid(model, s.n * model.n_classes, s.seed, s.batch_size, temperature=s.temperature)
        return images, nrow, torch.arange(model.n_classes).repeat_interleave(nrow)
    n, nrow = s.n * (1 if cond is None else len(cond)), None if cond is None else s.n
    labels = None if s.class_label is None else torch.full((n,), s.class_label)
    gen = torch.Generator(next(model.parameters()).device).manual_seed(s.seed)
    images = sample(model, n, labels, None if cond is None else cond.repeat_interleave(s.n, dim=0),
                    generator=gen, progress=True, batch_size=s.batch_size, temperature=s.temperature)
    return images, nrow, labels


def complete_examples(model, dataset, s):
    """What ``pixelmodels complete`` does with its settings ``s`` (``CompleteSettings``): the first ``s.n``
    examples of ``dataset``, their first pixels in raster order kept (``s.known_pixels``), the rest
    sampled. Returns (originals, known (H, W) bool, completions)."""
    _, h, w = model.image_shape
    known = (torch.arange(h * w) < s.known_pixels(model.image_shape, len(dataset))).view(h, w)
    x = torch.as_tensor(dataset.images[: s.n])
    y = dataset.labels[: s.n] if model.n_classes else None
    cond = dataset.cond[: s.n] if model.cond_shape is not None else None
    gen = torch.Generator(next(model.parameters()).device).manual_seed(s.seed)
    return x, known, complete(model, x, known, y, generator=gen, progress=True, cond=cond, temperature=s.temperature)
