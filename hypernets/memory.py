"""Keep freed memory in the process, so that large tensors are not page-faulted in every step.

glibc's malloc serves an allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and returns it to the kernel on free. The hypernetworks of LeNet have output layers of
205 M parameters, so every training step allocates gradients, optimiser temporaries and
activations of hundreds of MB that the kernel must map and zero again, page by page: a
HyperGAN step of LeNet then spends most of its time in the kernel (``benchmarks/README.md``).
:func:`keep_freed_memory` makes malloc take every block from its heap and never trim it, so a
freed block is reused by the next step. It changes where memory comes from, not any value.

That suits work whose allocations have the same sizes step after step (training). Where sizes
vary (predictions of many nets on large batches, chunk after chunk), a heap that is never
trimmed fragments and keeps growing; :func:`return_freed_memory` restores glibc's default policy
for such a block.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameters of glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # an int: the largest trim threshold mallopt takes
# glibc's defaults (malloc/malloc.c): 65,536 mappings, 128 KiB thresholds.
_DEFAULT_MMAP_MAX = 65536
_DEFAULT_THRESHOLD = 128 * 1024

_keeping = False


@functools.cache
def _glibc_tuning():
    """glibc's ``mallopt`` and ``malloc_trim``, or None where the C library lacks them."""
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(libc, "mallopt", None)
    malloc_trim = getattr(libc, "malloc_trim", None)
    if mallopt is None or malloc_trim is None:  # musl and other C libraries without glibc's tuning calls
        return None
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    malloc_trim.argtypes = [ctypes.c_size_t]
    malloc_trim.restype = ctypes.c_int
    return mallopt, malloc_trim


def keep_freed_memory() -> bool:
    """Serve every allocation from malloc's heap and never give freed memory back.

    Returns True where it took effect (Linux with glibc), False elsewhere (other allocators
    keep their own policy).
    """
    global _keeping
    calls = _glibc_tuning()
    if calls is None:
        return False
    mallopt, _ = calls
    _keeping = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
    return _keeping


@contextmanager
def return_freed_memory() -> Iterator[None]:
    """Inside the block, glibc's default policy: large blocks are mapped and unmapped when
    freed, and the free heap kept so far is given back first. Afterwards freed memory is kept
    again if it was before. A no-op where :func:`keep_freed_memory` did not take effect."""
    global _keeping
    calls = _glibc_tuning() if _keeping else None
    if calls is None:
        yield
        return
    mallopt, malloc_trim = calls
    mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
    mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)
    mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD)
    _keeping = False
    malloc_trim(0)
    try:
        yield
    finally:
        keep_freed_memory()
