"""The files of ``pixelmodels compress`` and ``decompress``, and the figures both print.

``compress`` writes one stream (``.pmc``, the format of ``pixelmodels.compression``). ``decompress``
writes the images it holds as PNG files in a folder (``000000.png``, ..., with ``labels.csv`` for a
class-conditional model; values of fewer than 8 bits spread over 0..255 as the sample grids are, which
the readers map back exactly) or as an ``.npz`` (``images`` uint8 (N, H, W, C), or ``codes`` int64
(N, H, W) for code maps, and ``labels``). Every output is written atomically: a file through
``checkpoint.atomic_write``, a folder built beside its destination and renamed into place, so a failed
run leaves nothing half written. Existing outputs are replaced only with ``overwrite``.
"""

from __future__ import annotations

import math
import shutil
import struct
import tempfile
import time
from pathlib import Path

import torch

from pixelmodels.app.outputs import channels_last_array, npz_bytes
from pixelmodels.checkpoint import atomic_write
from pixelmodels.compression import MAGIC, compress, decompress
from pixelmodels.errors import PixelModelsError
from pixelmodels.imageio import encode, to_uint8_range


def figures(model, images: torch.Tensor, labels, cond, n_bytes: int, seconds: float) -> str:
    """One line: the stream's bits per dimension (file bits / dimensions), the model's NLL on the same
    images in bits per dimension, the gap between the two, and images per second."""
    from pixelmodels.scoring import score

    n, dims = len(images), images.numel()
    nll = score(model, images, labels, cond=cond).bits_per_dim.double().mean().item() if n else math.nan
    bpd = 8 * n_bytes / dims if dims else math.nan
    return (f"{n} images: {bpd:.4f} bits/dim in the file ({n_bytes:,} bytes), model NLL {nll:.4f} bits/dim "
            f"({100 * (bpd / nll - 1):+.2f}%), {n / max(seconds, 1e-9):.1f} images/s")


def compress_to_file(model, images: torch.Tensor, labels, cond, out: str | Path, *, chunk_size: int = 256,
                     workers: int | None = None, overwrite: bool = False) -> str:
    """Compress ``images`` (with their ``labels`` and ``cond``, as the model takes them) into ``out``;
    returns what was done, with the figures of :func:`figures`."""
    out = Path(out)
    refuse_existing(out, overwrite)
    labels = labels if model.n_classes else None
    start = time.perf_counter()
    data = compress(model, images, labels, cond, chunk_size=chunk_size, workers=workers, progress=True)
    seconds = time.perf_counter() - start
    atomic_write(out, data)
    return f"compressed {figures(model, images, labels, cond, len(data), seconds)}; wrote {out}"


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


def decompress_to_file(model, path: str | Path, out: str | Path, cond=None, *, workers: int | None = None,
                       overwrite: bool = False) -> str:
    """Decode the stream in ``path`` with ``model`` into ``out``: an ``.npz``, or a folder of PNG files.
    ``cond``: the condition the stream was written with; a longer one (a whole dataset's) is cut to the
    stream's images. Returns what was done, with the figures of :func:`figures`."""
    out = Path(out)
    if model.n_codes and out.suffix != ".npz":
        raise PixelModelsError(f"-o: {out}: code maps are written as an .npz; give a path ending in .npz")
    refuse_existing(out, overwrite)
    data = read_stream(path)
    if cond is not None and cond.ndim == len(model.cond_shape) + 1:
        cond = cond[:stream_count(data)]
    start = time.perf_counter()
    decoded = decompress(model, data, cond, workers=workers, progress=True)
    seconds = time.perf_counter() - start
    images, labels = decoded if model.n_classes is not None else (decoded, None)
    write_images(out, images, labels, model)
    return f"decompressed {figures(model, images, labels, cond, len(data), seconds)}; wrote {out}"


def refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise PixelModelsError(f"-o: {out} exists; give --overwrite to replace it")


def write_images(out: Path, images: torch.Tensor, labels: torch.Tensor | None, model) -> None:
    """Decoded images into ``out``: an ``.npz``, or else a folder of PNG files (see the module docstring)."""
    if out.suffix == ".npz":
        arrays = {"codes": images[:, 0].numpy()} if model.n_codes else {"images": channels_last_array(images)}
        atomic_write(out, npz_bytes(**arrays, **({} if labels is None else {"labels": labels.numpy()})))
        return
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for k, array in enumerate(to_uint8_range(images, model.n_bits)):
            image = Image.fromarray(array[:, :, 0] if array.shape[2] == 1 else array)
            (tmp / f"{k:06d}.png").write_bytes(encode(image, f"{k:06d}.png"))
        if labels is not None:
            rows = "".join(f"{k:06d}.png,{int(v)}\n" for k, v in enumerate(labels))
            (tmp / "labels.csv").write_text("file,label\n" + rows)
        if out.exists():  # --overwrite: the old output leaves only once the new one is complete
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
            out.rename(old / out.name)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
