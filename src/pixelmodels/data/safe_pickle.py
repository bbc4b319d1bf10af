"""Unpickling of data files without running code from them.

CIFAR-10 and the colored-MNIST file of CS294-158 are published as pickles. A
pickle can name any importable callable and have it called while loading, so a
plain ``pickle.load`` of a downloaded file runs whatever its author chose. The
:class:`SafeUnpickler` resolves only the few globals that numpy arrays, numpy
scalars and Python 2 byte strings need; any other name is refused with a
:class:`DatasetError` before anything is called.
"""

from __future__ import annotations

import codecs
import io
import pickle

import numpy as np

from ..errors import DatasetError

# The callables numpy itself pickles with, taken from numpy rather than imported
# by name: their module moved (numpy.core -> numpy._core) between versions.
_RECONSTRUCT = np.array(0).__reduce__()[0]
_FROMBUFFER = np.array(0).__reduce_ex__(5)[0]
_SCALAR = np.uint8(0).__reduce__()[0]


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """Python 3 pickles bytes (protocol < 3) as ``_codecs.encode(text, 'latin1')``."""
    if codecs.lookup(encoding).name != "iso8859-1":
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _ndarray_reconstruct(subtype, shape, dtype):
    """numpy's ``_reconstruct``, restricted to plain ndarrays."""
    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"_reconstruct of {subtype!r}")
    return _RECONSTRUCT(subtype, shape, dtype)


_ALLOWED = {}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = _ndarray_reconstruct
    _ALLOWED[(_module, "scalar")] = _SCALAR
for _module in ("numpy.core.numeric", "numpy._core.numeric"):
    _ALLOWED[(_module, "_frombuffer")] = _FROMBUFFER
_ALLOWED[("numpy", "ndarray")] = np.ndarray
_ALLOWED[("numpy", "dtype")] = np.dtype
_ALLOWED[("_codecs", "encode")] = _latin1_encode
_ALLOWED[("builtins", "bytearray")] = bytearray
_ALLOWED[("__builtin__", "bytearray")] = bytearray


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
                f"{module}.{name}, but a data file may only hold numpy arrays, "
                f"dicts, lists, strings and numbers"
            ) from None


def load_pickle(data: bytes, source: str):
    """Unpickle ``data`` (the bytes of a file) with :class:`SafeUnpickler`.

    Args:
        data: the pickle's bytes.
        source: the file (or ``tarball:member``) the bytes came from, for messages.
    """
    try:
        return SafeUnpickler(io.BytesIO(data), source).load()
    except DatasetError:
        raise
    except Exception as exc:  # any malformed pickle: EOFError, UnpicklingError, ValueError...
        raise DatasetError(
            f"{source}: expected a pickle of numpy arrays, found unreadable data "
            f"({type(exc).__name__}: {exc})"
        ) from exc


def plain_keys(mapping: dict) -> dict:
    """The dict with bytes keys (Python 2 pickles) decoded to str."""
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in mapping.items()}
