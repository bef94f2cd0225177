"""Named training runs: build a registry method with its options and train it with ``fit``.

Every chapter trains its methods through this module. A run name is a registry name
(``bbh``) or a variant whose options name the registry method
(``{"bbh_single": {"method": "bbh", "per_layer": False}}``); its options go to the method's
constructor, except :data:`FIT_OPTIONS`, which set its training.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from hypernets.likelihoods import Categorical, Likelihood
from hypernets.methods.base import Method
from hypernets.methods.registry import METHODS, make_method, method_label
from hypernets.published import method_label as published_label
from hypernets.targets import TargetNet, get_target
from hypernets.training import Transform, fit

#: Keys of a run's options that set training, not the method's constructor.
FIT_OPTIONS = ("method", "lr", "epochs", "steps", "batch_size")


def resolve_target(target: str | TargetNet) -> TargetNet:
    """A target given by name (:func:`~hypernets.targets.get_target`) or as a TargetNet."""
    if isinstance(target, TargetNet):
        return target
    if isinstance(target, str):
        return get_target(target)
    raise TypeError(f"target must be a target name or a TargetNet, got {type(target).__name__}")


@dataclass
class TrainedMethod:
    """A trained method with its run name, registry name, label and training record."""

    name: str
    method_name: str
    method: Method
    train_time_s: float
    history: list[dict] = field(repr=False)

    @property
    def label(self) -> str:
        """The run's label: the registry's, or the published tables' for variants like ``bbh_single``."""
        return published_label(self.name) if self.name != self.method_name else method_label(self.name)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_method(name: str, target: str | TargetNet, x: Tensor, y: Tensor, *,
                 epochs: int | None = None, steps: int | None = None, batch_size: int,
                 likelihood: Likelihood | None = None, device: str | torch.device = "cpu",
                 seed: int = 0, options: Mapping[str, Any] | None = None,
                 transform: Transform | None = None, precision: str = "fp32",
                 progress: bool = False) -> TrainedMethod:
    """Build run ``name`` with its paper defaults and ``options``, train it with :func:`fit`.

    ``options`` go to the method's constructor, except :data:`FIT_OPTIONS`: ``method`` (the
    registry name; default ``name``), and ``lr``, ``epochs``, ``steps``, ``batch_size`` that
    override the training settings for this run. Give ``epochs`` or ``steps`` as :func:`fit`
    takes them (a full-batch run: ``batch_size=len(x)``). ``likelihood`` defaults to
    :class:`Categorical`. The global RNG is seeded with ``seed`` before the method is built,
    so each run's initialisation does not depend on the runs before it. ``transform``
    augments every mini-batch and ``precision`` sets the arithmetic (see :func:`fit`).
    ``train_time_s`` is the wall time of :func:`fit` (GPU work included).
    """
    options = dict(options or {})
    fit_settings = {key: options.pop(key) for key in FIT_OPTIONS if key in options}
    method_name = fit_settings.get("method", name)
    if method_name not in METHODS:
        raise ValueError(f"run {name!r}: method must be one of {sorted(METHODS)}, got "
                         f"{method_name!r} (a variant names its registry method in the option 'method')")
    if "epochs" in fit_settings or "steps" in fit_settings:
        # A run's own training length replaces the shared one, whichever unit either is in.
        epochs, steps = fit_settings.get("epochs"), fit_settings.get("steps")
    device = torch.device(device)
    torch.manual_seed(seed)
    method = make_method(method_name, resolve_target(target), likelihood or Categorical(), **options)
    _synchronize(device)
    started = time.perf_counter()
    history = fit(method, x, y, epochs=epochs, steps=steps,
                  batch_size=fit_settings.get("batch_size", batch_size), lr=fit_settings.get("lr"),
                  device=device, seed=seed, transform=transform, precision=precision,
                  progress=progress)
    _synchronize(device)
    return TrainedMethod(name, method_name, method, time.perf_counter() - started, history)


def train_methods(methods: Sequence[str], target: str | TargetNet, x: Tensor, y: Tensor, *,
                  epochs: int | None = None, steps: int | None = None, batch_size: int,
                  likelihood: Likelihood | None = None, device: str | torch.device = "cpu",
                  seed: int = 0, options: Mapping[str, Mapping[str, Any]] | None = None,
                  transform: Transform | None = None, precision: str = "fp32",
                  progress: bool = False) -> dict[str, TrainedMethod]:
    """Train every run of ``methods`` on (x, y) one after the other: run name -> TrainedMethod.

    ``options`` maps run names to their options (see :func:`train_method`). A key that is
    neither a run here nor a registry method is refused as a likely typo; options of registry
    methods not run here are ignored, so one profile can serve several method lists.
    """
    if isinstance(methods, str) or not methods:
        raise ValueError(f"methods must be a non-empty list of run names, got {methods!r}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods lists a run twice: {list(methods)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"options name runs {unknown} that are neither in methods {list(methods)} "
                         f"nor registry methods {sorted(METHODS)}")
    for name in methods:  # every run's method, before the first one trains
        method_name = dict(options.get(name) or {}).get("method", name)
        if method_name not in METHODS:
            raise ValueError(f"run {name!r}: method must be one of {sorted(METHODS)}, got "
                             f"{method_name!r} (a variant names its registry method in the "
                             "option 'method')")
    target = resolve_target(target)
    return {name: train_method(name, target, x, y, epochs=epochs, steps=steps, batch_size=batch_size,
                               likelihood=likelihood, device=device, seed=seed,
                               options=options.get(name), transform=transform,
                               precision=precision, progress=progress)
            for name in methods}
