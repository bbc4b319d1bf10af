"""Reader of the ``arrays`` dataset: integer images or code maps in ``.npz`` / ``.npy`` files, memory-mapped.

Files per split, in the folder ``root``: either ``{split}.npz`` with the arrays ``x``, optional
``y`` and ``cond`` and optional integer scalars ``n_codes`` / ``n_classes`` / ``cond_codes``, or ``{split}_x.npy``
with optional ``{split}_y.npy`` and ``{split}_cond.npy``.

- ``x``: integers (N, H, W) or (N, C, H, W). Code maps (``n_codes`` given) have C = 1 and values
  in [0, n_codes); images have C = 1 or 3 and values in [0, 2**n_bits) and are held as uint8.
- ``y``: integer labels (N,), values >= 0.
- ``cond``: a float or integer condition per example, (N, D) or (N, D, h, w), held as float32; or,
  with ``cond_codes`` K (``--cond-codes``), a map of K discrete codes per example, integers (N, h, w)
  with values in [0, K), memory-mapped and range-checked like code maps.

Memory mapping: ``.npy`` files and the members of an ``.npz`` stored without compression
(``np.savez``) are mapped copy-on-write (``mode="c"``, as ``np.load(path, mmap_mode="c")``), so
arrays larger than memory can be used: pages are read when an example is. A compressed member
(``np.savez_compressed``) cannot be mapped and is decompressed into memory. Arrays are copied
into memory too when their layout must change: a non-native byte order, Fortran order, image
values that are not uint8, a condition that is not float32, unsigned codes too large for the
signed type of their width. A mapped member's zip CRC is not checked (that would read the whole
file); its values are range-checked like all others. Values are checked in chunks, so a mapped file is never read whole
at once. Headers are checked against the bytes the file holds before anything is allocated, and
object (pickled) arrays are refused.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib import format as npy_format

from ..errors import DatasetError, one_line

CHUNK = 1 << 22  # elements checked at a time
HEADER_BYTES = 12 + 10_000 + 64  # magic, version, length field and numpy's largest header
MAX_DEFLATE_RATIO = 1032
MAX_LABEL = 2**31 - 1  # labels beyond are a mistake, not classes
_BAD_DATA = (ValueError, SyntaxError, TypeError, OverflowError, MemoryError, RecursionError, EOFError,
             KeyError, IndexError, struct.error)
_BAD_ZIP = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, NotImplementedError, RuntimeError, OSError,
            *_BAD_DATA)


@dataclass
class Arrays:
    """One split, checked: what :class:`~pixelmodels.data.ImageDataset` holds."""

    images: torch.Tensor  # (N, C, H, W): uint8 images, or integer code maps (C = 1)
    labels: torch.Tensor  # int64 (N,), -1 without y
    n_bits: int | None
    n_codes: int | None
    n_classes: int | None
    cond: torch.Tensor | None  # float32 (N, D) or (N, D, h, w), or integer code maps (N, h, w)
    cond_codes: int | None = None  # K of a condition that is a map of codes


def split_files(root: Path, split: str) -> dict[str, Path]:
    """{'x', 'y', 'cond': path} for ``split``'s .npy files or {'npz': path}; errors name the files looked for."""
    npz, npy = root / f"{split}.npz", root / f"{split}_x.npy"
    if npz.is_file() and npy.is_file():
        raise DatasetError(f"{root}: expected one form of the {split} split, found both {npz} and {npy}; "
                           "remove one")
    if npz.is_file():
        return {"npz": npz}
    if npy.is_file():
        return {key: path for key in ("x", "y", "cond")
                if (path := root / f"{split}_{key}.npy").is_file()}
    raise DatasetError(f"{root}: expected the {split} split as {npz} or {npy} (with optional "
                       f"{split}_y.npy, {split}_cond.npy), found neither")


# --- .npy headers and arrays -------------------------------------------------------------


def _header(head: bytes, where: str):
    """(dtype, shape, fortran_order, header length) of the .npy bytes starting with ``head``."""
    f = io.BytesIO(head)
    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npy_format.read_array_header_2_0(f)
        else:
            raise DatasetError(f"{where}: expected .npy format version 1.0 or 2.0, found {version}")
    except DatasetError:
        raise
    except Exception as exc:  # numpy parses the header with tokenize and ast: any of their errors
        raise DatasetError(f"{where}: corrupt .npy header ({one_line(exc, 200)})") from exc
    if dtype.hasobject:
        raise DatasetError(f"{where}: refusing an array of Python objects (dtype {dtype}): reading it would "
                           "unpickle code; expected plain numbers")
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise DatasetError(f"{where}: expected an array of numbers, found dtype {dtype}")
    if any(d < 0 for d in shape):
        raise DatasetError(f"{where}: corrupt .npy header: negative dimension in shape {shape}")
    return dtype, tuple(shape), fortran, f.tell()


def _check_size(where: str, dtype, shape, available: int) -> int:
    need = math.prod(shape) * dtype.itemsize
    if need != available:
        state = "truncated" if need > available else "corrupt"
        raise DatasetError(f"{where}: {state} array: its header declares {dtype} {shape}, which needs {need} "
                           f"bytes of data, found {available}")
    return need


def _map(path: Path, where: str, start: int, length: int, mmap: bool) -> np.ndarray:
    """The array of the .npy bytes at ``start`` .. ``start + length`` of ``path``."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            head = f.read(min(length, HEADER_BYTES))
        dtype, shape, fortran, offset = _header(head, where)
        _check_size(where, dtype, shape, length - offset)
        order = "F" if fortran else "C"
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype, order=order)
        if not mmap:
            with open(path, "rb") as f:
                f.seek(start + offset)
                data = bytearray(length - offset)
                if f.readinto(data) != len(data):
                    raise DatasetError(f"{where}: truncated array: the file ended early")
            return np.frombuffer(data, dtype).reshape(shape, order=order)
        return np.memmap(path, dtype, mode="c", offset=start + offset, shape=shape, order=order)
    except _BAD_DATA + (OSError,) as exc:
        raise DatasetError(f"{where}: cannot read the array ({one_line(exc, 200)})") from exc


def read_npy(path: Path, mmap: bool = True) -> np.ndarray:
    """A .npy file, memory-mapped copy-on-write (``mmap``) or read into memory."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the file ({one_line(exc)})") from exc
    return _map(path, str(path), 0, size, mmap)


def _member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, mmap: bool,
            where: str) -> np.ndarray:
    """One .npy member of an .npz: mapped at its offset when stored, decompressed into memory when not."""
    if info.compress_type == zipfile.ZIP_STORED:
        with open(path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise DatasetError(f"{where}: corrupt zip file: no local header at offset {info.header_offset}")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            if f.read(name_len) != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
                raise DatasetError(f"{where}: corrupt zip file: the local header names another member")
        start = info.header_offset + 30 + name_len + extra_len
        if info.compress_size != info.file_size or start + info.file_size > size:
            raise DatasetError(f"{where}: corrupt or truncated zip file: the member declares {info.file_size} "
                               f"bytes from offset {start}, the file holds {size} bytes")
        return _map(path, where, start, info.file_size, mmap)
    if info.compress_size > size or info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 1024:
        raise DatasetError(f"{where}: corrupt zip file: the member declares {info.file_size} bytes from "
                           f"{info.compress_size} compressed bytes in a {size}-byte file")
    data, pos = bytearray(info.file_size), 0
    with zf.open(info) as f:
        view = memoryview(data)
        while pos < len(data) and (chunk := f.read(min(1 << 24, len(data) - pos))):
            view[pos:pos + len(chunk)] = chunk
            pos += len(chunk)
        view.release()
        if pos != len(data) or f.read(1):
            raise DatasetError(f"{where}: corrupt zip file: the member does not hold {info.file_size} bytes")
    dtype, shape, fortran, offset = _header(bytes(data[:HEADER_BYTES]), where)
    _check_size(where, dtype, shape, len(data) - offset)
    return np.frombuffer(data, dtype, offset=offset, count=math.prod(shape)).reshape(
        shape, order="F" if fortran else "C")


def read_npz(path: Path, mmap_keys=("x", "cond")) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """({key: array}, {key: where}) of an .npz: keys are member names without '.npy'; ``mmap_keys`` mapped."""
    try:
        size = path.stat().st_size
        with zipfile.ZipFile(path) as zf:
            infos = {}
            for info in zf.infolist():
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                if key in infos:
                    raise DatasetError(f"{path}: corrupt .npz file: two members named {info.filename!r}")
                infos[key] = info
            arrays = {key: _member(path, zf, info, size, key in mmap_keys, f"{path}: {key!r}")
                      for key, info in infos.items()
                      if key in ("x", "y", "cond", "n_codes", "n_classes", "cond_codes")}
    except _BAD_ZIP as exc:
        raise DatasetError(f"{path}: expected an .npz (zip) file of .npy arrays, found unreadable data "
                           f"({one_line(exc, 200)})") from exc
    if "x" not in arrays:
        found = ", ".join(repr(k) for k in sorted(infos)) or "none"
        raise DatasetError(one_line(f"{path}: expected an array 'x' (N, H, W) or (N, C, H, W), found keys: {found}"))
    return arrays, {key: f"{path}: {key!r}" for key in infos}


# --- checks ----------------------------------------------------------------------------------


def _chunks(array: np.ndarray):
    """(start index along axis 0, chunk) pieces of about CHUNK elements."""
    step = max(1, CHUNK // max(1, math.prod(array.shape[1:])))
    for start in range(0, len(array), step):
        yield start, np.asarray(array[start:start + step])


def _first(start: int, chunk: np.ndarray, bad: np.ndarray):
    """(the first value of ``chunk`` where ``bad``, its index in the whole array)."""
    local = np.unravel_index(int(np.argmax(bad.ravel())), chunk.shape)
    return chunk[local].item(), (start + int(local[0]), *map(int, local[1:]))


def check_range(array: np.ndarray, high: int, where: str, what: str, hint=lambda value: "") -> None:
    """Refuse values outside [0, high), naming the first one and its index; reads ``array`` in chunks.

    ``hint(value)``: text added to the message about the bad value.
    """
    for start, chunk in _chunks(array):
        if chunk.size and (chunk.min() < 0 or chunk.max() >= high):
            value, index = _first(start, chunk, (chunk < 0) | (chunk >= high))
            index = index[0] if array.ndim == 1 else index
            raise DatasetError(f"{where}: expected {what} 0..{high - 1}, found {value} at index {index}"
                               f"{hint(value)}")


def check_finite(array: np.ndarray, where: str) -> None:
    """Refuse NaN and infinities, naming the first one and its index; reads ``array`` in chunks."""
    if array.dtype.kind != "f":
        return
    for start, chunk in _chunks(array):
        finite = np.isfinite(chunk)
        if not finite.all():
            value, index = _first(start, chunk, ~finite)
            raise DatasetError(f"{where}: expected finite values, found {value} at index {index}")


def _native(array: np.ndarray) -> np.ndarray:
    """``array`` in native byte order and C order (a copy only where it is not)."""
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


def signed_codes(array: np.ndarray, n_codes: int) -> np.ndarray:
    """Unsigned codes (uint16/32/64: most torch ops refuse them) as a signed type: a view where they fit."""
    if array.dtype.kind != "u" or array.dtype.itemsize == 1:
        return array
    signed = np.dtype(f"i{array.dtype.itemsize}")
    if n_codes <= np.iinfo(signed).max + 1:
        return array.view(signed)
    return array.astype(f"i{min(8, 2 * array.dtype.itemsize)}")  # a copy, of the next width


def _scalar(arrays: dict, wheres: dict, key: str, low: int) -> int | None:
    if key not in arrays:
        return None
    value = arrays[key]
    if value.shape not in ((), (1,)) or value.dtype.kind not in "iu" or int(value.reshape(())) < low:
        shown = value.reshape(()).item() if value.size == 1 else f"shape {value.shape}"
        raise DatasetError(f"{wheres[key]}: expected an integer >= {low}, found {value.dtype} {shown}")
    return int(value.reshape(()))


def _declared(arrays: dict, wheres: dict, key: str, given: int | None) -> int | None:
    """The number of codes under ``key`` that an .npz declares, or the caller's; both: they must agree."""
    declared = _scalar(arrays, wheres, key, 2)
    if declared is not None and given is not None and declared != given:
        raise DatasetError(f"{wheres[key]}: the file declares {declared} codes; --{key.replace('_', '-')} {given} "
                           "differs")
    return declared if given is None else given


def read_arrays(root: Path, split: str, n_bits: int | None, n_codes: int | None,
                cond_codes: int | None = None) -> Arrays:
    """Read and check one split (see the module docstring); ``n_bits`` only for images, default 8."""
    files = split_files(root, split)
    if "npz" in files:
        arrays, wheres = read_npz(files["npz"])
        n_codes = _declared(arrays, wheres, "n_codes", n_codes)
        cond_codes = _declared(arrays, wheres, "cond_codes", cond_codes)
        file_classes = _scalar(arrays, wheres, "n_classes", 1)
    else:
        arrays = {key: read_npy(path, mmap=key != "y") for key, path in files.items()}
        wheres = {key: str(path) for key, path in files.items()}
        file_classes = None
    if n_codes is not None and n_bits is not None:
        raise DatasetError(f"{wheres['x']}: code maps (--n-codes {n_codes}) have no --n-bits; found n_bits={n_bits}")
    x, where = arrays["x"], wheres["x"]
    if x.dtype.kind not in "iu":
        raise DatasetError(f"{where}: expected integer {'codes' if n_codes else 'images'}, found {x.dtype}"
                           + (" (bool)" if x.dtype.kind == "b" else ""))
    shape = "(N, H, W) or (N, 1, H, W)" if n_codes else "(N, H, W) or (N, C, H, W) with C = 1 or 3"
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[1] not in ((1,) if n_codes else (1, 3))):
        raise DatasetError(f"{where}: expected {shape}, found shape {x.shape}")
    if len(x) == 0 or 0 in x.shape:
        raise DatasetError(f"{where}: expected at least one example of at least one pixel, found shape {x.shape}")
    x = x[:, None] if x.ndim == 3 else x
    if n_codes is not None:
        check_range(x, n_codes, where, "codes", lambda value: f" (--n-codes {n_codes})")
        images = torch.from_numpy(signed_codes(_native(x), n_codes))
    else:
        n_bits = 8 if n_bits is None else n_bits
        check_range(x, 2**n_bits, where, f"values of {n_bits}-bit images",
                    lambda value: "; for code maps give --n-codes K" if value >= 256 else "")
        images = torch.from_numpy(np.ascontiguousarray(x) if x.dtype == np.uint8 else x.astype(np.uint8))
    n = len(x)
    labels, n_classes = torch.full((n,), -1, dtype=torch.int64), None
    if "y" in arrays:
        y, where = np.asarray(arrays["y"]), wheres["y"]
        if y.dtype.kind not in "iu" or y.shape != (n,):
            raise DatasetError(f"{where}: expected integer labels ({n},), one per example of x, found "
                               f"{y.dtype} {y.shape}")
        if file_classes is None and ((y < 0) | (y > MAX_LABEL)).any():
            value, index = _first(0, y, (y < 0) | (y > MAX_LABEL))
            raise DatasetError(f"{where}: expected labels 0..{MAX_LABEL}, found {value} at index {index[0]}")
        n_classes = file_classes if file_classes is not None else int(y.max()) + 1
        check_range(y, n_classes, where, "labels", lambda value: f" (n_classes {n_classes})")
        labels = torch.from_numpy(y.astype(np.int64))
    elif file_classes is not None:
        n_classes = file_classes
    cond = None
    if cond_codes is not None and "cond" not in arrays:
        raise DatasetError(f"{wheres['x']}: --cond-codes {cond_codes} describes a condition, found no 'cond' beside "
                           "the images")
    if cond_codes is not None:
        c, where = arrays["cond"], wheres["cond"]
        if c.dtype.kind not in "iu" or c.ndim != 3 or len(c) != n or 0 in c.shape:
            raise DatasetError(f"{where}: expected integer code maps ({n}, h, w), one per example of x (--cond-codes "
                               f"{cond_codes}), found {c.dtype} {c.shape}")
        check_range(c, cond_codes, where, "codes", lambda value: f" (--cond-codes {cond_codes})")
        cond = torch.from_numpy(signed_codes(_native(c), cond_codes))
    elif "cond" in arrays:
        c, where = arrays["cond"], wheres["cond"]
        if c.dtype.kind in "iu" and c.ndim == 3:
            raise DatasetError(f"{where}: integer maps ({', '.join(map(str, c.shape))}) as a condition are codes: "
                               "give --cond-codes K (or cond_codes in the .npz); a float condition is (N, D) "
                               "or (N, D, h, w)")
        if c.dtype.kind not in "iuf":
            raise DatasetError(f"{where}: expected a float or integer condition, found {c.dtype}")
        if c.ndim not in (2, 4) or len(c) != n or 0 in c.shape:
            raise DatasetError(f"{where}: expected a condition ({n}, D) or ({n}, D, h, w), one per example of x, "
                               f"found shape {c.shape}")
        check_finite(c, where)
        if c.dtype == np.float32 and c.dtype.isnative:
            cond = torch.from_numpy(np.ascontiguousarray(c))
        else:
            with np.errstate(over="ignore"):
                cond = torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))
            if not torch.isfinite(cond).all():
                raise DatasetError(f"{where}: expected values within float32's range, found {c.dtype} values "
                                   "beyond it")
    return Arrays(images, labels, n_bits if n_codes is None else None, n_codes, n_classes, cond, cond_codes)
