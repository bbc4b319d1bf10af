"""One way out: what the commands write. Samples and completions as a PNG grid to look at (small images
enlarged, see ``imageio.display_scale``) with the exact arrays in an ``.npz`` beside it, or, for code
maps, as arrays alone. Every file is written atomically (``checkpoint.atomic_write``): a failed write
leaves no part of a file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from pixelmodels.checkpoint import atomic_write
from pixelmodels.imageio import encode, grid_image


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def channels_last_array(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C) on the CPU, as the ``.npz`` files hold images."""
    return images.cpu().numpy().transpose(0, 2, 3, 1)


def write_samples(path: str | Path, images: torch.Tensor, model, nrow: int | None = None,
                  labels: torch.Tensor | None = None, vqvae=None) -> str:
    """Write samples of ``model``: images as a PNG grid at ``path`` (``nrow`` per row) and an ``.npz`` beside
    it (``images`` uint8 (N, H, W, C), ``labels`` (N,) when given); code maps as an ``.npy`` at ``path``
    (N, H, W), and, given the ``vqvae`` that made the codes (:mod:`pixelmodels.vqvae`), the images it decodes
    them to as a PNG grid and an ``.npz`` beside it. Returns what was written, in words."""
    path = Path(path)
    if not model.n_codes:
        return _write_images(path, images, model.n_bits, nrow, labels)
    buffer = io.BytesIO()
    np.save(buffer, images[:, 0].cpu().numpy())
    atomic_write(path, buffer.getvalue())
    said = f"wrote {path} ({len(images)} code maps {tuple(images.shape[2:])}, values 0..{model.n_codes - 1})"
    if vqvae is None:
        return said
    decoded = _write_images(path.with_suffix(".png"), vqvae.decode_images(images), 8, nrow, labels)
    return f"{said}; decoded by the VQ-VAE: {decoded}"


def _write_images(path: Path, images: torch.Tensor, n_bits: int, nrow: int | None, labels) -> str:
    atomic_write(path, encode(grid_image(images, n_bits, nrow), path))
    arrays = {"images": channels_last_array(images)} | ({} if labels is None else {"labels": labels.cpu().numpy()})
    atomic_write(path.with_suffix(".npz"), npz_bytes(**arrays))
    return f"wrote {path} and {path.with_suffix('.npz')} ({len(images)} images, values 0..{2**n_bits - 1})"


def write_completions(path: str | Path, originals: torch.Tensor, known: torch.Tensor, completions: torch.Tensor,
                      model) -> str:
    """Write completions of ``originals`` (N, C, H, W) that kept the pixels where ``known`` (H, W) is True.

    Images: a PNG grid at ``path`` of three rows (the originals, the inputs with unknown pixels grey, the
    completions) and an ``.npz`` beside it (``originals`` and ``completions`` (N, H, W, C), ``known``).
    Code maps: one ``.npz`` at ``path`` (``originals``, ``known``, ``completions``, (N, H, W)).
    Returns what was written, in words.
    """
    path, known = Path(path), known.cpu()
    originals, completions = originals.cpu(), completions.cpu()
    if model.n_codes:
        atomic_write(path, npz_bytes(originals=originals[:, 0].numpy(), known=known.numpy(),
                                completions=completions[:, 0].numpy()))
        return f"wrote {path} (code maps: originals, known, completions)"
    occluded = originals.clone()
    occluded[:, :, ~known] = (2**model.n_bits - 1) // 2  # unknown pixels shown grey
    grid = grid_image(torch.cat([originals, occluded, completions]), model.n_bits, nrow=len(originals))
    atomic_write(path, encode(grid, path))
    atomic_write(path.with_suffix(".npz"), npz_bytes(originals=channels_last_array(originals), known=known.numpy(),
                                                completions=channels_last_array(completions)))
    return f"wrote {path} (rows: originals, occluded inputs, completions) and {path.with_suffix('.npz')}"
