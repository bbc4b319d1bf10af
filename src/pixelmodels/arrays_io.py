"""The arrays the commands read and write beside a run directory: the conditions ``generate --cond`` reads
(``.npy``), and samples and completions, as a PNG grid to look at (small images enlarged, see
``imageio.display_scale``) with the exact arrays in an ``.npz`` beside it, or, for code maps, as arrays alone.

Every file is written atomically (``checkpoint.atomic_write``): a failed write leaves no part of a file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from pixelmodels.checkpoint import atomic_write
from pixelmodels.errors import PixelModelsError, one_line
from pixelmodels.imageio import encode, grid_image


def read_cond(path: Path | None, model) -> torch.Tensor | None:
    """The conditions in ``path`` (``--cond FILE.npy``) for ``model``: float32 (N, *cond_shape), or int64
    code maps (N, h, w) for a model with ``cond_codes`` (say the top codes for a VQ-VAE-2 bottom prior).

    The file holds (N, *cond_shape) conditions, or one, cond_shape (read as (1, *cond_shape)).
    None when the model takes no condition and no file is given.

    Raises:
        PixelModelsError: a file for a model without condition, none for a model with one, or a file
            that is missing, unreadable, not numeric, of another shape, or holds NaN or inf.
    """
    if model.cond_shape is None or path is None:
        if (model.cond_shape is None) != (path is None):
            raise PixelModelsError(f"--cond: this model takes no condition; found {path}" if path is not None else
                                   f"--cond: the model is conditional on cond_shape {tuple(model.cond_shape)}; "
                                   "give --cond FILE.npy")
        return None
    shape = tuple(model.cond_shape)
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise PixelModelsError(f"--cond: {path}: no such file; expected a .npy of conditions") from None
    except (OSError, ValueError, EOFError) as e:
        raise PixelModelsError(f"--cond: {path}: expected a .npy array of conditions, could not read it "
                               f"({one_line(e, 200) or type(e).__name__})") from None
    codes = getattr(model, "cond_codes", None)
    if not isinstance(array, np.ndarray) or array.dtype.kind not in ("iu" if codes else "fiu"):
        found = getattr(array, "dtype", array)
        raise PixelModelsError(f"--cond: {path}: expected integer codes 0..{codes - 1} (the model is conditioned on "
                               f"maps of {codes} codes), found {found}" if codes else
                               f"--cond: {path}: expected a numeric array, found {found}")
    if array.shape == shape:
        array = array[None]
    if array.shape[1:] != shape or len(array) == 0:
        raise PixelModelsError(f"--cond: {path}: expected shape (N, {', '.join(map(str, shape))}) or "
                               f"{shape} (the model's cond_shape), found {array.shape}")
    if codes:
        bad = (array < 0) | (array >= codes)
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise PixelModelsError(f"--cond: {path}: expected codes 0..{codes - 1}, found {array[index]} at index "
                                   f"{index}")
        return torch.from_numpy(array.astype(np.int64))
    if not np.isfinite(array).all():
        raise PixelModelsError(f"--cond: {path}: expected finite values, found NaN or inf")
    return torch.from_numpy(array.astype(np.float32))


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _hwc(images: torch.Tensor) -> np.ndarray:
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
    arrays = {"images": _hwc(images)} | ({} if labels is None else {"labels": labels.cpu().numpy()})
    atomic_write(path.with_suffix(".npz"), _npz(**arrays))
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
        atomic_write(path, _npz(originals=originals[:, 0].numpy(), known=known.numpy(),
                                completions=completions[:, 0].numpy()))
        return f"wrote {path} (code maps: originals, known, completions)"
    occluded = originals.clone()
    occluded[:, :, ~known] = (2**model.n_bits - 1) // 2  # unknown pixels shown grey
    grid = grid_image(torch.cat([originals, occluded, completions]), model.n_bits, nrow=len(originals))
    atomic_write(path, encode(grid, path))
    atomic_write(path.with_suffix(".npz"), _npz(originals=_hwc(originals), known=known.numpy(),
                                                completions=_hwc(completions)))
    return f"wrote {path} (rows: originals, occluded inputs, completions) and {path.with_suffix('.npz')}"
