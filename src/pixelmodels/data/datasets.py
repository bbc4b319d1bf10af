"""The dataset registry, :func:`load_dataset`, :class:`ImageDataset` and :func:`quantize`.

A dataset is held whole in memory as uint8 images (N, C, H, W) with values in
``[0, 2**n_bits)`` and int64 labels (N,), -1 where there are none. Fewer bits
than the data have are obtained by dropping low bits (:func:`quantize`). The
``arrays`` dataset (:mod:`pixelmodels.data.arrays`) may instead hold code maps
(N, 1, H, W) of integers in ``[0, n_codes)`` and a condition per example: float32 (N, D) or
(N, D, h, w), or a map of discrete codes (N, h, w) in ``[0, cond_codes)`` (the top codes a
VQ-VAE-2 bottom prior is conditioned on), memory-mapped from ``.npy`` / ``.npz`` files where it can be.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import DatasetError
from ..settings import check_field
from .arrays import Arrays, check_finite, check_range, read_arrays, read_npy, signed_codes
from .cifar import read_cifar
from .colored_mnist import read_colored_mnist
from .folder import ReadFacts, read_folder
from .idx import read_mnist
from .locate import locate_files

SPLITS = ("train", "test")


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset holds. For ``folder``, channels and image_size are the defaults; for
    ``arrays`` they are placeholders (the files say), n_bits is the most the images may have."""

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
    "arrays": DatasetInfo(1, 0, 8, None, "your .npz/.npy arrays of integer images or VQ-VAE codes, "
                                         "with optional labels y and conditions cond (root=...)"),
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


def check_n_codes(n_codes, flag: str = "--n-codes") -> int:
    """A number of codes K given by the caller (``--n-codes`` or ``--cond-codes``), checked against its
    declaration in ``DataConfig``."""
    return check_field(DataConfig, flag[2:].replace("-", "_"), n_codes)


def _as_codes(images, n_codes, name: str, channel: bool = True, flag: str = "--n-codes") -> torch.Tensor:
    """Integer code maps (N, H, W) (or (N, 1, H, W) with ``channel``) -> a tensor (N, 1, H, W) (without
    ``channel``: (N, H, W)), its values checked in chunks."""
    n_codes = check_n_codes(n_codes, flag)
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    shapes = "(N, H, W) or (N, 1, H, W)" if channel else "(N, h, w)"
    if array.dtype.kind not in "iu" or array.ndim not in ((3, 4) if channel else (3,)) \
            or (array.ndim == 4 and array.shape[1] != 1):
        raise DatasetError(f"{name}: expected integer code maps {shapes}, found {array.dtype} {array.shape}")
    array = array[:, None] if array.ndim == 3 and channel else array
    check_range(array, n_codes, name, "codes", lambda value: f" ({flag} {n_codes})")
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return _as_tensor(signed_codes(array, n_codes))


def _as_cond(cond, n: int, name: str) -> torch.Tensor:
    """A condition (N, D) or (N, D, h, w) -> a float32 tensor (sharing memory when it is one)."""
    if not isinstance(cond, torch.Tensor):
        array = np.asarray(cond)
        if array.dtype.kind not in "iuf":
            raise DatasetError(f"{name}: expected a float condition ({n}, D) or ({n}, D, h, w), "
                               f"found {array.dtype} {array.shape}")
        cond = torch.from_numpy(np.ascontiguousarray(array, np.float32))
    if cond.dtype.is_complex or cond.dtype == torch.bool or cond.ndim not in (2, 4) or len(cond) != n:
        raise DatasetError(f"{name}: expected a float condition ({n}, D) or ({n}, D, h, w), "
                           f"found {cond.dtype} {tuple(cond.shape)}")
    cond = cond.to(torch.float32).contiguous()
    check_finite(cond.numpy(), name)
    return cond


class ImageDataset(Dataset):
    """A whole dataset in memory (or memory-mapped, for ``arrays``).

    Attributes:
        images: tensor (N, C, H, W), contiguous: uint8 images with values in [0, 2**n_bits), or
            integer code maps (C = 1, a signed integer dtype or uint8) with values in [0, n_codes).
        labels: int64 tensor (N,), -1 for unlabelled images.
        n_bits: bits per sub-pixel; None for code maps.
        n_codes: the number of codes K of code maps; None for images.
        n_classes: number of classes, or None for unlabelled data.
        cond: a condition per example: float32 (N, D) or (N, D, h, w), integer code maps (N, h, w)
            with values in [0, cond_codes), or None.
        cond_shape: (D,), (D, h, w) or (h, w) (codes), or None.
        cond_codes: K of a condition that is a map of K codes, else None.
        image_shape: (C, H, W).
        name, split: where the data came from.
        facts: what the reader of image files read (:class:`~pixelmodels.data.folder.ReadFacts`: files,
            files skipped, conversions, the held-out split) for ``folder``; None for the other datasets.
    """

    def __init__(self, images, labels, n_bits: int | None, n_classes: int | None = None,
                 name: str = "", split: str = "train", *, n_codes: int | None = None, cond=None,
                 cond_codes: int | None = None):
        if n_codes is not None:
            if n_bits is not None:
                raise DatasetError(f"{name}: code maps (n_codes={n_codes!r}) have no n_bits; found n_bits={n_bits!r}")
            images = _as_codes(images, n_codes, name)
        else:
            images = _as_tensor(images)
        if n_codes is None and (images.dtype != torch.uint8 or images.ndim != 4):
            raise DatasetError(
                f"{name}: expected uint8 images (N, C, H, W), found {images.dtype} {tuple(images.shape)}"
            )
        self.images = images.contiguous()
        self.labels = _as_tensor(labels, torch.int64)
        if self.labels.shape != (len(images),):
            raise DatasetError(
                f"{name}: expected {len(images)} labels, found shape {tuple(self.labels.shape)}"
            )
        self.n_bits = None if n_codes is not None else _check_bits(n_bits, 8)
        if n_codes is None and len(images) and int(images.max()) >= 2**self.n_bits:
            raise DatasetError(
                f"{name}: expected values below 2**{self.n_bits}, found {int(images.max())}"
            )
        if cond is None and cond_codes is not None:
            raise DatasetError(f"{name}: cond_codes={cond_codes!r} describes a condition; found no cond")
        if cond is not None and cond_codes is not None:
            cond = _as_codes(cond, cond_codes, f"{name}: cond", channel=False, flag="--cond-codes")
            if len(cond) != len(images):
                raise DatasetError(f"{name}: cond: expected {len(images)} code maps, one per example, found "
                                   f"{len(cond)}")
        elif cond is not None:
            cond = _as_cond(cond, len(images), name)
        self._finish(n_codes, n_classes, cond, name, split, cond_codes)

    def _finish(self, n_codes, n_classes, cond, name, split, cond_codes=None) -> None:
        self.n_codes = None if n_codes is None else int(n_codes)
        self.n_classes = n_classes
        self.cond = cond
        self.cond_codes = None if cond_codes is None else int(cond_codes)
        self.cond_shape = None if cond is None else tuple(cond.shape[1:])
        self.image_shape = tuple(self.images.shape[1:])
        self.name = name
        self.split = split
        self.facts: ReadFacts | None = None

    @classmethod
    def from_arrays(cls, arrays: Arrays, name: str = "arrays", split: str = "train") -> "ImageDataset":
        """A dataset of what :func:`~pixelmodels.data.arrays.read_arrays` read and checked (no second pass)."""
        self = cls.__new__(cls)
        self.images, self.labels, self.n_bits = arrays.images, arrays.labels, arrays.n_bits
        self._finish(arrays.n_codes, arrays.n_classes, arrays.cond, name, split, arrays.cond_codes)
        return self

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        """(image (C, H, W), label or -1), and the condition when there is one: (image, label, cond)."""
        if self.cond is None:
            return self.images[index], int(self.labels[index])
        return self.images[index], int(self.labels[index]), self.cond[index]

    def __repr__(self) -> str:
        extra = "".join(f", {key}={getattr(self, key)}" for key in ("n_codes", "cond_shape", "cond_codes")
                        if getattr(self, key) is not None)
        return (f"ImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_shape={self.image_shape}, n_bits={self.n_bits}, n_classes={self.n_classes}{extra})")


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
                 image_size: int | None = None, channels: int | None = None,
                 n_codes: int | None = None, cond_codes: int | None = None,
                 data_dir: str | Path | None = None) -> ImageDataset:
    """Load a split of a dataset into memory (``arrays``: memory-mapped where it can be).

    Args:
        name: one of :func:`list_datasets`.
        split: "train" or "test".
        root: where the files are (for ``folder``: the image folder, its splits in ``train/`` and
            ``test/`` or else 10% of its images held out for test, see :mod:`pixelmodels.data.folder`;
            for ``arrays``: the folder of ``train.npz`` / ``test.npz`` or ``{split}_x.npy``). None: the
            cache directory, then system folders (see :mod:`pixelmodels.data.locate`).
        n_bits: bits per sub-pixel to keep, 1..the dataset's own depth
            (8; 2 for colored-mnist). None: the dataset's own depth. For ``arrays``
            images: the bits the values have (default 8); they are not quantized.
        download: whether missing files with a published checksum may be downloaded.
        image_size: ``folder`` only: side of the square images, pixels (default 32).
        channels: ``folder`` only: 3 (RGB, default) or 1 (grayscale).
        n_codes: ``arrays`` only: the files hold code maps of this many codes
            (``--n-codes``; default: the ``n_codes`` an .npz declares, else images).
        cond_codes: ``arrays`` only: the condition ``cond`` is a map of this many codes (N, h, w)
            (``--cond-codes``; default: the ``cond_codes`` an .npz declares, else a float condition).
        data_dir: ``root`` under the name of its flag (``--data-dir``) and of ``DataConfig.data_dir``;
            give one of the two.

    Raises:
        DatasetError: unknown name or split, bad n_bits, missing or corrupt files.
    """
    if data_dir is not None:
        if root is not None:
            raise DatasetError(f"root / data_dir: the same folder under two names; give one, found root={root!r} "
                               f"and data_dir={data_dir!r}")
        root = data_dir
    key = name.lower().replace("_", "-") if isinstance(name, str) else name
    if key not in DATASET_INFO:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    if split not in SPLITS:
        raise DatasetError(f"split must be one of {', '.join(SPLITS)}; found {split!r}")
    info = DATASET_INFO[key]
    n_bits, image_size, channels, n_codes, cond_codes = (
        check_field(DataConfig, k, v) for k, v in (("n_bits", n_bits), ("image_size", image_size),
                                                   ("channels", channels), ("n_codes", n_codes),
                                                   ("cond_codes", cond_codes)))
    n_bits_given = n_bits
    n_bits = info.n_bits if n_bits is None else n_bits
    if n_bits > info.n_bits:
        raise DatasetError(
            f"{key} has {info.n_bits} bits per channel; --n-bits {n_bits} asked for more"
        )
    for flag, value in (("--n-codes", n_codes), ("--cond-codes", cond_codes)):
        if value is not None and key != "arrays":
            raise DatasetError(f"{flag} applies to the arrays dataset only (code maps); {key} holds images, "
                               f"found {flag[2:].replace('-', '_')}={value!r}")
    root = Path(root).expanduser() if root is not None else None
    if key == "arrays":
        return _load_arrays(root, split, n_bits_given, n_codes, image_size, channels, cond_codes)
    if key == "folder":
        image_size = info.image_size if image_size is None else image_size
        channels = info.channels if channels is None else channels
        if root is None:
            raise DatasetError("the folder dataset needs root: the folder of PNG/JPEG images")
        images, facts = read_folder(root, split, image_size, channels)
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
        facts = None
    if n_bits < info.n_bits:
        images = quantize(images, n_bits, info.n_bits)
    dataset = ImageDataset(images, labels, n_bits, info.n_classes, key, split)
    dataset.facts = facts
    return dataset


def _load_arrays(root: Path | None, split: str, n_bits: int | None, n_codes, image_size, channels,
                 cond_codes=None) -> ImageDataset:
    for what, value in (("image_size", image_size), ("channels", channels)):
        if value is not None:
            raise DatasetError(f"{what} applies to the folder dataset only: arrays takes it from the files, "
                               f"found {what}={value!r}")
    if root is None:
        raise DatasetError("the arrays dataset needs root (--data-dir): the folder of train.npz / test.npz "
                           "or train_x.npy / test_x.npy")
    if not root.is_dir():
        raise DatasetError(f"{root}: expected a folder of train.npz / test.npz or train_x.npy / test_x.npy, "
                           f"found {'a file' if root.exists() else 'nothing'}")
    arrays = read_arrays(root, split, n_bits, n_codes, cond_codes)
    return ImageDataset.from_arrays(arrays, "arrays", split)


def load_arrays_file(path: str | Path, n_bits: int | None = None, n_codes: int | None = None,
                     cond_codes: int | None = None) -> ImageDataset:
    """One arrays file as a dataset named by its path: ``NAME.npz`` (``x``, optional ``y``, ``cond``, as a
    split of ``arrays``), ``NAME_x.npy`` (with ``NAME_y.npy`` and ``NAME_cond.npy`` beside it when they are
    there), or another ``.npy`` of integer images or code maps (N, H, W) or (N, C, H, W), unlabelled.
    ``n_bits``, ``n_codes`` and ``cond_codes`` as for :func:`load_dataset`'s ``arrays``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"{path}: expected an .npz or .npy file of arrays, found "
                           f"{'a folder' if path.exists() else 'nothing'}")
    if path.suffix.lower() == ".npz" or path.stem.endswith("_x"):
        split = path.stem if path.suffix.lower() == ".npz" else path.stem[:-2]
        return ImageDataset.from_arrays(read_arrays(path.parent, split, n_bits, n_codes, cond_codes), str(path), "")
    x = read_npy(path)
    x = x[:, None] if x.ndim == 3 else x
    if n_codes is None:
        n_bits = 8 if n_bits is None else n_bits
        if x.dtype.kind not in "iu" or x.ndim != 4:
            raise DatasetError(f"{path}: expected integer images (N, H, W) or (N, C, H, W), found {x.dtype} {x.shape}")
        check_range(x, 2**n_bits, str(path), f"values of {n_bits}-bit images")
        x = x.astype(np.uint8)
    return ImageDataset(x, np.full(len(x), -1, np.int64), None if n_codes else n_bits, name=str(path), split="",
                        n_codes=n_codes)


def describe_data(data) -> str:
    """What a dataset (or a model) holds, in words: '8-bit images (1, 28, 28)' or 'maps of 512 codes (1, 7, 7)',
    and its condition's shape."""
    what = f"maps of {data.n_codes} codes" if data.n_codes else f"{data.n_bits}-bit images"
    cond = f" with cond {tuple(data.cond_shape)}" if data.cond_shape is not None else ""
    if getattr(data, "cond_codes", None) is not None:
        cond = f" with a map of {data.cond_codes} codes {tuple(data.cond_shape)} as cond"
    return f"{what} {tuple(data.image_shape)}{cond}"


def class_frequencies(data) -> tuple[float, ...] | None:
    """The frequencies of a labelled dataset's ``n_classes`` classes among its labelled images (unlabelled ones,
    -1, left out): p(y) of a class-conditional model trained on it. None without labels."""
    labels = data.labels[data.labels >= 0]
    if not data.n_classes or not len(labels):
        return None
    counts = torch.bincount(labels, minlength=data.n_classes).double()
    return tuple((counts / counts.sum()).tolist())
