"""Reader of a folder of PNG / JPEG images, for training on one's own pictures.

Images are found recursively (``.png``, ``.jpg``, ``.jpeg``, any case) and
sorted by path. If the folder has ``train/`` and ``test/`` subfolders, the split
chooses one; otherwise every image belongs to both splits. Each image is turned
upright (EXIF orientation), converted to RGB or grayscale, center-cropped to a
square and resized to ``image_size`` pixels (Pillow's BOX filter when shrinking,
LANCZOS when enlarging). There are no labels.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DatasetError, one_line

EXTENSIONS = (".png", ".jpg", ".jpeg")


def list_images(root: Path, split: str) -> list[Path]:
    """The sorted image files of ``split`` under ``root``."""
    if not root.is_dir():
        raise DatasetError(f"{root}: expected a folder of PNG/JPEG images, found no such folder")
    if (root / "train").is_dir() and (root / "test").is_dir():
        root = root / split
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
    if not files:
        raise DatasetError(
            f"{root}: expected PNG or JPEG images ({', '.join(EXTENSIONS)}, searched "
            f"recursively), found none"
        )
    return files


def load_image(path: Path, image_size: int, channels: int) -> np.ndarray:
    """One image as a uint8 array (channels, image_size, image_size).

    Any failure to decode the file (Pillow raises many kinds of exception for
    corrupt data) is a :class:`DatasetError` naming it. An image declaring more
    than ``Image.MAX_IMAGE_PIXELS`` pixels is refused before it is decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image = ImageOps.exif_transpose(image).convert("RGB" if channels == 3 else "L")
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        if side != image_size:
            shrink = side > image_size
            filter_ = Image.Resampling.BOX if shrink else Image.Resampling.LANCZOS
            image = image.resize((image_size, image_size), filter_)
        array = np.asarray(image, dtype=np.uint8)
    except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, DecompressionBomb*...
        raise DatasetError(
            f"{path}: expected a readable PNG or JPEG image, found unreadable data "
            f"({type(exc).__name__}: {one_line(exc)})"
        ) from exc
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def read_folder(root: Path, split: str, image_size: int, channels: int) -> np.ndarray:
    """All images of ``split`` under ``root`` as uint8 (N, channels, image_size, image_size)."""
    files = list_images(root, split)
    images = np.empty((len(files), channels, image_size, image_size), np.uint8)
    for i, path in enumerate(files):
        images[i] = load_image(path, image_size, channels)
    return images
