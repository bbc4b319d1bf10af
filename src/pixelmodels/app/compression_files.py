"""The files of ``pixelmodels compress`` and ``decompress``, and the figures both print.

``compress`` writes one stream (``-o OUT.pmc``, the format of ``pixelmodels.compression``, byte for byte
what ``pixelmodels.compress`` returns) and, when images came from files, their names beside it in
``OUT.pmc.names.json`` (:func:`names_path`: ``{"stream_sha256": ..., "names": [...]}``): each file's path
relative to the folder that holds them all, ending in ``.png``, and ``000000.png``, ... (its place in the
stream) for a dataset's example. ``decompress`` writes the images a stream holds as PNG files in a folder,
under those names when the stream has them beside it, else ``000000.png``, ..., with ``labels.csv`` for a
class-conditional model (values of fewer than 8 bits spread over 0..255 as the sample grids are, which
the readers map back exactly); or as an ``.npz`` (``images`` uint8 (N, H, W, C), or ``codes`` int64
(N, H, W) for code maps, ``labels``, and ``names``). Outputs go through the one writer
(:mod:`pixelmodels.app.outputs`): checked before any coding, existing ones replaced only with
``--overwrite``, a file written atomically, a folder built beside its destination and renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import time
from pathlib import Path

import numpy as np
import torch

from pixelmodels.app.outputs import (Target, channels_last_array, npz_bytes, plural, refuse_format, target, wrote,
                                     write_files, write_folder)
from pixelmodels.compression import MAGIC, compress, decompress
from pixelmodels.errors import PixelModelsError, one_line
from pixelmodels.imageio import GRID_FORMATS, encode, to_uint8_range


def figures(model, images: torch.Tensor, labels, cond, n_bytes: int, seconds: float) -> str:
    """One line: the stream's bits per dimension (file bits / dimensions), the model's NLL on the same
    images in bits per dimension, the gap between the two, and images per second."""
    from pixelmodels.scoring import score

    n, dims = len(images), images.numel()
    nll = score(model, images, labels, cond=cond).bits_per_dim.double().mean().item() if n else math.nan
    bpd = 8 * n_bytes / dims if dims else math.nan
    return (f"{plural(n, 'image')}: {bpd:.4f} bits/dim in the file ({n_bytes:,} bytes), model NLL {nll:.4f} "
            f"bits/dim ({100 * (bpd / nll - 1):+.2f}%), {n / max(seconds, 1e-9):.1f} images/s")


def names_path(stream: str | Path) -> Path:
    """Where the file names of the images in ``stream`` are kept: ``STREAM.names.json`` beside it."""
    stream = Path(stream)
    return stream.with_name(stream.name + ".names.json")


def file_names(sources: list[str], indices: list[int | None]) -> list[str] | None:
    """The names ``decompress`` gives images back under (see the module docstring), one per image of
    ``sources`` / ``indices`` (``Inputs``' fields); None when no image came from a file."""
    files = [os.path.abspath(s) for s, i in zip(sources, indices) if i is None]
    if not files:
        return None
    root = os.path.commonpath([os.path.dirname(f) for f in files])
    names, seen = [], set()
    for k, (source, index) in enumerate(zip(sources, indices)):
        name = f"{k:06d}.png" if index is not None else \
            Path(os.path.relpath(os.path.abspath(source), root)).with_suffix(".png").as_posix()
        stem, j = name[:-4], 1
        while name.lower() in seen:  # one name per image, on case-insensitive file systems too
            j += 1
            name = f"{stem}-{j}.png"
        seen.add(name.lower())
        names.append(name)
    return names


def compress_to_file(model, images: torch.Tensor, labels, cond, out: str | Path, names: list[str] | None = None, *,
                     chunk_size: int = 256, workers: int | None = None, overwrite: bool = False) -> str:
    """Compress ``images`` (with their ``labels`` and ``cond``, as the model takes them) into ``out`` (a
    ``.pmc``) and ``names`` (:func:`file_names`) beside it; returns what was done, with :func:`figures`."""
    out = Path(out)
    if out.suffix.lower() != ".pmc":
        refuse_format("-o", out, [".pmc"])
    t = target("-o", out, (out, names_path(out)), overwrite)  # a stale names file is replaced too
    labels = labels if model.n_classes else None
    start = time.perf_counter()
    data = compress(model, images, labels, cond, chunk_size=chunk_size, workers=workers, progress=True)
    seconds = time.perf_counter() - start
    files = {out: data}
    if names is not None:
        files[names_path(out)] = json.dumps({"stream_sha256": hashlib.sha256(data).hexdigest(), "names": names},
                                            indent=1).encode()
    write_files(files)
    if names is None:
        names_path(out).unlink(missing_ok=True)
    said = wrote(Target(t.flag, out, tuple(files), t.made))
    return f"compressed {figures(model, images, labels, cond, len(data), seconds)}; {said}"


def read_stream(path: str | Path) -> bytes:
    """The bytes of a stream file, refused with one line when missing or not a stream."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise PixelModelsError(f"{path}: no such file; expected a stream written by pixelmodels compress") from None
    except OSError as e:
        raise PixelModelsError(f"{path}: could not read it ({e.strerror or e})") from None
    if not data.startswith(MAGIC):
        raise PixelModelsError(f"{path}: not a pixelmodels compressed stream (it starts with {data[:4]!r}, "
                               f"expected {MAGIC!r})")
    return data


def stream_count(data: bytes) -> int:
    """The number of images a stream's header announces (checked in full by ``decompress``)."""
    where = struct.calcsize("<4sH32s")  # magic, version, fingerprint: then the count (see compression._HEAD)
    return struct.unpack_from("<I", data, where)[0] if len(data) >= where + 4 else 0


def read_names(stream: str | Path, data: bytes) -> list[str] | None:
    """The file names kept beside ``stream`` (whose bytes are ``data``) by ``compress``; None without them.

    Raises:
        PixelModelsError: the names file is unreadable, belongs to another stream, or does not hold one
            distinct relative ``.png`` name per image.
    """
    path, n = names_path(stream), stream_count(data)
    if not path.is_file():
        return None
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise PixelModelsError(f"{path}: expected the file names of {stream} (JSON), could not read it "
                               f"({one_line(e, 120)})") from None
    if not isinstance(kept, dict) or kept.get("stream_sha256") != hashlib.sha256(data).hexdigest():
        raise PixelModelsError(f"{path}: holds the names of another stream than {stream} (its sha256 differs); "
                               "remove it to decode to 000000.png, ...")
    names = kept.get("names")
    if not isinstance(names, list) or len(names) != n or not all(map(good_name, names)) \
            or len({name.lower() for name in names}) != n:
        raise PixelModelsError(f"{path}: expected {n} distinct relative file names ending in .png, found "
                               f"{one_line(repr(names), 120)}")
    return names


def good_name(name) -> bool:
    """A relative path in the output folder ending in ``.png``: ``a.png``, ``sub/b.png`` (no ``..``, ``.``,
    empty part or absolute path)."""
    return isinstance(name, str) and name.endswith(".png") and "\\" not in name \
        and all(part not in ("", ".", "..") for part in name.split("/"))


def decompress_to_file(model, path: str | Path, out: str | Path, cond=None, *, workers: int | None = None,
                       overwrite: bool = False) -> str:
    """Decode the stream in ``path`` with ``model`` into ``out``: an ``.npz``, or a folder of PNG files.
    ``cond``: the condition the stream was written with; a longer one (a whole dataset's) is cut to the
    stream's images. Returns what was done, with the figures of :func:`figures`."""
    out = Path(out)
    ext = out.suffix.lower()
    if model.n_codes and ext != ".npz":
        raise PixelModelsError(f"-o: {out}: code maps are written as an .npz; give a path ending in .npz")
    if ext in (*GRID_FORMATS, ".npy", ".pmc", ".csv", ".json"):
        raise PixelModelsError(f"-o: {out}: cannot write a {out.suffix} file; expected a folder (for PNG files) "
                               "or a path ending in .npz")
    t = target("-o", out, overwrite=overwrite, folder=ext != ".npz")
    data = read_stream(path)
    names = read_names(path, data)
    if cond is not None and cond.ndim == len(model.cond_shape) + 1:
        cond = cond[:stream_count(data)]
    start = time.perf_counter()
    decoded = decompress(model, data, cond, workers=workers, progress=True)
    seconds = time.perf_counter() - start
    images, labels = decoded if model.n_classes is not None else (decoded, None)
    said = write_images(t, images, labels, model, names)
    return f"decompressed {figures(model, images, labels, cond, len(data), seconds)}; {said}"


def write_images(t: Target, images: torch.Tensor, labels: torch.Tensor | None, model, names=None) -> str:
    """Decoded images where ``t`` says: an ``.npz``, or else a folder of PNG files named ``names`` (default
    ``000000.png``, ...; see the module docstring). Returns what was written."""
    out, n = t.path, len(images)
    if out.suffix.lower() == ".npz":
        arrays = {"codes": images[:, 0].numpy()} if model.n_codes else {"images": channels_last_array(images)}
        arrays |= ({} if labels is None else {"labels": labels.numpy()}) | ({} if names is None else
                                                                             {"names": np.array(names)})
        write_files({out: npz_bytes(**arrays)})
        return wrote(t, f"{plural(n, 'code map' if model.n_codes else 'image')}"
                        + (", with their labels" if labels is not None else "")
                        + (", with their file names" if names is not None else ""))
    from PIL import Image

    names = names or [f"{k:06d}.png" for k in range(n)]
    files = {name: encode(Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array), name)
             for name, array in zip(names, to_uint8_range(images, model.n_bits))}
    if labels is not None:
        rows = "".join(f"{name},{int(v)}\n" for name, v in zip(names, labels))
        files["labels.csv"] = ("file,label\n" + rows).encode()
    write_folder(out, files)
    return wrote(t, f"{plural(n, 'PNG file')}" + (" and labels.csv" if labels is not None else ""))
