"""Seeded sampling that leaves the caller's random state alone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int, device: str | torch.device | None = None) -> Iterator[None]:
    """Run the block with torch's global RNG seeded by ``seed``, restoring it afterwards.

    The CPU generator is always forked; a CUDA ``device``'s generator too, so that sampling
    there is reproducible and does not shift the noise of a training run that continues
    afterwards.
    """
    device = torch.device("cpu" if device is None else device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
