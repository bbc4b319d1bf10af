"""One way out: every file a command writes (generate, complete, score, heat maps, compress, decompress
and train's run directory) is checked here before the command's work and written here after it.

The rules, the same for every command:

* Before any work (sampling, scoring, coding, training), :func:`target` refuses an output that cannot be
  written, with one line naming the flag: a folder where a file goes or a file where a folder goes, a
  folder the process cannot write in (found by creating and removing a probe file there), or an existing
  file without ``--overwrite`` (every file the command would replace counts: a grid's ``.png`` and the
  ``.npz`` beside it). Missing folders are made when the files are written, and the report says so.
* The format comes from the extension; one the command cannot write is refused (:func:`refuse_format`).
* Every file is written atomically (``checkpoint.atomic_write``): a failed write leaves the previous file,
  if any, and no temporary file.
* The command prints one line saying what it wrote (:func:`wrote`).

Samples and completions: a grid to look at (small images enlarged, see ``imageio.display_scale``; a
format Pillow writes losslessly, ``imageio.GRID_FORMATS``) with the exact arrays in an ``.npz`` beside
it, or the arrays alone (``.npz``; ``.npy`` for code maps). A model of code maps has a grid only when a
VQ-VAE beside it decodes the codes to images.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch

from pixelmodels.checkpoint import CONFIG, atomic_write
from pixelmodels.errors import PixelModelsError
from pixelmodels.imageio import GRID_FORMATS, encode, grid_image

NO_VQVAE = ": the model samples code maps and no VQ-VAE beside it decodes them to images"


def plural(n: int, noun: str) -> str:
    """``1 image``, ``2 images``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def listed(items, last: str = "and") -> str:
    """``a``, ``a and b``, ``a, b and c`` (``last``: the word before the last item)."""
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def refuse_format(flag: str, path: Path, allowed, why: str = "") -> NoReturn:
    """Refuse ``path`` (given to ``flag``), whose extension the command cannot write, naming the ones it can."""
    found = f"a {path.suffix} file" if path.suffix else "a path without an extension"
    raise PixelModelsError(f"{flag}: {path}: cannot write {found}{why}; expected a path ending in "
                           f"{listed(allowed, 'or')}")


@dataclass(frozen=True)
class Target:
    """Where a command writes, checked before its work by :func:`target`.

    Attributes:
        flag: the flag that named it (``--out``, ``-o``, ``--heatmap``).
        path: the path as given.
        files: every file (or, for a folder output, the folder) the command writes.
        made: the missing folders writing makes.
    """

    flag: str
    path: Path
    files: tuple[Path, ...]
    made: tuple[Path, ...] = ()


def target(flag: str, path: str | Path, files=None, overwrite: bool = False, folder: bool = False) -> Target:
    """Check, before any work, that ``files`` (default: ``path`` alone) can be written: each a file (a folder
    with ``folder``), not there already unless ``overwrite``, in a folder the process can write in or make.

    Raises:
        PixelModelsError: one line naming ``flag``, the path and what is wrong.
    """
    path = Path(path)
    files = tuple(Path(f) for f in ((path,) if files is None else files))
    for f in files:
        if f.exists() and f.is_dir() != folder:
            raise PixelModelsError(f"{flag}: {f} is a {'file' if folder else 'folder'}; expected "
                                   f"{'a folder' if folder else 'a file path'}")
    taken = [f for f in files if f.exists()]
    if taken and not overwrite:
        shown = listed(taken) if len(taken) <= 3 else f"{taken[0]} and {len(taken) - 1} more files"
        raise PixelModelsError(f"{flag}: {shown} {'exists' if len(taken) == 1 else 'exist'}; give --overwrite to "
                               f"replace {'it' if len(taken) == 1 else 'them'}")
    made = tuple(folder for folder in dict.fromkeys(f.parent for f in files) if check_folder(flag, folder, path))
    return Target(flag, path, files, made)


def check_folder(flag: str, folder: Path, named: Path | None = None) -> bool:
    """Refuse a ``folder`` that the process could not write a file in (or make), in one line naming ``flag``
    and ``named`` (default: the folder), the path as given; True when the folder is missing."""
    there = folder
    while not there.exists() and there != there.parent:
        there = there.parent
    if not there.is_dir():
        raise PixelModelsError(f"{flag}: {named or folder}: cannot make the folder {folder}: {there} is a file")
    probe = there / f".pixelmodels-probe-{secrets.token_hex(6)}"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as e:
        raise PixelModelsError(f"{flag}: {named or folder}: cannot write in {there} ({e.strerror or e})") from None
    return there != folder


def write_files(files: dict[Path, bytes]) -> None:
    """Write ``files`` (path -> bytes, all made before the first is written) atomically, making missing folders."""
    for path, data in files.items():
        atomic_write(path, data)


def write_folder(folder: Path, files: dict[str, bytes]) -> None:
    """Write a folder of ``files`` (name inside it -> bytes, all made before the first is written) whole or not
    at all: into a temporary folder beside it, then renamed; an existing folder (``--overwrite``) leaves only
    once the new one is complete, and a failure leaves it as it was and no temporary folder."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for name, data in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
            folder.rename(old / folder.name)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def wrote(t: Target, what: str = "") -> str:
    """The line a command prints: the files of ``t``, ``what`` they hold, and the folders it made."""
    return f"wrote {listed(t.files)}" + (f" ({what})" if what else "") + made_note(t.made)


def made_note(made) -> str:
    """``; made the folder x`` for the folders a write made; empty when none."""
    return f"; made the folder{'s' * (len(made) > 1)} {listed(made)}" if made else ""


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def channels_last_array(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W, C) on the CPU, as the ``.npz`` files hold images."""
    return images.cpu().numpy().transpose(0, 2, 3, 1)


def samples_target(path: str | Path, model, vqvae=None, overwrite: bool = False) -> Target:
    """Where ``generate`` writes samples of ``model``, by ``path``'s extension, checked (:func:`target`).

    Images: a grid (``GRID_FORMATS``) and the ``.npz`` beside it, or the ``.npz`` alone. Code maps: the
    ``.npy`` (N, H, W) or the ``.npz`` alone; with the ``vqvae`` that decodes them, a grid path or the
    ``.npy`` writes the codes (``.npy``), the grid of the decoded images and the ``.npz`` of all arrays.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if not model.n_codes:
        if ext not in (*GRID_FORMATS, ".npz"):
            refuse_format("--out", path, [*GRID_FORMATS, ".npz"])
        files = (path,) if ext == ".npz" else (path, path.with_suffix(".npz"))
    else:
        allowed = [".npy", ".npz", *(GRID_FORMATS if vqvae is not None else ())]
        if ext not in allowed:
            refuse_format("--out", path, allowed, NO_VQVAE if ext in GRID_FORMATS else "")
        grid = path if ext in GRID_FORMATS else path.with_suffix(".png")
        files = (path,) if ext == ".npz" or vqvae is None else (path.with_suffix(".npy"), grid,
                                                                  path.with_suffix(".npz"))
    return target("--out", path, files, overwrite)


def write_samples(t: Target, images: torch.Tensor, model, nrow: int | None = None,
                  labels: torch.Tensor | None = None, vqvae=None) -> str:
    """Write samples (N, C, H, W) of ``model`` where :func:`samples_target` planned them, ``nrow`` per row of
    the grid; the ``.npz`` holds ``images`` uint8 (N, H, W, C) (decoded by ``vqvae`` for code maps),
    ``codes`` int64 (N, H, W) for code maps, and ``labels`` (N,) when given. Returns what was written."""
    n, (h, w) = len(images), tuple(images.shape[2:])
    codes = images[:, 0].cpu().numpy() if model.n_codes else None
    shown = images if not model.n_codes else None if vqvae is None else vqvae.decode_images(images).cpu()
    n_bits = model.n_bits or 8
    arrays = ({} if shown is None else {"images": channels_last_array(shown)}) \
        | ({} if codes is None else {"codes": codes}) | ({} if labels is None else {"labels": labels.cpu().numpy()})
    files = {}
    for f in t.files:
        ext = f.suffix.lower()
        files[f] = npy_bytes(codes) if ext == ".npy" else npz_bytes(**arrays) if ext == ".npz" \
            else encode(grid_image(shown, n_bits, nrow), f)
    write_files(files)
    what = f"{plural(n, 'image')} {h}x{w}, values 0..{2**n_bits - 1}" if not model.n_codes else \
        f"{plural(n, 'code map')} {h}x{w}, values 0..{model.n_codes - 1}" + (
            "" if shown is None else f"; decoded by the VQ-VAE into {plural(n, 'image')} "
                                     f"{shown.shape[2]}x{shown.shape[3]}")
    return wrote(t, what)


def completions_target(path: str | Path, model, vqvae=None, overwrite: bool = False) -> Target:
    """Where ``complete`` writes, by ``path``'s extension, checked (:func:`target`): a grid (``GRID_FORMATS``;
    for code maps only with the ``vqvae`` that decodes them) and the ``.npz`` beside it, or the ``.npz`` alone."""
    path = Path(path)
    ext = path.suffix.lower()
    allowed = [*(GRID_FORMATS if not model.n_codes or vqvae is not None else ()), ".npz"]
    if ext not in allowed:
        refuse_format("--out", path, allowed, NO_VQVAE if ext in GRID_FORMATS else "")
    return target("--out", path, (path,) if ext == ".npz" else (path, path.with_suffix(".npz")), overwrite)


def write_completions(t: Target, originals: torch.Tensor, known: torch.Tensor, completions: torch.Tensor,
                      model, vqvae=None) -> str:
    """Write completions of ``originals`` (N, C, H, W) that kept the pixels where ``known`` (H, W) is True,
    where :func:`completions_target` planned them.

    The ``.npz``: ``originals`` and ``completions`` (N, H, W, C) (code maps: (N, H, W)) and ``known``. The
    grid: a row of the originals, one of the inputs with unknown pixels grey, one of the completions (code
    maps: the originals and the completions, decoded by ``vqvae``). Returns what was written.
    """
    known, originals, completions = known.cpu(), originals.cpu(), completions.cpu()
    n, (h, w) = len(originals), tuple(originals.shape[2:])
    if model.n_codes:
        arrays = dict(originals=originals[:, 0].numpy(), known=known.numpy(), completions=completions[:, 0].numpy())
        gridded = vqvae is not None and len(t.files) > 1
        rows = torch.cat([vqvae.decode_images(originals), vqvae.decode_images(completions)]).cpu() if gridded else None
        shown, n_bits = "rows: originals, completions, decoded by the VQ-VAE", 8
    else:
        arrays = dict(originals=channels_last_array(originals), known=known.numpy(),
                      completions=channels_last_array(completions))
        occluded = originals.clone()
        occluded[:, :, ~known] = (2**model.n_bits - 1) // 2  # unknown pixels shown grey
        rows, shown, n_bits = torch.cat([originals, occluded, completions]), \
            "rows: originals, occluded inputs, completions", model.n_bits
    files = {f: npz_bytes(**arrays) if f.suffix.lower() == ".npz" else encode(grid_image(rows, n_bits, n), f)
             for f in t.files}
    write_files(files)
    kind = "completion" if not model.n_codes else "completed code map"
    return wrote(t, f"{plural(n, kind)} {h}x{w}" + (f"; {shown}" if len(t.files) > 1 else ""))


def check_run_dir(out: str | Path, resume: bool, overwrite: bool) -> bool:
    """Check ``train``'s run directory ``out`` before any work: a folder (or none yet) the process can write
    in; a new run (not ``resume``) refuses one that holds a run unless ``overwrite``. Returns whether
    ``out`` holds a run that the new one replaces."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise PixelModelsError(f"--out: {out} is a file; expected a folder for the run")
    holds_run = not resume and (out / CONFIG).exists()
    if holds_run and not overwrite:
        raise PixelModelsError(f"--out: {out} already holds a run; use --resume {out} to continue it "
                               "or --overwrite to replace it")
    check_folder("--resume" if resume else "--out", out)
    return holds_run
