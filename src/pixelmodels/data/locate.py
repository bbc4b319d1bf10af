"""Where a dataset's files are: the given root, the cache, system folders, or a download.

Order: with ``root`` given, that path only; otherwise the cache directory
(:func:`~pixelmodels.data.download.cache_dir`), then the folders a system
package installs (Debian's ``dataset-fashion-mnist`` puts gzipped IDX files in
``/usr/share/datasets/fashion-mnist``). If nothing is found and downloads are
allowed, the published files are downloaded into the root or the cache and
checked against their published MD5. Files found in place are not
checksummed (Debian recompresses its gzips); their readers validate the format.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import DatasetError
from . import cifar, colored_mnist, download


@dataclass(frozen=True)
class Remote:
    """A published file: saved as ``filename``, fetched from ``url``, checked against ``md5``."""

    filename: str
    url: str
    md5: str


IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _idx_remotes(base_url: str, md5s: tuple[str, str, str, str]) -> dict[str, tuple[Remote, ...]]:
    names = IDX_FILES["train"] + IDX_FILES["test"]
    remotes = [Remote(f"{n}.gz", f"{base_url}{n}.gz", m) for n, m in zip(names, md5s)]
    return {"train": tuple(remotes[:2]), "test": tuple(remotes[2:])}


# The URLs and MD5 sums torchvision lists for these datasets.
REMOTES: dict[str, dict[str, tuple[Remote, ...]]] = {
    "mnist": _idx_remotes(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
         "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c")),
    "fashion-mnist": _idx_remotes(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
         "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12e480ee83cd310")),
    "cifar10": dict.fromkeys(("train", "test"), (Remote(
        cifar.TARBALL, f"https://www.cs.toronto.edu/~kriz/{cifar.TARBALL}",
        "c58f30108f718f92721af3b95e74349a"),)),
    "colored-mnist": {"train": (), "test": ()},
}

FILE_SUFFIXES = (".pkl", ".gz", ".tar", ".tgz")  # a root with these names a file, not a folder

SYSTEM_DIRS: dict[str, tuple[Path, ...]] = {
    "mnist": (Path("/usr/share/datasets/mnist"),),
    "fashion-mnist": (Path("/usr/share/datasets/fashion-mnist"),),
}


def find_idx(path: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) IDX files of ``split`` in folder ``path``, gzipped or raw."""
    found = []
    for name in IDX_FILES[split]:
        candidates = [path / f"{name}.gz", path / name]
        found.append(next((p for p in candidates if p.is_file()), None))
    return tuple(found) if all(found) else None


FINDERS: dict[str, Callable[[Path, str], object]] = {
    "mnist": find_idx,
    "fashion-mnist": find_idx,
    "cifar10": cifar.find_cifar,
    "colored-mnist": colored_mnist.find_colored_mnist,
}


def needed_files(name: str, split: str) -> str:
    """The files ``split`` of ``name`` needs, in words."""
    if name in ("mnist", "fashion-mnist"):
        return " and ".join(f"{n}.gz" for n in IDX_FILES[split]) + " (gzipped or not)"
    if name == "cifar10":
        batches = ", ".join(cifar.BATCHES[split])
        return f"{cifar.TARBALL} (or its extracted {cifar.FOLDER}/ with {batches})"
    return f"{colored_mnist.FILENAME}, from {colored_mnist.SOURCE}"


def locate_files(name: str, split: str, root: Path | None, allow_download: bool):
    """Find (or download) the files of ``split`` of dataset ``name``.

    Returns:
        what the dataset's finder returns: a path, or a pair of IDX paths.
    """
    finder = FINDERS[name]
    dirs = [root] if root is not None else [download.cache_dir(name), *SYSTEM_DIRS.get(name, ())]
    for directory in dirs:
        found = finder(directory, split)
        if found:
            return found
    target = dirs[0]
    problems = []
    remotes = REMOTES[name][split]
    if not remotes:
        problems.append(f"{name} is not downloaded automatically (no published checksum)")
    elif not allow_download:
        problems.append("downloads are off (download=False)")
    elif download.downloads_disabled():
        problems.append("downloads are off (PIXELMODELS_NO_DOWNLOAD is set)")
    elif target.is_file() or target.suffix in FILE_SUFFIXES:
        problems.append(f"{target} names a file, not a folder to download into")
    else:
        for remote in remotes:
            dest = target / remote.filename
            if dest.is_file() or dest.with_suffix("").is_file():
                continue
            try:
                download.download(remote.url, remote.md5, dest)
            except (OSError, http.client.HTTPException) as exc:
                problems.append(f"downloading {remote.url} failed ({exc})")
                break
        found = finder(target, split)
        if found:
            return found
    hint = " (or install them with `apt-get install dataset-fashion-mnist`)" \
        if name == "fashion-mnist" else ""
    where = target.parent if target.suffix in FILE_SUFFIXES else target
    searched = ", ".join(str(d) for d in dirs)
    raise DatasetError(
        f"{name} {split} split not found: put {needed_files(name, split)} in {where}{hint}. "
        f"Searched: {searched}. " + "; ".join(problems)
    )
