"""Writers of the real dataset file formats, for tests that need tiny datasets."""

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """IDX encoding of a uint8 array: magic, big-endian int32 dims, data."""
    magic = (0x800 | array.ndim) if magic is None else magic
    return struct.pack(f">{1 + array.ndim}i", magic, *array.shape) + array.astype(np.uint8).tobytes()


def write_file(path: Path, data: bytes, gz: bool = False) -> Path:
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist(folder: Path, split: str = "train", n: int = 5, gz: bool = True, seed: int = 0):
    """Write a split of n random images and labels; return (images (n, 28, 28), labels (n,))."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    write_file(folder / IDX_NAMES[split][0], idx_bytes(images), gz)
    write_file(folder / IDX_NAMES[split][1], idx_bytes(labels), gz)
    return images, labels
