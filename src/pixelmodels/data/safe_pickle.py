"""Unpickling of data files without running code from them.

CIFAR-10 and the colored-MNIST file of CS294-158 are published as pickles. A
pickle can name any importable callable and have it called while loading, so a
plain ``pickle.load`` of a downloaded file runs whatever its author chose. The
:class:`SafeUnpickler` resolves only the few globals that numpy arrays, numpy
scalars and Python 2 byte strings need; any other name is refused with a
:class:`DatasetError` before anything is called.

Even numpy's own callables are not handed to the file: ``ndarray(shape)`` or
``bytearray(n)`` would allocate whatever a crafted file asks for. Arrays and
dtypes are unpickled into stand-ins that only record what the file says; each
array is then built by ``np.frombuffer`` over the bytes the file actually holds,
after checking that the shape and dtype account for exactly those bytes. Only
plain numeric dtypes are accepted. Before any of this, every opcode's declared
length is checked against the data (``pickletools.genops``), so a declared size
larger than the file is refused without allocating it, and so is a memo index
beyond the file's length (the unpickler grows its memo table to the largest
index it is given: one PUT of 680 million asks for gigabytes).
"""

from __future__ import annotations

import codecs
import io
import math
import pickle
import pickletools
import warnings

import numpy as np

from ..errors import DatasetError, one_line

# Plain numeric dtypes, as numpy pickles them: np.dtype(code, align, copy).
_DTYPE_CODES = {"b1", "i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8"}
_BYTE_ORDERS = ("<", ">", "|", "=")
_MEMO_PUTS = {"PUT", "BINPUT", "LONG_BINPUT"}  # opcodes that store at an index the file chooses


def _latin1(data) -> bytes:
    """Raw bytes of an array or scalar: Python 2 pickles hold them as latin-1 text."""
    if isinstance(data, str):
        return data.encode("latin1")
    if isinstance(data, (bytes, bytearray)):
        return data
    raise pickle.UnpicklingError(f"expected raw bytes, found {type(data).__name__}")


class _Dtype:
    """Stand-in for ``np.dtype(code, align, copy)``; BUILD gives its byte order."""

    def __init__(self, code, align=False, copy=False):
        code = code.decode("latin1") if isinstance(code, bytes) else code
        if not isinstance(code, str) or code not in _DTYPE_CODES:
            raise pickle.UnpicklingError(f"dtype {code!r}: a data file may only hold plain numeric arrays")
        self.code, self.order = code, "="

    def __setstate__(self, state):
        # numpy's (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
        if not isinstance(state, tuple) or len(state) < 5 or state[1] not in _BYTE_ORDERS \
                or any(part is not None for part in state[2:5]):
            raise pickle.UnpicklingError(f"unexpected dtype state {state!r:.80}")
        self.order = state[1]

    def resolve(self) -> np.dtype:
        code = getattr(self, "code", None)
        if code is None:
            raise pickle.UnpicklingError("a dtype without arguments")
        return np.dtype(self.order + code if self.order in "<>" else code)


def _resolve_dtype(dtype) -> np.dtype:
    if not isinstance(dtype, _Dtype):
        raise pickle.UnpicklingError(f"expected a dtype, found {type(dtype).__name__}")
    return dtype.resolve()


def _build_array(raw, dtype, shape, order: str = "C") -> np.ndarray:
    """An array over ``raw`` (no copy), refusing a shape that does not account for every byte."""
    dtype, raw = _resolve_dtype(dtype), _latin1(raw)
    if not isinstance(shape, tuple) or not all(type(s) is int and s >= 0 for s in shape):
        raise pickle.UnpicklingError(f"bad array shape {shape!r:.80}")
    if math.prod(shape) * dtype.itemsize != len(raw):
        raise pickle.UnpicklingError(
            f"an array of shape {shape} and dtype {dtype} needs {math.prod(shape) * dtype.itemsize} "
            f"bytes, the file holds {len(raw)}"
        )
    if order not in ("C", "F"):
        raise pickle.UnpicklingError(f"bad array order {order!r:.20}")
    return np.frombuffer(raw, dtype).reshape(shape, order=order)


class _Array:
    """Stand-in for an ndarray: numpy's ``_reconstruct`` then BUILD with its state."""

    array = None

    def __setstate__(self, state):
        # (version, shape, dtype, is_fortran, rawdata); very old pickles omit the version
        if isinstance(state, tuple) and len(state) == 4:
            state = (1, *state)
        if not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError(f"unexpected array state {state!r:.80}")
        _, shape, dtype, fortran, raw = state
        self.array = _build_array(raw, dtype, shape, "F" if fortran else "C")


class _NdarrayClass:
    """What the name ``numpy.ndarray`` resolves to: a marker, not a callable."""


_NDARRAY = _NdarrayClass()


def _reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct``, restricted to plain ndarrays; the shape and dtype come with BUILD."""
    if subtype is not _NDARRAY:
        raise pickle.UnpicklingError(f"_reconstruct of {type(subtype).__name__}")
    return _Array()


def _frombuffer(buf, dtype, shape, order="C"):
    """numpy's ``_frombuffer`` (protocol 5 arrays)."""
    return _build_array(buf, dtype, shape, order)


def _scalar(dtype, data):
    """numpy's ``scalar``: one value of a plain numeric dtype."""
    return _build_array(data, dtype, ())[()]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 pickles bytes (protocol < 3) as ``_codecs.encode(text, 'latin1')``."""
    if not isinstance(text, str) or not isinstance(encoding, str) or codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r:.20}")
    return text.encode("latin1")


def _bytearray(data=b"", encoding="latin-1"):
    """``bytearray`` as pickles call it, from bytes or latin-1 text, never from a size."""
    if isinstance(data, str) and isinstance(encoding, str) and codecs.lookup(encoding).name == "iso8859-1":
        return bytearray(data.encode("latin1"))
    if isinstance(data, (bytes, bytearray)):
        return bytearray(data)
    raise pickle.UnpicklingError(f"bytearray of {type(data).__name__}")


_ALLOWED = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _reconstruct
    _ALLOWED[(_module, "scalar")] = _scalar
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = _frombuffer
_ALLOWED[("numpy", "ndarray")] = _NDARRAY
_ALLOWED[("numpy", "dtype")] = _Dtype
_ALLOWED[("_codecs", "encode")] = _latin1_encode
_ALLOWED[("builtins", "bytearray")] = _bytearray
_ALLOWED[("__builtin__", "bytearray")] = _bytearray


def _printable(name) -> str:
    """A global's name from the file, with control characters escaped (a message stays one line)."""
    return str(name).encode("unicode_escape").decode("ascii")[:100]


class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays, dicts, lists and numbers only."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")
        self.source = source

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise DatasetError(
                f"{self.source}: refusing to load this pickle: it refers to "
                f"{_printable(module)}.{_printable(name)}, but a data file may only hold numpy arrays, "
                f"dicts, lists, strings and numbers"
            ) from None


def _finish(obj, done: dict):
    """Replace the stand-ins in the unpickled containers by the arrays and dtypes they describe."""
    key = id(obj)
    if key in done:
        return done[key]
    if isinstance(obj, _Array):
        if obj.array is None:
            raise pickle.UnpicklingError("an array without its data")
        done[key] = obj.array
    elif isinstance(obj, _Dtype):
        done[key] = obj.resolve()
    elif isinstance(obj, list):
        done[key] = obj  # in place, so that a list holding itself ends
        obj[:] = [_finish(item, done) for item in obj]
    elif isinstance(obj, dict):
        done[key] = obj
        for k, v in obj.items():
            obj[k] = _finish(v, done)
    elif isinstance(obj, tuple):
        done[key] = obj  # a cycle through a tuple keeps the stand-in; the readers' checks refuse it
        done[key] = tuple(_finish(item, done) for item in obj)
    return done.get(key, obj)


def load_pickle(data: bytes, source: str):
    """Unpickle ``data`` (the bytes of a file) with :class:`SafeUnpickler`.

    Args:
        data: the pickle's bytes.
        source: the file (or ``tarball:member``) the bytes came from, for messages.
    """
    try:
        with warnings.catch_warnings():  # genops decodes STRING escapes: a corrupt one only warns
            warnings.simplefilter("ignore", DeprecationWarning)
            for op, arg, pos in pickletools.genops(data):  # every declared length fits in the data
                if op.name in _MEMO_PUTS and arg >= len(data):
                    raise pickle.UnpicklingError(f"memo index {arg} at byte {pos} is beyond the file's length")
        return _finish(SafeUnpickler(io.BytesIO(data), source).load(), {})
    except DatasetError:
        raise
    except Exception as exc:  # any malformed pickle: EOFError, UnpicklingError, ValueError, MemoryError...
        raise DatasetError(
            f"{source}: expected a pickle of numpy arrays, found unreadable data "
            f"({type(exc).__name__}: {one_line(exc)})"
        ) from exc


def plain_keys(mapping: dict) -> dict:
    """The dict with bytes keys (Python 2 pickles) decoded to str."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in mapping.items()}
