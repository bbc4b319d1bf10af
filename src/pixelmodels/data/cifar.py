"""Reader of CIFAR-10, "python version" (https://www.cs.toronto.edu/~kriz/cifar.html).

The data come as ``cifar-10-python.tar.gz`` holding ``cifar-10-batches-py/``
with five training batches ``data_batch_1`` .. ``data_batch_5`` and
``test_batch``. Each batch is a pickled dict: ``data`` is a uint8 array
(10000, 3072) whose rows are a 32x32 image as three colour planes (R, G, B)
each in row-major order, ``labels`` a list of ints in 0..9. Batches are read
from the tarball in memory (nothing is extracted) or from the extracted folder,
always through the restricted unpickler.
"""

from __future__ import annotations

import tarfile
import zlib
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import DatasetError, one_line
from .safe_pickle import load_pickle, plain_keys

TARBALL = "cifar-10-python.tar.gz"
FOLDER = "cifar-10-batches-py"
MAX_GZIP_RATIO = 1032  # deflate expands at most this much: bounds a member's real size
BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def find_cifar(path: Path, split: str) -> Path | None:
    """The tarball or extracted folder holding ``split`` at ``path``, or None.

    ``path`` may be the tarball itself, the extracted folder, or a directory
    holding either (the extracted folder is preferred).
    """
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return path
    for folder in (path / FOLDER, path):
        if all((folder / batch).is_file() for batch in BATCHES[split]):
            return folder
    return path / TARBALL if (path / TARBALL).is_file() else None


def read_cifar(path: Path, split: str):
    """Read a split from the tarball or extracted folder ``path``.

    Returns:
        images: uint8 array (N, 3, 32, 32); labels: int64 array (N,) in [0, 10).
    """
    if path.is_dir():
        try:
            raw = {batch: (path / batch).read_bytes() for batch in BATCHES[split]}
        except OSError as exc:
            raise DatasetError(f"cannot read a CIFAR-10 batch: {one_line(exc)}") from exc
        sources = {batch: str(path / batch) for batch in raw}
    else:
        raw = _read_members(path, BATCHES[split])
        sources = {batch: f"{path}:{FOLDER}/{batch}" for batch in raw}
    parts = [_parse_batch(raw[batch], sources[batch]) for batch in BATCHES[split]]
    images = np.concatenate([p[0] for p in parts]).reshape(-1, 3, 32, 32)
    return images, np.concatenate([p[1] for p in parts])


def _read_members(tarball: Path, names: list[str]) -> dict[str, bytes]:
    """The bytes of the members of ``tarball`` whose base names are ``names``.

    Headers are walked one by one, refusing a member that does not lie after the
    one before it (a negative size sends Python's tarfile of 3.11 round in a loop)
    or that declares more bytes than the archive can hold, so a corrupt header
    can neither hang the reader nor make it allocate what the file does not have.
    """
    try:
        size = tarball.stat().st_size
        with open(tarball, "rb") as f:
            compressed = f.read(2) == b"\x1f\x8b"
        limit = size * (MAX_GZIP_RATIO if compressed else 1)
        with tarfile.open(tarball, "r:gz" if compressed else "r:") as tar:
            members, end = {}, -1
            while (member := tar.next()) is not None:
                if member.offset <= end or member.size < 0 or member.size > limit:
                    raise DatasetError(
                        f"{tarball}: expected a tar.gz archive of CIFAR-10 batches, found a corrupt "
                        f"header for {member.name!r} (offset {member.offset}, size {member.size} bytes)"
                    )
                end = member.offset
                if member.isfile():
                    members[PurePosixPath(member.name).name] = member  # a later member replaces an earlier one
            missing = [n for n in names if n not in members]
            if missing:
                raise DatasetError(
                    f"{tarball}: expected the CIFAR-10 batches {', '.join(names)}, "
                    f"found no member named {', '.join(missing)}"
                )
            return {n: tar.extractfile(members[n]).read() for n in names}
    except (tarfile.TarError, OSError, EOFError, zlib.error, RecursionError) as exc:
        raise DatasetError(
            f"{tarball}: expected a tar.gz archive of CIFAR-10 batches, "
            f"cannot read it ({one_line(exc)})"
        ) from exc


def _parse_batch(data: bytes, source: str):
    """One batch pickle -> (uint8 (N, 3072), int64 (N,))."""
    batch = load_pickle(data, source)
    if not isinstance(batch, dict) or not {"data", "labels"} <= plain_keys(batch).keys():
        found = sorted(map(str, plain_keys(batch))) if isinstance(batch, dict) else type(batch).__name__
        raise DatasetError(
            f"{source}: expected a dict with keys 'data' and 'labels', found {found}"
        )
    batch = plain_keys(batch)
    images = batch["data"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 2 \
            or images.shape[1] != 3 * 32 * 32:
        found = f"{images.dtype} array {images.shape}" if isinstance(images, np.ndarray) \
            else type(images).__name__
        raise DatasetError(f"{source}: expected 'data' as a uint8 array (N, 3072), found {found}")
    try:
        labels = np.asarray(batch["labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise DatasetError(f"{source}: expected 'labels' as a list of ints 0..9 ({one_line(exc)})") from exc
    if len(labels) != len(images):
        raise DatasetError(
            f"{source}: expected one label per image, found {len(images)} images "
            f"and {len(labels)} labels"
        )
    bad = np.flatnonzero((labels < 0) | (labels > 9))
    if len(bad):
        raise DatasetError(
            f"{source}: expected labels 0..9, found {labels[bad[0]]} at index {bad[0]}"
        )
    return images, labels
