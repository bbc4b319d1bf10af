"""Reader of the IDX files of MNIST and Fashion-MNIST.

Format (http://yann.lecun.com/exdb/mnist/): a big-endian int32 magic number
(2051 for images, 2049 for labels: unsigned bytes, 3 or 1 dimensions), one
big-endian int32 per dimension, then the values as unsigned bytes in row-major
order. Files may be gzipped; gzip is recognized by its first two bytes, not by
the file name.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import DatasetError, one_line

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (N,)


def read_bytes(path: Path) -> bytes:
    """The contents of ``path``, gunzipped if it is a gzip file.

    Deflate expands at most 1032-fold, so more output than that is refused (a gzip bomb) before it is
    all in memory.
    """
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":
            limit = 1032 * len(data) + 1024
            out, size = [], 0
            with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
                while size <= limit and (chunk := f.read(1 << 22)):
                    out.append(chunk)
                    size += len(chunk)
            data = b"".join(out)
            if size > limit:
                raise DatasetError(f"{path}: corrupt gzip file: it expands to more than {limit} bytes, "
                                   "beyond what deflate can produce")
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: cannot read the file ({one_line(exc)})") from exc
    return data


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read one IDX file of unsigned bytes.

    Args:
        path: the file, raw or gzipped.
        magic: the expected magic number, :data:`IMAGES_MAGIC` or :data:`LABELS_MAGIC`.

    Returns:
        uint8 array of the shape the header gives (read-only view of the file).
    """
    data = read_bytes(path)
    ndim = magic & 0xFF
    header = 4 * (1 + ndim)
    found_magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found_magic != magic:
        raise DatasetError(
            f"{path}: not an IDX file of this kind: expected magic number {magic}, "
            f"found {found_magic if found_magic is not None else f'a {len(data)}-byte file'}"
        )
    if len(data) < header:
        raise DatasetError(
            f"{path}: truncated IDX file: expected a header of {header} bytes, "
            f"found {len(data)} bytes"
        )
    dims = np.frombuffer(data, ">i4", ndim, offset=4).tolist()
    expected = header + math.prod(dims)
    if min(dims) < 0 or len(data) != expected:
        state = "corrupt" if min(dims) < 0 else "truncated" if len(data) < expected else "too long"
        raise DatasetError(
            f"{path}: {state} IDX file: the header's dimensions {dims} need "
            f"{expected} bytes, found {len(data)} bytes"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(dims)


def read_mnist(images_path: Path, labels_path: Path):
    """Read a pair of MNIST-style image and label files (28x28 images, labels 0..9).

    Returns:
        images: uint8 array (N, 1, 28, 28); labels: int64 array (N,) in [0, 10).
    """
    n_classes, size = 10, 28
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[1:] != (size, size):
        raise DatasetError(
            f"{images_path}: expected {size}x{size} images, "
            f"found {images.shape[1]}x{images.shape[2]}"
        )
    if len(images) != len(labels):
        raise DatasetError(
            f"image and label counts differ: {images_path} holds {len(images)} images, "
            f"{labels_path} holds {len(labels)} labels"
        )
    if len(labels) and labels.max() >= n_classes:
        bad = int(np.argmax(labels >= n_classes))
        raise DatasetError(
            f"{labels_path}: expected labels 0..{n_classes - 1}, "
            f"found {labels[bad]} at index {bad}"
        )
    return images[:, None], labels.astype(np.int64)
