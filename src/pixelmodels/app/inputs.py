"""One way in: what the commands read. Image files and folders, dataset splits and arrays files become
what a model takes (shape and depth checked, nothing resized unless asked), and ``--cond`` files its
conditions."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from pixelmodels.data.datasets import describe, describe_data, quantize
from pixelmodels.data.folder import EXTENSIONS, load_image
from pixelmodels.errors import DatasetError, PixelModelsError, one_line

GRAYSCALE_MODES = ("1", "L", "LA")
WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")  # more than 8 bits per value

@dataclass
class Inputs:
    """Images to score and where each came from.

    Attributes:
        images: uint8 (N, C, H, W), values in [0, 2**n_bits).
        labels: int64 (N,), -1 where unknown.
        sources: N names: the file's path, or ``DATASET:SPLIT``.
        indices: N indices in the dataset, None for a file.
        cond: (N, *cond_shape) conditions of a dataset that has them, else None.
    """

    images: torch.Tensor
    labels: torch.Tensor
    sources: list[str]
    indices: list[int | None]
    cond: torch.Tensor | None = None

    @staticmethod
    def cat(parts: list["Inputs"]) -> "Inputs":
        conds = [p.cond for p in parts]
        return Inputs(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                      [s for p in parts for s in p.sources], [i for p in parts for i in p.indices],
                      None if any(c is None for c in conds) else torch.cat(conds))


def image_files(path: str | Path) -> list[Path]:
    """An image file as given, or the PNG / JPEG files under a folder (recursively, sorted)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not files:
            raise DatasetError(f"{path}: expected PNG or JPEG images ({', '.join(EXTENSIONS)}, searched "
                               "recursively), found none")
        return files
    if not path.is_file():
        raise DatasetError(f"{path}: no such image file or folder")
    return [path]


def read_image(path: str | Path, image_shape, n_bits: int, resize: bool = False) -> torch.Tensor:
    """One 8-bit image file as uint8 (C, H, W) in [0, 2**n_bits), low bits dropped as the datasets do.

    Without ``resize`` the file must have the model's size and channels (grayscale
    for C = 1, RGB or RGBA for C = 3; alpha is dropped). With it, the image is
    converted to grayscale / RGB and, for a square model, center-cropped and resized
    as the ``folder`` dataset does (other shapes: resized without cropping).
    """
    path = Path(path)
    c, h, w = image_shape
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image)
                image.load()
    except Exception as exc:  # Pillow raises many kinds for corrupt data, as in data/folder.py
        raise DatasetError(f"{path}: expected a readable PNG or JPEG image, found unreadable data "
                           f"({type(exc).__name__}: {str(exc)[:200]})") from exc
    if image.mode in WIDE_MODES:
        raise DatasetError(f"{path}: expected 8 bits per value, found Pillow mode {image.mode!r} (16 or 32 bits)")
    found = (1 if image.mode in GRAYSCALE_MODES else 3, image.height, image.width)
    if found != (c, h, w):
        if not resize:
            raise PixelModelsError(f"{path}: the model takes images of shape {describe((c, h, w))}, found "
                                   f"{describe(found)}; --resize (resize=True) converts and resizes it")
        if h == w:
            array = load_image(path, h, c)
        else:
            image = image.convert("L" if c == 1 else "RGB").resize((w, h), Image.Resampling.LANCZOS)
            array = np.asarray(image, dtype=np.uint8)
            array = array[None] if c == 1 else array.transpose(2, 0, 1)
    else:
        array = np.asarray(image.convert("L" if c == 1 else "RGB"), dtype=np.uint8)
        array = array[None] if c == 1 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.array(quantize(array, n_bits, 8) if n_bits < 8 else array))  # a writable copy


def read_inputs(paths, image_shape, n_bits: int, resize: bool = False, limit: int | None = None) -> Inputs:
    """The first ``limit`` image files under ``paths`` (see :func:`image_files`) as :class:`Inputs`, unlabelled."""
    files = [f for p in paths for f in image_files(p)][:limit]
    c, h, w = image_shape
    images = torch.stack([read_image(f, image_shape, n_bits, resize) for f in files]) if files \
        else torch.zeros(0, c, h, w, dtype=torch.uint8)
    return Inputs(images, torch.full((len(files),), -1), [str(f) for f in files], [None] * len(files))


def dataset_inputs(model, dataset, limit: int | None = None) -> Inputs:
    """The first ``limit`` examples of a loaded dataset as :class:`Inputs`, checked against ``model``.

    A model of images takes images of its shape; a dataset with more bits than the model has its low
    bits dropped (as ``--n-bits`` does), one of another shape or with fewer bits is refused naming both.
    A model of codes or with a condition takes exactly its kind of data, conditions included.
    """
    if model.n_codes is not None or model.cond_shape is not None:
        if describe_data(dataset) != describe_data(model):
            raise PixelModelsError(f"--dataset: the model takes {describe_data(model)}, {dataset.name} has "
                                   f"{describe_data(dataset)}")
    elif tuple(dataset.image_shape) != tuple(model.image_shape) or dataset.n_bits < model.n_bits:
        raise PixelModelsError(f"--dataset: the model takes {model.n_bits}-bit images of shape "
                               f"{describe(model.image_shape)}, {dataset.name} has {dataset.n_bits}-bit images of "
                               f"shape {describe(dataset.image_shape)}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    images = torch.as_tensor(dataset.images[:n])
    if model.n_bits is not None and dataset.n_bits > model.n_bits:
        images = quantize(images, model.n_bits, dataset.n_bits)
    return Inputs(images, dataset.labels[:n], [f"{dataset.name}:{dataset.split}"] * n, list(range(n)),
                  None if model.cond_shape is None else dataset.cond[:n])


def score_inputs(model, dataset=None, paths=(), *, label: int | None = None, limit: int | None = None,
                 resize: bool = False) -> Inputs:
    """What to score with ``model``: the examples of ``dataset``, then the image files under ``paths``,
    the first ``limit`` of them in that order, all labelled ``label`` when it is given.

    Raises:
        PixelModelsError: nothing to score; image files for a model of codes or with a condition; images
            without labels for a conditional model and no ``label``; data the model cannot take.
    """
    if dataset is None and not paths:
        raise PixelModelsError("INPUT: expected image files or folders, or a dataset to score; found neither")
    parts = []
    if dataset is not None:
        if model.n_classes and label is None and not dataset.n_classes:
            raise PixelModelsError(f"--label: the model is conditional on {model.n_classes} classes and "
                                   f"{dataset.name} has no labels; give --label K")
        parts.append(dataset_inputs(model, dataset, limit))
        limit = None if limit is None else limit - len(parts[0].sources)
    if paths and (model.n_codes is not None or model.cond_shape is not None):
        raise PixelModelsError(f"INPUT: image files cannot be read by a model of "
                               f"{'codes' if model.n_codes else 'images with a condition'}; found {paths[0]}; "
                               "give a dataset (--dataset arrays --data-dir DIR)")
    if paths and model.n_classes and label is None:
        raise PixelModelsError(f"--label: the model is conditional on {model.n_classes} classes and image "
                               "files have no labels; give --label K")
    if paths:
        parts.append(read_inputs(paths, model.image_shape, model.n_bits, resize, limit))
    inputs = Inputs.cat(parts)
    if label is not None:
        inputs.labels = torch.full_like(inputs.labels, label)
    return inputs




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


