"""Image grids and image files, with Pillow (no torchvision).

Grids are written in a format Pillow writes losslessly (``GRID_FORMATS``, chosen by the file's extension),
so a grid read back has exactly the pixels it was given."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixelmodels.checkpoint import atomic_write
from pixelmodels.errors import PixelModelsError

DISPLAY_SIDE = 64  # pixels: the side small images are enlarged to for viewing (see display_scale)
# extension -> the lossless format Pillow writes it in (WebP with lossless=True; TIFF and BMP uncompressed)
GRID_FORMATS = {".png": "PNG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}


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


def display_scale(height: int, width: int) -> int:
    """The integer factor that enlarges an image of ``height`` x ``width`` pixels for viewing.

    It brings the longer side nearest to ``DISPLAY_SIDE`` (64) pixels, and never shrinks: 8x8 images become
    64 px, 16x16 64 px, 28x28 56 px, 32x32 64 px; 64 px and larger stay 1:1. Enlarging is by nearest
    neighbour, so every pixel stays a sharp square of one value.
    """
    return max(1, round(DISPLAY_SIDE / max(height, width)))


def enlarge(image: Image.Image, scale: int) -> Image.Image:
    """``image`` enlarged ``scale`` times by nearest neighbour (as it is for ``scale`` 1)."""
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST) if scale > 1 else image


def grid_image(images: torch.Tensor, n_bits: int, nrow: int | None = None, scale: int | None = None) -> Image.Image:
    """:func:`make_grid` as a Pillow image, enlarged ``scale`` times (default: :func:`display_scale`)."""
    grid = make_grid(images, n_bits, nrow)
    scale = display_scale(*images.shape[2:]) if scale is None else scale
    return enlarge(Image.fromarray(grid[..., 0] if grid.shape[2] == 1 else grid), scale)


def encode(image: Image.Image, path: str | Path) -> bytes:
    """The bytes of ``image`` as a file named ``path``, in the lossless format its extension names
    (``GRID_FORMATS``); another extension is refused."""
    fmt = GRID_FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise PixelModelsError(f"{path}: cannot write an image ending in {Path(path).suffix or 'no extension'}; "
                               f"expected one of {', '.join(GRID_FORMATS)}")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buffer.getvalue()


def save_grid(images: torch.Tensor, path: str | Path, n_bits: int, nrow: int | None = None,
              scale: int | None = None) -> Path:
    """Write a grid of integer images (N, C, H, W), ``nrow`` per row, enlarged ``scale`` times for viewing
    (default: :func:`display_scale`, so small images are readable), atomically, in the format of ``path``'s
    extension (``GRID_FORMATS``). Returns ``path``."""
    atomic_write(path, encode(grid_image(images, n_bits, nrow, scale), path))
    return Path(path)
