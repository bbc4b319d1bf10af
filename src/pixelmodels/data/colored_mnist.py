"""Reader of the colored MNIST of Berkeley CS294-158 (Deep Unsupervised Learning), HW1.

The file ``mnist_colored.pkl`` (in the homework data of
https://github.com/rll/deepul) is a pickled dict with ``train`` (60000, 28, 28, 3)
and ``test`` (10000, 28, 28, 3) arrays: channels last, 2 bits per channel
(values 0..3), no labels. It has no published checksum, so it is never
downloaded automatically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetError, one_line
from .safe_pickle import load_pickle, plain_keys

FILENAME = "mnist_colored.pkl"
SOURCE = "the homework 1 data of Berkeley CS294-158 (https://github.com/rll/deepul)"
N_BITS = 2


def find_colored_mnist(path: Path, split: str) -> Path | None:
    """``path`` itself if it is a ``.pkl`` file, else ``path/mnist_colored.pkl`` if present."""
    if path.is_file() and path.suffix == ".pkl":
        return path
    return path / FILENAME if (path / FILENAME).is_file() else None


def read_colored_mnist(path: Path, split: str) -> np.ndarray:
    """Read one split as a uint8 array (N, 3, 28, 28) with values 0..3."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the file ({one_line(exc)})") from exc
    content = load_pickle(data, str(path))
    if not isinstance(content, dict) or split not in plain_keys(content):
        found = sorted(map(str, plain_keys(content))) if isinstance(content, dict) \
            else type(content).__name__
        raise DatasetError(
            f"{path}: expected a dict with keys 'train' and 'test', found {found}"
        )
    images = plain_keys(content)[split]
    if not isinstance(images, np.ndarray) or images.dtype.kind not in "ui" \
            or images.shape[1:] != (28, 28, 3):
        found = f"{images.dtype} array {images.shape}" if isinstance(images, np.ndarray) \
            else type(images).__name__
        raise DatasetError(
            f"{path}: expected '{split}' as an integer array (N, 28, 28, 3), found {found}"
        )
    if images.size and (images.min() < 0 or images.max() >= 2**N_BITS):
        raise DatasetError(
            f"{path}: expected '{split}' values 0..{2**N_BITS - 1} (2 bits per channel), "
            f"found values {images.min()}..{images.max()}"
        )
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.uint8)
