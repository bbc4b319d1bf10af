"""Scoring images: bits/dim per image and NLL per pixel, for tensors, datasets or image files.

:func:`score` is the library entry. :func:`score_inputs` (through :func:`read_inputs` and
:func:`dataset_inputs`) turns image files, folders and dataset splits into what a
model takes (shape and depth checked, nothing resized unless asked), and
:func:`heatmap` colours a per-pixel NLL map; :func:`scores_csv` and :func:`write_heatmaps`
write the results.
"""

from __future__ import annotations

import csv
import io
import math
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageOps
from tqdm.auto import tqdm

from pixelmodels.checkpoint import atomic_write
from pixelmodels.data.datasets import quantize
from pixelmodels.data.folder import EXTENSIONS, load_image
from pixelmodels.errors import DatasetError, PixelModelsError
from pixelmodels.imageio import display_scale, enlarge
from pixelmodels.likelihoods import bits_per_dim

GRAYSCALE_MODES = ("1", "L", "LA")
WIDE_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N", "F")  # more than 8 bits per value


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


def describe(shape) -> str:
    """(C, H, W) -> '(1, 28, 28) (grayscale 28x28)', for error messages."""
    c, h, w = shape
    kind = {1: "grayscale", 3: "RGB"}.get(c, f"{c}-channel")
    return f"{tuple(shape)} ({kind} {h}x{w})"


def describe_data(data) -> str:
    """What a dataset (or a model) holds, in words: '8-bit images (1, 28, 28)' or 'maps of 512 codes (1, 7, 7)',
    and its condition's shape."""
    what = f"maps of {data.n_codes} codes" if data.n_codes else f"{data.n_bits}-bit images"
    cond = f" with cond {tuple(data.cond_shape)}" if data.cond_shape is not None else ""
    if getattr(data, "cond_codes", None) is not None:
        cond = f" with a map of {data.cond_codes} codes {tuple(data.cond_shape)} as cond"
    return f"{what} {tuple(data.image_shape)}{cond}"


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
        batch_size: images per forward pass (bounds memory, does not change the result).
        per_pixel: also return the per-pixel NLL, (N, H, W) nats.
        progress: show a progress bar (on a terminal).

    Returns:
        :class:`Scores` (bits_per_dim, nll, pixel_nll).

    Raises:
        PixelModelsError: images of another shape or depth than the model's, or missing / bad labels.
    """
    images = torch.as_tensor(images)
    model.check_images(images)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PixelModelsError(f"batch_size: expected a positive number of images, found {batch_size!r}")
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


# -- inputs --------------------------------------------------------------------
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


# -- heat maps -----------------------------------------------------------------
def heat_colors(t: np.ndarray) -> np.ndarray:
    """Values in [0, 1] (clipped) -> uint8 RGB (..., 3) along black, red, yellow, white."""
    ramp = np.clip(np.asarray(t, dtype=np.float64), 0.0, 1.0)[..., None] * 3.0 - np.arange(3)
    return np.rint(np.clip(ramp, 0.0, 1.0) * 255.0).astype(np.uint8)


def heatmap(pixel_nll, max_bits: float) -> np.ndarray:
    """Per-pixel NLL (H, W) in nats -> uint8 RGB (H, W, 3): black at 0 bits, white at ``max_bits`` or more.

    With ``max_bits = C * n_bits``, white is what a uniform guess costs, so maps of
    different images (and models of the same depth) share one scale.
    """
    return heat_colors(np.asarray(pixel_nll, dtype=np.float64) / (math.log(2) * max_bits))


def heatmap_png(pixel_nll, max_bits: float, scale: int | None = None) -> bytes:
    """A PNG file (bytes) of :func:`heatmap`, each image pixel a square of ``scale`` x ``scale``
    (default: ``imageio.display_scale``, so small images are readable)."""
    scale = display_scale(*np.shape(pixel_nll)) if scale is None else scale
    png = io.BytesIO()
    enlarge(Image.fromarray(heatmap(pixel_nll, max_bits)), scale).save(png, format="PNG")
    return png.getvalue()


def uniform_bits(model) -> float:
    """What a uniform guess costs a pixel of ``model``'s data, in bits: the white of its heat maps."""
    return math.log2(model.n_codes) if model.n_codes else model.image_shape[0] * model.n_bits


def refuse_replacing(paths, overwrite: bool) -> None:
    """Refuse, unless ``overwrite``, to write results over files that exist (``--out``, ``--heatmap``)."""
    taken = [p for p in paths if Path(p).exists()]
    if taken and not overwrite:
        raise PixelModelsError(f"--out / --heatmap: {taken[0]} already exists ({len(taken)} files would be "
                               "replaced); use --overwrite to replace them")


def write_heatmaps(folder: str | Path, names: list[str], pixel_nll, model) -> None:
    """One heat-map PNG per image (:func:`heatmap_png`) in ``folder``, named ``names``, each written atomically."""
    for name, nll in zip(names, pixel_nll):
        atomic_write(Path(folder) / name, heatmap_png(nll, uniform_bits(model)))


def heatmap_names(inputs: Inputs) -> list[str]:
    """One distinct PNG file name per image: ``DATASET-SPLIT-INDEX.png`` or the file's path flattened."""
    names, seen = [], set()
    for source, index in zip(inputs.sources, inputs.indices):
        stem = source.replace(":", "-") + f"-{index:05d}" if index is not None else str(Path(source).with_suffix(""))
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "image"
        name, k = f"{stem}.png", 1
        while name in seen:
            k += 1
            name = f"{stem}-{k}.png"
        seen.add(name)
        names.append(name)
    return names


def scores_csv(inputs: Inputs, scores: Scores) -> str:
    """CSV text, one row per image: source,index,label,bits_per_dim,nll_nats (blank index / label: none)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["source", "index", "label", "bits_per_dim", "nll_nats"])
    for source, index, label, bpd, nll in zip(inputs.sources, inputs.indices, inputs.labels.tolist(),
                                              scores.bits_per_dim.tolist(), scores.nll.tolist()):
        writer.writerow([source, "" if index is None else index, "" if label < 0 else label,
                         f"{bpd:.6f}", f"{nll:.4f}"])
    return text.getvalue()


def write_scores(inputs: Inputs, scores: Scores, model, out: Path | None = None, heatmap: Path | None = None,
                 names: list[str] = ()) -> str:
    """Write what ``pixelmodels score`` writes: the CSV rows to ``out`` (atomically; standard output when
    None) and, with ``heatmap``, a heat map per image named ``names`` there. Returns the summary line."""
    table = scores_csv(inputs, scores)
    if out is None:
        sys.stdout.write(table)
    else:
        atomic_write(out, table.encode())
    if heatmap:
        write_heatmaps(heatmap, names, scores.pixel_nll, model)
    n = len(inputs.sources)
    wrote = ([str(out)] if out else []) + ([f"{n} heat maps in {heatmap}"] if heatmap else [])
    mean = scores.bits_per_dim.double().mean().item() if n else float("nan")
    return f"scored {n} images: mean bits/dim {mean:.4f}" + (f"; wrote {', '.join(wrote)}" if wrote else "")
