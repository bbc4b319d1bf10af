"""The dataset registry, :func:`load_dataset`, :class:`ImageDataset` and :func:`quantize`.

A dataset is held whole in memory as uint8 images (N, C, H, W) with values in
``[0, 2**n_bits)`` and int64 labels (N,), -1 where there are none. Fewer bits
than the data have are obtained by dropping low bits (:func:`quantize`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DatasetError
from .cifar import read_cifar
from .colored_mnist import read_colored_mnist
from .folder import read_folder
from .idx import read_mnist
from .locate import locate_files

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds. For ``folder``, channels and image_size are the defaults."""

    channels: int
    image_size: int  # height = width, pixels
    n_bits: int  # bits per sub-pixel in the files
    n_classes: int | None  # None: unlabelled
    description: str

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        return (self.channels, self.image_size, self.image_size)


DATASET_INFO: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(3, 32, 8, 10, "CIFAR-10: 50000 + 10000 32x32 colour images, 10 classes"),
    "colored-mnist": DatasetInfo(3, 28, 2, None, "colored MNIST of CS294-158 HW1: 28x28 RGB, 2 bits"),
    "fashion-mnist": DatasetInfo(1, 28, 8, 10, "Fashion-MNIST: 60000 + 10000 28x28 grayscale clothes"),
    "folder": DatasetInfo(3, 32, 8, None, "a folder of your PNG/JPEG images (root=...)"),
    "mnist": DatasetInfo(1, 28, 8, 10, "MNIST: 60000 + 10000 28x28 grayscale digits"),
}


def list_datasets() -> list[str]:
    """The names :func:`load_dataset` accepts, sorted."""
    return sorted(DATASET_INFO)


def _check_bits(n_bits, high: int, what: str = "n_bits", flag: str = "") -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)) \
            or not 1 <= n_bits <= high:
        raise DatasetError(f"{what} must be an integer from 1 to {high}, found {n_bits!r}"
                           + (f" ({flag})" if flag else ""))
    return int(n_bits)


def quantize(images, n_bits: int, source_bits: int = 8):
    """Keep the ``n_bits`` high bits of each value: ``floor(x / 2**(source_bits - n_bits))``.

    Args:
        images: unsigned integer tensor or numpy array with values in [0, 2**source_bits).
        n_bits: bits to keep, 1..source_bits.
        source_bits: bits the values have now, 1..8.

    Returns:
        a new tensor / array of the same type, shape and dtype, values in [0, 2**n_bits).
    """
    source_bits = _check_bits(source_bits, 8, "source_bits")
    n_bits = _check_bits(n_bits, source_bits)
    return images >> (source_bits - n_bits)


def _as_tensor(array, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A contiguous tensor sharing memory with a numpy array where possible."""
    if isinstance(array, np.ndarray):
        array = torch.from_numpy(np.require(array, requirements=["C", "W"]))
    return torch.as_tensor(array, dtype=dtype).contiguous()


class ImageDataset(Dataset):
    """A whole dataset in memory.

    Attributes:
        images: uint8 tensor (N, C, H, W), contiguous, values in [0, 2**n_bits).
        labels: int64 tensor (N,), -1 for unlabelled images.
        n_bits: bits per sub-pixel.
        n_classes: number of classes, or None for unlabelled data.
        image_shape: (C, H, W).
        name, split: where the data came from.
    """

    def __init__(self, images, labels, n_bits: int, n_classes: int | None = None,
                 name: str = "", split: str = "train"):
        images = _as_tensor(images)
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DatasetError(
                f"{name}: expected uint8 images (N, C, H, W), found {images.dtype} {tuple(images.shape)}"
            )
        self.images = images.contiguous()
        self.labels = _as_tensor(labels, torch.int64)
        if self.labels.shape != (len(images),):
            raise DatasetError(
                f"{name}: expected {len(images)} labels, found shape {tuple(self.labels.shape)}"
            )
        self.n_bits = _check_bits(n_bits, 8)
        if len(images) and int(images.max()) >= 2**self.n_bits:
            raise DatasetError(
                f"{name}: expected values below 2**{self.n_bits}, found {int(images.max())}"
            )
        self.n_classes = n_classes
        self.image_shape = tuple(images.shape[1:])
        self.name = name
        self.split = split

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """(uint8 image (C, H, W), label or -1)."""
        return self.images[index], int(self.labels[index])

    def __repr__(self) -> str:
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_shape={self.image_shape}, n_bits={self.n_bits}, n_classes={self.n_classes})")


def _read(name: str, found, split: str):
    """(uint8 images (N, C, H, W), int64 labels (N,)) from the located files."""
    if name in ("mnist", "fashion-mnist"):
        return read_mnist(*found)
    if name == "cifar10":
        return read_cifar(found, split)
    images = read_colored_mnist(found, split)
    return images, np.full(len(images), -1, np.int64)


def load_dataset(name: str, split: str = "train", root: str | Path | None = None,
                 n_bits: int | None = None, *, download: bool = True,
                 image_size: int | None = None, channels: int | None = None) -> ImageDataset:
    """Load a split of a dataset into memory.

    Args:
        name: one of :func:`list_datasets`.
        split: "train" or "test".
        root: where the files are (for ``folder``: the image folder). None: the
            cache directory, then system folders (see :mod:`pixelmodels.data.locate`).
        n_bits: bits per sub-pixel to keep, 1..the dataset's own depth
            (8; 2 for colored-mnist). None: the dataset's own depth.
        download: whether missing files with a published checksum may be downloaded.
        image_size: ``folder`` only: side of the square images, pixels (default 32).
        channels: ``folder`` only: 3 (RGB, default) or 1 (grayscale).

    Raises:
        DatasetError: unknown name or split, bad n_bits, missing or corrupt files.
    """
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    if key not in DATASET_INFO:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}; found {split!r}")
    info = DATASET_INFO[key]
    n_bits = info.n_bits if n_bits is None else _check_bits(n_bits, 8, flag="--n-bits")
    if n_bits > info.n_bits:
        raise DatasetError(
            f"{key} has {info.n_bits} bits per channel; --n-bits {n_bits} asked for more"
        )
    root = Path(root).expanduser() if root is not None else None
    if key == "folder":
        image_size = info.image_size if image_size is None else image_size
        channels = info.channels if channels is None else channels
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise DatasetError(f"image_size must be a positive integer, found {image_size!r}")
        if channels not in (1, 3):
            raise DatasetError(f"channels must be 1 or 3, found {channels!r}")
        if root is None:
            raise DatasetError("the folder dataset needs root: the folder of PNG/JPEG images")
        images = read_folder(root, split, image_size, channels)
        labels = np.full(len(images), -1, np.int64)
    else:
        for what, value, own in (("image_size", image_size, info.image_size),
                                 ("channels", channels, info.channels)):
            if value is not None and value != own:
                raise DatasetError(
                    f"{what} applies to the folder dataset only: {key} has {what} {own}, "
                    f"found {what}={value!r}"
                )
        images, labels = _read(key, locate_files(key, split, root, download), split)
    if n_bits < info.n_bits:
        images = quantize(images, n_bits, info.n_bits)
    return ImageDataset(images, labels, n_bits, info.n_classes, key, split)
