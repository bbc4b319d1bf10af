"""The image sets ``pixelmodels ood`` compares, one spec each (``--in``, ``--out-of``): a dataset split
``DATASET:SPLIT``, a path (an image file, a folder of them, an arrays file, read as ``score`` reads its
INPUT), or a synthetic set: ``noise`` (uniform random values), ``constant`` (each image one value) or
``inverted:SPEC`` (the images of SPEC with their values reversed, v -> 2**n_bits - 1 - v).

Every set is read for the model that scores it and refused, naming its flag and spec, when it cannot be
read or holds fewer than 2 images (a detector's metrics need two on each side).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from pixelmodels.app.inputs import Inputs, data_words, dataset_inputs, inputs_for, inputs_line
from pixelmodels.app.outputs import plural
from pixelmodels.app.runs import dataset_config, load_data
from pixelmodels.data import list_datasets
from pixelmodels.data.datasets import SPLITS, describe_data
from pixelmodels.errors import PixelModelsError
from pixelmodels.ood import constant, inverted, noise

SYNTHETIC_SIZE = 1000  # images of a synthetic set without --limit
INVERTED = "inverted:"
SPECS = ("DATASET:SPLIT, an image file, a folder of images, an arrays file (.npz/.npy), noise, constant or "
         "inverted:SPEC")


@dataclass
class ImageSet:
    """A set of images as a spec named it.

    Attributes:
        spec: the spec as typed (``fashion-mnist:test``, ``noise``, ``inverted:x.npz``).
        flag: the flag that gave it (``--in``, ``--out-of``).
        inputs: its images, unlabelled (labels -1): a detector scores without labels.
        line: what was read or made, in one line.
    """

    spec: str
    flag: str
    inputs: Inputs
    line: str


def unlabelled(inputs: Inputs) -> Inputs:
    inputs.labels = torch.full_like(inputs.labels, -1)
    return inputs


def _read(spec: str, model, run_data, data_dir, limit, resize, seed) -> tuple[Inputs, str]:
    """The images of ``spec`` for ``model`` and the line saying what was read or made."""
    if spec in ("noise", "constant"):
        if model.cond_shape is not None:
            raise PixelModelsError(f"a synthetic set has no condition; the model takes {describe_data(model)}")
        n = limit or SYNTHETIC_SIZE
        images = noise(model, n, seed) if spec == "noise" else constant(model, n, seed)
        made = "uniform noise" if spec == "noise" else "one value each"
        return (Inputs(images, torch.full((n,), -1), [spec] * n, list(range(n))),
                f"made {plural(n, 'image')} of {made} ({data_words(model)}, seed {seed})")
    if spec.startswith(INVERTED):
        if model.n_codes:
            raise PixelModelsError("inverting reverses the values of images; the model takes maps of codes")
        inputs, line = _read(spec[len(INVERTED):], model, run_data, data_dir, limit, resize, seed)
        inputs.images = inverted(inputs.images, model.n_bits)
        return inputs, f"{line}; inverted (v -> {2**model.n_bits - 1} - v)"
    name, colon, split = spec.partition(":")
    name = name.lower().replace("_", "-")
    if colon and name in list_datasets():
        if split not in SPLITS:
            raise PixelModelsError(f"expected a split among {', '.join(SPLITS)}, found {split!r}")
        own = run_data is not None and name == run_data.dataset  # the run's own dataset: its folder and settings
        data = load_data(dataset_config(run_data, None if own else name, data_dir, model), split)
        inputs = dataset_inputs(model, data, limit, source=spec)
    elif Path(spec).exists():
        inputs = inputs_for(model, None, [Path(spec)], limit=limit, resize=resize, marginal=True)
    else:
        raise PixelModelsError(f"expected {SPECS} (DATASET one of {', '.join(list_datasets())}); found no such "
                               "dataset, file or folder")
    return unlabelled(inputs), inputs_line(inputs, model)


def read_set(spec: str, flag: str, model, run_data=None, *, data_dir: str | None = None, limit: int | None = None,
             resize: bool = False, seed: int = 0) -> ImageSet:
    """The set ``spec`` given by ``flag``, read for ``model`` (a dataset from ``data_dir`` if given, else where
    the run ``run_data`` found its own, else the dataset's usual places), its first ``limit`` images.

    Raises:
        PixelModelsError: one line naming ``flag`` and ``spec``: an unknown spec, a set that cannot be read or
            that the model cannot take, or fewer than 2 images.
    """
    try:
        inputs, line = _read(spec, model, run_data, data_dir, limit, resize, seed)
    except PixelModelsError as e:
        text, inner = str(e), spec
        while inner.startswith(INVERTED):
            inner = inner[len(INVERTED):]
        for said in (f"{inner}: ", "INPUT: ", "--dataset: "):  # the reader's own name for the set: the spec's
            text = text.removeprefix(said)
        raise PixelModelsError(f"{flag} {spec}: {text}") from None
    if len(inputs) < 2:
        raise PixelModelsError(f"{flag} {spec}: expected at least 2 images (a detector's metrics compare sets), "
                               f"found {len(inputs)}" + (f" (--limit {limit})" if limit is not None else ""))
    return ImageSet(spec, flag, inputs, line)
