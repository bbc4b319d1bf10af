"""Image grids and image files, with Pillow (no torchvision)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8_range(images: torch.Tensor, n_bits: int) -> np.ndarray:
    """(N, C, H, W) integers in [0, 2**n_bits) -> (N, H, W, C) uint8 in [0, 255]."""
    x = images.detach().cpu().long().numpy()
    x = np.rint(x * (255.0 / (2**n_bits - 1))).astype(np.uint8)
    return x.transpose(0, 2, 3, 1)


def make_grid(images: torch.Tensor, n_bits: int, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile images into one (H', W', C) uint8 array, ``nrow`` images per row."""
    x = to_uint8_range(images, n_bits)
    n, h, w, c = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, dtype=np.uint8)
    for k in range(n):
        r, col = divmod(k, nrow)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[k]
    return grid


def save_grid(images: torch.Tensor, path: str | Path, n_bits: int, nrow: int | None = None, scale: int = 2) -> Path:
    """Write a PNG grid of integer images; ``scale`` enlarges small images for viewing."""
    grid = make_grid(images, n_bits, nrow)
    img = Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
