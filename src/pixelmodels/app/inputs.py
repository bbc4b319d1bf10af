"""One way in: what the commands that read images take (train, evaluate, score, compress, complete). A dataset
split, image files and folders, and arrays files (.npz / .npy) become what a model takes, through one reader
of image files (:mod:`pixelmodels.data.folder`: the same conversions and refusals for every command), checked
against the model; :func:`read_line` and :func:`splits_line` say what was read in one line. ``--cond`` files
give conditions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pixelmodels.app.outputs import listed, plural
from pixelmodels.data.datasets import describe_data, load_arrays_file, quantize
from pixelmodels.data.folder import (EXTENSIONS, TEST_FRACTION, ReadFacts, describe, list_images, load_image,
                                     shape_words)
from pixelmodels.errors import DatasetError, PixelModelsError, one_line

ARRAYS = (".npz", ".npy")
SHOWN = 5  # names of skipped files a report line shows


@dataclass
class Inputs:
    """Images a command reads and where each came from.

    Attributes:
        images: uint8 (N, C, H, W), values in [0, 2**n_bits); or code maps (N, 1, H, W).
        labels: int64 (N,), -1 where unknown.
        sources: N names: the file's path, ``DATASET:SPLIT``, or an arrays file's path.
        indices: N indices in the dataset or arrays file, None for an image file.
        cond: (N, *cond_shape) conditions of data that has them, else None.
        parts: (source, images read, :class:`ReadFacts` or None) per source, for :func:`read_line`.
    """

    images: torch.Tensor
    labels: torch.Tensor
    sources: list[str]
    indices: list[int | None]
    cond: torch.Tensor | None = None
    parts: list[tuple[str, int, ReadFacts | None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def cat(parts: list["Inputs"]) -> "Inputs":
        conds = [p.cond for p in parts]
        return Inputs(torch.cat([p.images for p in parts]), torch.cat([p.labels for p in parts]),
                      [s for p in parts for s in p.sources], [i for p in parts for i in p.indices],
                      None if any(c is None for c in conds) else torch.cat(conds), [q for p in parts for q in p.parts])


def image_files(path: str | Path, facts: ReadFacts) -> list[Path]:
    """An image file as given, or the image files under a folder (recursively, sorted; the other files
    there are noted in ``facts.skipped``)."""
    path = Path(path)
    if path.is_dir():
        files, facts.skipped = list_images(path)
        return files
    if not path.is_file():
        raise DatasetError(f"{path}: no such image file or folder")
    if path.suffix.lower() not in EXTENSIONS:
        raise DatasetError(f"{path}: expected a PNG or JPEG image ({', '.join(EXTENSIONS)}), an arrays file "
                           f"({', '.join(ARRAYS)}) or a folder, found a {path.suffix or 'file without extension'}"
                           f"{' file' if path.suffix else ''}")
    return [path]


def read_inputs(paths, image_shape, n_bits: int, resize: bool = False, limit: int | None = None) -> Inputs:
    """The first ``limit`` image files under ``paths`` (see :func:`image_files`), unlabelled, through the one
    reader of image files (:func:`~pixelmodels.data.folder.load_image`), values quantized to ``n_bits``.

    Without ``resize`` a file must have the shape (C, H, W) ``image_shape`` (an RGBA file counts as RGB, a
    16-bit file as 8-bit); with it, files are converted and center-cropped and resized.
    """
    c, h, w = image_shape
    arrays, files, parts = [], [], []
    for path in paths:
        facts = ReadFacts(str(path))
        for file in image_files(path, facts)[:None if limit is None else limit - len(files)]:
            arrays.append(load_image(file, (h, w), c, resize=resize, facts=facts))
            files.append(file)
        parts.append((str(path), len(facts.files), facts))
        if limit is not None and len(files) >= limit:
            break
    images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, c, h, w, dtype=torch.uint8)
    images = quantize(images, n_bits, 8) if n_bits < 8 else images
    return Inputs(images, torch.full((len(files),), -1), [str(f) for f in files], [None] * len(files), parts=parts)


def dataset_inputs(model, dataset, limit: int | None = None, source: str | None = None) -> Inputs:
    """The first ``limit`` examples of a loaded dataset (or arrays file, named ``source``) as :class:`Inputs`,
    checked against ``model``.

    A model of images takes images of its shape; a dataset with more bits than the model has its low
    bits dropped (as ``--n-bits`` does), one of another shape or with fewer bits is refused naming both.
    A model of codes or with a condition takes exactly its kind of data, conditions included.
    """
    name = source or dataset.name
    if model.n_codes is not None or model.cond_shape is not None:
        if describe_data(dataset) != describe_data(model):
            raise PixelModelsError(f"{source or '--dataset'}: the model takes {describe_data(model)}, {name} has "
                                   f"{describe_data(dataset)}")
    elif tuple(dataset.image_shape) != tuple(model.image_shape) or dataset.n_bits < model.n_bits:
        raise PixelModelsError(f"{source or '--dataset'}: the model takes {model.n_bits}-bit images of shape "
                               f"{describe(model.image_shape)}, {name} has {dataset.n_bits}-bit images of "
                               f"shape {describe(dataset.image_shape)}")
    n = len(dataset) if limit is None else min(limit, len(dataset))
    images = torch.as_tensor(dataset.images[:n])
    if model.n_bits is not None and dataset.n_bits > model.n_bits:
        images = quantize(images, model.n_bits, dataset.n_bits)
    where = source or f"{dataset.name}:{dataset.split}"
    shown = source or (f"{dataset.facts.source}:{dataset.split}" if dataset.facts else where)
    return Inputs(images, dataset.labels[:n], [where] * n, list(range(n)),
                  None if model.cond_shape is None else dataset.cond[:n], [(shown, n, dataset.facts)])


def _needs_label(model, label, what: str, marginal: bool) -> None:
    if model.n_classes and label is None and not marginal:
        raise PixelModelsError(f"--label: the model is conditional on {model.n_classes} classes and {what} "
                               "no labels; give --label K")


def inputs_for(model, dataset=None, paths=(), *, label: int | None = None, limit: int | None = None,
               resize: bool = False, marginal: bool = False) -> Inputs:
    """What a command reads for ``model``: the examples of ``dataset``, then those of ``paths`` (image files,
    folders of them, arrays files), the first ``limit`` of them in that order, all labelled ``label`` when
    it is given.

    Images without labels (label -1) for a class-conditional model and no ``label`` are refused, unless
    ``marginal`` (``score``, ``ood``: they score the marginal likelihood over the classes instead).

    Raises:
        PixelModelsError: nothing to read; image files for a model of codes or with a condition; images
            without labels for a conditional model, no ``label`` and not ``marginal``; data the model cannot
            take.
    """
    if dataset is None and not paths:
        raise PixelModelsError("INPUT: expected image files or folders, arrays files or a dataset; found none")
    parts = []
    if dataset is not None:
        if not dataset.n_classes:
            _needs_label(model, label, f"{dataset.name} has", marginal)
        parts.append(dataset_inputs(model, dataset, limit))
    for path in paths:
        left = None if limit is None else limit - sum(len(p) for p in parts)
        if left == 0:
            break
        if Path(path).suffix.lower() in ARRAYS:
            data = load_arrays_file(path, model.n_bits, model.n_codes, model.cond_codes)
            if not data.n_classes:
                _needs_label(model, label, f"{path} has", marginal)
            parts.append(dataset_inputs(model, data, left, str(path)))
            continue
        if model.n_codes is not None or model.cond_shape is not None:
            raise PixelModelsError(f"INPUT: image files cannot be read by a model of "
                                   f"{'codes' if model.n_codes else 'images with a condition'}; found {path}; "
                                   "give an arrays file (.npz) or a dataset (--dataset arrays --data-dir DIR)")
        _needs_label(model, label, "image files have", marginal)
        parts.append(read_inputs([path], model.image_shape, model.n_bits, resize, left))
    inputs = Inputs.cat(parts)
    if label is not None:
        inputs.labels = torch.full_like(inputs.labels, label)
    return inputs


def data_words(data) -> str:
    """What a model or dataset holds, for a report: 'RGB 32x32', 'grayscale 28x28, 3-bit', '7x7, 512 codes'."""
    _, h, w = data.image_shape
    if data.n_codes:
        return f"{h}x{w}, {data.n_codes} codes"
    return shape_words(data.image_shape) + (f", {data.n_bits}-bit" if data.n_bits != 8 else "")


def held_out_words(facts: ReadFacts) -> str:
    return (f"{TEST_FRACTION:.0%} held out for test, the same every run: {facts.source} has no train/ and test/ "
            "subfolders")


def read_line(parts, data, detail: str = "") -> str:
    """One line saying what was read: 'read 3 images from photos and x.png (RGB 32x32): DETAIL; skipped 2
    files that are not images (README.md, notes.txt); converted 1 RGBA and 1 grayscale; cropped and resized
    2 images (1 of 40x30, 1 of 64x64)'.

    Args:
        parts: (source, images read, :class:`ReadFacts` or None) per source (``Inputs.parts``).
        data: the model or dataset, for the images' kind and shape.
        detail: what follows the colon (the splits).
    """
    noun = "code map" if data.n_codes else "image"
    n = sum(count for _, count, _ in parts)
    line = (f"read {plural(n, noun)} from {listed(dict.fromkeys(source for source, _, _ in parts))} "
            f"({data_words(data)})" + (f": {detail}" if detail else ""))
    facts = [f for _, _, f in parts if f is not None]
    skipped = sorted({name for f in facts for name in f.skipped})
    if skipped:
        names = ", ".join(skipped[:SHOWN]) + (f" and {len(skipped) - SHOWN} more" if len(skipped) > SHOWN else "")
        verb = "is not an image" if len(skipped) == 1 else "are not images"
        line += f"; skipped {plural(len(skipped), 'file')} that {verb} ({names})"
    converted = sum((f.converted for f in facts), Counter())
    if converted:
        line += "; converted " + listed(f"{k} {kind}" for kind, k in converted.most_common())
    resized = sum((f.resized for f in facts), Counter())
    if resized:
        sizes = [f"{k} of {size}" for size, k in resized.most_common(3)]
        more = len(resized) - len(sizes)
        line += (f"; cropped and resized {plural(resized.total(), 'image')} ({', '.join(sizes)}"
                 + (f" and {plural(more, 'other size')}" if more else "") + ")")
    return line


def inputs_line(inputs: Inputs, model) -> str:
    """What a command read (:class:`Inputs` for ``model``), in one line; a held-out split says so."""
    held = [f for _, _, f in inputs.parts if f is not None and f.held_out]
    return read_line(inputs.parts, model, "; ".join(held_out_words(f) for f in held))


def splits_line(train, test) -> str:
    """What ``train`` read (its train and test datasets), in one line: 'read 480 images from photos (RGB 32x32):
    432 train, 48 test (10% held out ...); skipped ...; converted ...'."""
    parts = [(d.facts.source if d.facts else d.name, len(d), d.facts) for d in (train, test)]
    detail = f"{len(train)} train, {len(test)} test"
    if train.facts is not None and train.facts.held_out:
        detail += f" ({held_out_words(train.facts)})"
    return read_line(parts, train, detail)


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


