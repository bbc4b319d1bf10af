"""Writers of the real dataset file formats, for tests that need tiny datasets."""

import gzip
import io
import pickle
import struct
import tarfile
import zlib
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


def cifar_batch_bytes(n: int = 2, seed: int = 0, protocol: int = 2, bytes_keys: bool = True) -> bytes:
    """One CIFAR-10 batch pickle: {'data': uint8 (n, 3072), 'labels': [n ints in 0..9]}."""
    rng = np.random.default_rng(seed)
    keys = (b"data", b"labels") if bytes_keys else ("data", "labels")
    content = dict(zip(keys, (rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist())))
    return pickle.dumps(content, protocol=protocol)


def tar_bytes(members: dict[str, bytes], gz: bool = True) -> bytes:
    """A tar (gzipped or not) of ``members`` (name -> contents), in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def cifar_test_tar(gz: bool = True, n: int = 2, seed: int = 0) -> bytes:
    """A cifar-10-python tarball holding only ``test_batch``."""
    return tar_bytes({"cifar-10-batches-py/test_batch": cifar_batch_bytes(n, seed)}, gz)


def colored_bytes(n: int = 2, seed: int = 0, protocol: int = 4) -> bytes:
    """The colored-MNIST pickle: {'train', 'test': uint8 (n, 28, 28, 3) in 0..3}."""
    rng = np.random.default_rng(seed)
    content = {s: rng.integers(0, 4, (n, 28, 28, 3), dtype=np.uint8) for s in ("train", "test")}
    return pickle.dumps(content, protocol=protocol)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (6, 5), mode: str = "RGB", seed: int = 0) -> bytes:
    """A small random image encoded as PNG or JPEG."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(buf, fmt)
    return buf.getvalue()


def png_header(width: int, height: int) -> bytes:
    """A PNG signature and a valid IHDR (8-bit RGB) declaring ``width`` x ``height``, with no data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
