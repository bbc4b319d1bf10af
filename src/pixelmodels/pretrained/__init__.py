"""Models shipped with the package, ready to load without training.

Each subfolder is an exported model (``config.json`` and ``model.safetensors``,
as :func:`pixelmodels.save_pretrained` writes them) with a ``metadata.json``
saying how it was trained and its test bits/dim. ``scripts/train_pretrained.sh``
makes them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pixelmodels import checkpoint as ckpt
from pixelmodels.errors import PixelModelsError

ROOT = Path(__file__).parent
METADATA = "metadata.json"


def list_pretrained() -> list[str]:
    """The names :func:`load_pretrained` accepts, sorted."""
    return sorted(p.name for p in ROOT.iterdir() if (p / ckpt.CONFIG).is_file() and (p / ckpt.WEIGHTS).is_file())


def pretrained_path(name: str) -> Path:
    """The folder of shipped model ``name`` (``config.json``, ``model.safetensors``, ``metadata.json``)."""
    known = list_pretrained()
    if name not in known:
        raise PixelModelsError(f"unknown pretrained model {name!r}; known: {', '.join(known) or 'none'}")
    return ROOT / name


def pretrained_info(name: str) -> dict:
    """The metadata of shipped model ``name``: its dataset, training command, test bits/dim, ..."""
    return json.loads((pretrained_path(name) / METADATA).read_text())


def load_pretrained(name: str, device: str | torch.device = "cpu"):
    """The shipped model ``name`` (one of :func:`list_pretrained`), in eval mode.

    >>> model = load_pretrained("fashion-mnist")     # conditional on the 10 classes, 8-bit 28x28
    """
    return ckpt.load(pretrained_path(name), device)
