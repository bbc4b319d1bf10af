"""Models shipped with the package, ready to load without training.

Each subfolder is an exported model (``config.json`` and ``model.safetensors``,
as :func:`pixelmodels.save_pretrained` writes them) with a ``metadata.json``
saying how it was trained and what it scores: the command, steps, images seen,
CPU thread-minutes, parameters, test bits/dim of the EMA and the raw weights, the
bits/dim of the first 200 test images (which the tests check to 1e-4) and the
cached sampling time of 16 images. ``scripts/train_pretrained.sh NAME`` makes
them; :func:`pretrained_table` (``pixelmodels pretrained``, and the README's table)
reads them, so no figure is written twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from pixelmodels import checkpoint as ckpt
from pixelmodels.errors import PixelModelsError
from pixelmodels.data.datasets import describe_data

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


# The table's columns: (heading, metadata key, format); a missing or null figure shows as "-".
TABLE = [("name", "name", "{}"), ("model", "model", "{}"), ("data", "data", "{}"), ("parameters", "parameters", "{:,}"),
         ("steps", "steps", "{:,}"), ("images seen", "images_seen", "{:,}"),
         ("CPU thread-minutes", "thread_minutes", "{:.0f}"), ("test bits/dim (EMA)", "test_bits_per_dim", "{:.4f}"),
         ("test bits/dim (raw)", "raw_test_bits_per_dim", "{:.4f}"),
         ("sampling 16 images (s)", "sampling_seconds_16", "{:.1f}")]


def pretrained_table() -> str:
    """Every shipped model's figures from its ``metadata.json``, as a markdown table (the README shows this
    text, and ``pixelmodels pretrained`` prints it)."""
    lines = ["| " + " | ".join(head for head, _, _ in TABLE) + " |", "|" + " --- |" * len(TABLE)]
    for name in list_pretrained():
        config = ckpt.model_config_of(ROOT / name)
        meta = {"model": config.name, "data": describe_data(config), **pretrained_info(name)}
        cells = [form.format(meta[key]) if meta.get(key) is not None else "-" for _, key, form in TABLE]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
