"""Every method by a short name, so chapters can loop over them."""

from __future__ import annotations

import importlib

from hypernets.likelihoods import Likelihood
from hypernets.methods.base import Method
from hypernets.targets import TargetNet

#: short name -> (label used in figures and tables, "module:Class")
METHODS: dict[str, tuple[str, str]] = {
    "map": ("MAP", "hypernets.methods.map:MAP"),
    "mc_dropout": ("MC dropout", "hypernets.methods.mc_dropout:MCDropout"),
    "ensemble": ("Deep ensemble", "hypernets.methods.ensemble:DeepEnsemble"),
    "bbb": ("Bayes by Backprop", "hypernets.methods.bayes_by_backprop:BayesByBackprop"),
    "bbh": ("Bayes by Hypernet", "hypernets.methods.bayes_by_hypernet:BayesByHypernet"),
    "bhn": ("Bayesian Hypernetwork", "hypernets.methods.bayesian_hypernetwork:BayesianHypernetwork"),
    "hypergan": ("HyperGAN", "hypernets.methods.hypergan:HyperGAN"),
    "hypergan_mi": ("HyperGAN-MI", "hypernets.methods.hypergan_mi:HyperGANMI"),
    "mnf": ("Multiplicative normalising flows", "hypernets.methods.mnf:MultiplicativeNormalizingFlows"),
    "apd": ("APD", "hypernets.methods.apd:AdversarialPosteriorDistillation"),
}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {name!r}")
    module, cls = METHODS[name][1].split(":")
    return getattr(importlib.import_module(module), cls)


def make_method(name: str, target: TargetNet, likelihood: Likelihood, **options) -> Method:
    """Build method ``name`` with its paper defaults; ``options`` go to its constructor."""
    return method_class(name)(target, likelihood, **options)


def method_label(name: str) -> str:
    method_class(name)  # validates the name
    return METHODS[name][0]
