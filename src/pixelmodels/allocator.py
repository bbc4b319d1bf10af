"""The process's memory allocator, set by the entry point that owns the process (``pixelmodels train``),
never by the library: a user's own program keeps the allocator it chose."""

from __future__ import annotations

import ctypes
import functools
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (<malloc.h>)
_MMAP_THRESHOLDS = (2**30, 2**25)  # tried in turn: 1 GiB, else glibc's own ceiling (32 MiB on 64-bit)
_NEVER_TRIM = 2**31 - 1


@functools.cache
def keep_freed_memory() -> bool:
    """Let this process keep the memory it frees for its next allocations (Linux with glibc; once per process).

    PyTorch's CPU allocator caches nothing: every activation of a training step is a fresh ``malloc``, and
    glibc serves blocks over its mmap threshold with new pages and unmaps them on free, so each step
    zero-fills its activations again through page faults. This raises glibc's mmap threshold (to 1 GiB,
    else to glibc's ceiling of 32 MiB) and turns off the trimming of the heap with ``mallopt``, so freed
    blocks are reused instead, as the CUDA caching allocator does on a GPU. It changes the whole process,
    which is why only the ``train`` command calls it, on the CPU, and the library never does.

    The user's own malloc settings win: with any ``MALLOC_*`` variable (``MALLOC_MMAP_THRESHOLD_``,
    ``MALLOC_TRIM_THRESHOLD_``, ...) or a ``glibc.malloc`` setting in ``GLIBC_TUNABLES`` in the environment,
    nothing is changed; nor without glibc (musl, macOS, Windows).

    Returns:
        Whether the setting was applied.
    """
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt thresholds to raise)
        return False
    if not any(mallopt(_M_MMAP_THRESHOLD, size) == 1 for size in _MMAP_THRESHOLDS):
        return False
    return mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM) == 1
