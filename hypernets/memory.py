"""Keep freed memory in the process, so that large tensors are not page-faulted in every step.

glibc's malloc serves an allocation above its mmap threshold (at most 32 MB) with a fresh
``mmap`` and returns it to the kernel on free. The hypernetworks of LeNet have output layers of
205 M parameters, so every training step allocates gradients, optimiser temporaries and
activations of hundreds of MB that the kernel must map and zero again, page by page: a
HyperGAN step of LeNet then spends most of its time in the kernel (``benchmarks/README.md``).
:func:`keep_freed_memory` makes malloc take every block from its heap and never trim it, so a
freed block is reused by the next step. It changes where memory comes from, not any value.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters of glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_NEVER_TRIM = 2**31 - 1  # an int: the largest trim threshold mallopt takes


def keep_freed_memory() -> bool:
    """Serve every allocation from malloc's heap and never give freed memory back.

    Returns True where it took effect (Linux with glibc), False elsewhere (other allocators
    keep their own policy).
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:  # musl and other C libraries without glibc's tuning calls
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))
