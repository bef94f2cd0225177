"""Portable numerics: the same floating-point results on every x86-64 CPU, for the smoke regression.

By default PyTorch picks its CPU kernels by what the processor offers: ATen's vector width
(AVX2 or AVX-512), oneDNN's convolutions (AMX, AVX-512, ...) and MKL's matrix products (an
Intel or an AMD code path). Each sums in a different order, so a seeded smoke training ends a
few units of the last printed digit apart on two machines, or further where training amplifies
it, and the nbval comparison of the rounded summary cells fails. The portable mode pins what
each library dispatches on:

- ``ATEN_CPU_CAPABILITY=avx2``: ATen's AVX2 kernels, which every x86-64 CPU of the last decade runs;
- ``MKL_CBWR=COMPATIBLE``: MKL's conditional-numerical-reproducibility branch of SSE2 without
  the approximate rcpps/rsqrtps instructions, the one branch that Intel and AMD processors run
  alike (the others fall back to per-CPU dispatch on a non-Intel processor);
- oneDNN and NNPACK convolutions off (:func:`apply_portable_flags`): both choose blockings by the
  CPU's ISA and cache sizes; ATen's own convolution (unfold + MKL) stays under the branch above.

The thread count is fixed by the smoke profile itself (one thread, :func:`hypernets.book.setup`).
It is slower, so only the smoke copies (``tests/notebooks``) run with it: the runner writes them
in this mode and the notebook tests re-execute them in it. The book's ``full`` runs do not.
"""

from __future__ import annotations

import os

#: Set to "1" by the smoke runner and the notebook tests; the kernels they start inherit it.
PORTABLE_ENV_FLAG = "HYPERNETS_PORTABLE_NUMERICS"

#: The environment of a portable run; the libraries read it when they load.
PORTABLE_ENV = {
    PORTABLE_ENV_FLAG: "1",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
}


def portable_requested() -> bool:
    return os.environ.get(PORTABLE_ENV_FLAG) == "1"


def apply_portable_flags() -> None:
    """Turn off the convolution back ends that have no reproducibility mode, and check that the
    environment of :data:`PORTABLE_ENV` was in place before torch loaded (it cannot be changed later)."""
    import torch

    wrong = {key: os.environ.get(key) for key, value in PORTABLE_ENV.items() if os.environ.get(key) != value}
    if wrong:
        raise RuntimeError(
            f"{PORTABLE_ENV_FLAG}=1 needs the whole portable environment before Python starts; "
            f"expected {PORTABLE_ENV}, found {wrong}"
        )
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
