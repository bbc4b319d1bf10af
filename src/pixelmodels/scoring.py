"""Scoring images: bits/dim per image and NLL per pixel under a model (:func:`score`), the marginal likelihood
of a class-conditional model given no labels, and the scores of out-of-distribution detection: the likelihood
ratio against a background model and the complexity-corrected score (:mod:`pixelmodels.ood`)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from pixelmodels.config import ScoreOptions
from pixelmodels.errors import PixelModelsError
from pixelmodels.likelihoods import bits_per_dim
from pixelmodels.ood import complexity as image_complexity
from pixelmodels.ood import encoder
from pixelmodels.settings import check_field


class Scores(NamedTuple):
    """What :func:`score` returns, one entry per image, on the CPU.

    Attributes:
        bits_per_dim: float32 (N,), NLL / (ln 2 * C * H * W), as ``model.bits_per_dim`` gives it.
        nll: float32 (N,), negative log-likelihood of each whole image, nats.
        pixel_nll: float32 (N, H, W), NLL of each pixel (its channels summed), nats;
            None unless ``per_pixel=True``. ``pixel_nll.sum((1, 2))`` is ``nll``.
        background_bits_per_dim: float32 (N,), bits/dim under the background model; None without one.
        likelihood_ratio: float32 (N,), log p(x) - log p_background(x) in bits/dim (Ren et al. 2019):
            ``background_bits_per_dim - bits_per_dim``; low for out-of-distribution images.
        complexity: float32 (N,), bits/dim of each image's file under the codec ``codec`` (Serra et al.
            2020); None without a codec.
        codec: the complexity's codec (``png``, ``webp``, ``jpegxl``) or None.
        marginal: True when a class-conditional model was given no labels and scored the marginal
            likelihood log sum_y p(x|y) p(y) over its classes, p(y) its recorded class frequencies
            (``model.config.class_frequencies``) or uniform.
    """

    bits_per_dim: torch.Tensor
    nll: torch.Tensor
    pixel_nll: torch.Tensor | None
    background_bits_per_dim: torch.Tensor | None = None
    likelihood_ratio: torch.Tensor | None = None
    complexity: torch.Tensor | None = None
    codec: str | None = None
    marginal: bool = False

    @property
    def complexity_score(self) -> torch.Tensor | None:
        """S = bits/dim - complexity (Serra et al. 2020), float32 (N,): high for out-of-distribution images;
        None without a codec."""
        return None if self.complexity is None else self.bits_per_dim - self.complexity


def check_background(model, background) -> None:
    """Refuse a background model of another kind of data than ``model``'s, naming both."""
    from pixelmodels.data.datasets import describe_data

    if describe_data(background) != describe_data(model):
        raise PixelModelsError(f"background: the model takes {describe_data(model)}, the background model takes "
                               f"{describe_data(background)}; a likelihood ratio needs models of the same data")


def check_complexity(model, codec: str | None) -> None:
    """Refuse a ``complexity`` codec that is unknown or not installed, or one asked of a model of code maps."""
    if codec is None:
        return
    if model.n_codes:
        raise PixelModelsError("complexity: a codec measures images; this model takes maps of codes")
    encoder(codec)


def marginal_log_prob(model, x: torch.Tensor, cond=None) -> torch.Tensor:
    """Per-pixel log-probabilities (B, H, W), nats, of the marginal p(x) = sum_y p(x|y) p(y) of a
    class-conditional model, p(y) its recorded class frequencies (``model.config.class_frequencies``, which
    ``pixelmodels train`` records) or uniform: one pass per class.

    Pixel i's entry is log p(x_<=i) - log p(x_<i), the marginal model's own conditional (the class belief
    updated by the pixels before it), so the entries sum to log p(x), exactly.
    """
    k = model.n_classes
    per_class = torch.stack([model.log_prob(x, torch.full((len(x),), y, device=x.device), cond, per_pixel=True)
                             for y in range(k)])  # (K, B, H, W)
    prefix = per_class.double().flatten(2).cumsum(2)  # (K, B, H*W): log p(x_<=i | y)
    joint = torch.logsumexp(prefix + log_prior(model).to(x.device)[:, None, None], dim=0)  # (B, H*W): log p(x_<=i)
    return torch.diff(joint, dim=1, prepend=torch.zeros_like(joint[:, :1])).reshape(per_class.shape[1:]).float()


def log_prior(model) -> torch.Tensor:
    """log p(y) (K,), float64, of a class-conditional model: its recorded class frequencies, or uniform."""
    freqs = model.config.class_frequencies
    if freqs is None:
        return torch.full((model.n_classes,), -math.log(model.n_classes), dtype=torch.float64)
    return torch.tensor(freqs, dtype=torch.float64).log()


@torch.no_grad()
def score(model, images: torch.Tensor, y=None, *, cond=None, background=None, complexity: str | None = None,
          batch_size: int = 64, per_pixel: bool = False, progress: bool = False) -> Scores:
    """Bits per dimension of every image (and, if asked, the NLL of every pixel) under ``model``.

    The model is used as it is (``pixelmodels.load`` gives eval mode and the EMA
    weights); batches go to the model's device, results come back to the CPU.

    Args:
        model: a model from ``create_model``, ``load`` or ``load_pretrained``.
        images: integer tensor (N, C, H, W) with values in [0, 2**model.n_bits) (or code maps in
            [0, n_codes)), what the datasets give.
        y: class labels for a conditional model: an int for all images or (N,) integers. None for a
            class-conditional model scores the marginal likelihood over its classes (one pass per class;
            ``Scores.marginal`` says so).
        cond: the condition of a model with ``cond_shape``, (N, *cond_shape); None otherwise.
        background: a background model of the same data (say one from ``train --perturb``): its bits/dim and
            the likelihood ratio are returned too. It is scored as the model is (labels if it takes them,
            the marginal if it takes them and none are given).
        complexity: a lossless codec (``png``, ``webp``, ``jpegxl``; :mod:`pixelmodels.ood`): each image's
            bits/dim under it, and ``Scores.complexity_score``.
        batch_size: images per forward pass, 1 to 65,536 (``config.ScoreOptions``; bounds memory, does not
            change the result).
        per_pixel: also return the per-pixel NLL, (N, H, W) nats.
        progress: show a progress bar (on a terminal).

    Returns:
        :class:`Scores` (bits_per_dim, nll, pixel_nll).

    Raises:
        PixelModelsError: images of another shape or depth than the model's, bad labels, a background model
            of other data, a codec unknown or not installed, or a batch_size out of its range.
    """
    batch_size = check_field(ScoreOptions, "batch_size", batch_size)
    complexity = check_field(ScoreOptions, "complexity", complexity)
    images = torch.as_tensor(images)
    model.check_images(images)
    if background is not None:
        check_background(model, background)
    check_complexity(model, complexity)
    n = len(images)
    if y is not None:
        y = torch.as_tensor(y).long().reshape(-1)
        if y.numel() not in (1, n):
            raise PixelModelsError(f"labels: expected one label or {n}, found {y.numel()}")
    device = next(model.parameters()).device
    marginal = bool(model.n_classes) and y is None
    nll, pixels = [], []
    for start in tqdm(range(0, n, batch_size), desc="scoring", disable=None if progress else True,
                      leave=False):
        x = images[start:start + batch_size].to(device)
        yb = None if y is None else (y if y.numel() == 1 else y[start:start + len(x)]).to(device)
        cb = None if cond is None else torch.as_tensor(cond)[start:start + len(x)].to(device)
        lp = (marginal_log_prob(model, x, cb) if marginal else
              model.log_prob(x, yb, cb, per_pixel=True))  # (B, H, W) nats
        nll.append(-lp.sum(dim=(1, 2)).float().cpu())  # the same sum log_prob takes
        if per_pixel:
            pixels.append(-lp.float().cpu())
    _, h, w = model.image_shape
    nll = torch.cat(nll) if nll else torch.zeros(0)
    pixel_nll = (torch.cat(pixels) if pixels else torch.zeros(0, h, w)) if per_pixel else None
    bpd = bits_per_dim(nll, math.prod(model.image_shape))
    extra = {}
    if background is not None:
        under = score(background, images, y if background.n_classes else None,
                      cond=cond if background.cond_shape else None, batch_size=batch_size, progress=progress)
        extra.update(background_bits_per_dim=under.bits_per_dim, likelihood_ratio=under.bits_per_dim - bpd)
    if complexity is not None:
        extra.update(complexity=image_complexity(images, complexity), codec=complexity)
    return Scores(bpd, nll, pixel_nll, marginal=marginal, **extra)


