"""Run configuration for the book's notebooks: profiles, seeding, run header and results.

Every notebook in ``notebooks/`` takes a ``profile`` (``smoke``: CPU, seconds, what CI runs;
``full``: the papers' scale) plus its own parameters. The values of each profile live in one
YAML file per notebook, ``hypernets/profiles/<notebook>.yaml``; the notebook's parameters cell
declares every parameter with ``None`` ("take the profile's value") and its next cell calls
:func:`setup`, which resolves, checks and seeds. What each parameter may be (its type, range or
choices) is declared once, in :data:`PARAMETER_RULES` (with :data:`NOTEBOOK_RULES` for names
that mean something else in one notebook).
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import math
import os
import random
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from hypernets.validation import check_choice, check_int, check_int_list, check_real

#: Root of the checkout when the package is installed in editable mode (the documented way).
PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: Folder of the profile files, ``<notebook>.yaml`` (package data).
PROFILES = resources.files("hypernets") / "profiles"

#: Environment variable naming the JSON file that :meth:`RunConfig.finish` writes.
RESULTS_ENV = "HYPERNETS_RESULTS"

#: Environment variable naming where the runner moves that file once the whole run succeeded
#: (the runner points :data:`RESULTS_ENV` into its scratch folder); :meth:`RunConfig.finish`
#: reports this path, the one the published page goes with.
RESULTS_DESTINATION_ENV = "HYPERNETS_RESULTS_DESTINATION"

# Outputs of notebook runs: rewriting them must not mark the source tree as dirty, otherwise
# every run would report "+dirty" because the runner writes its output during the run (a
# page served from run records adds its evaluations to them; a sitting beside it adds records).
_RUN_OUTPUT_PATHSPECS = (
    ":(exclude)book/*.ipynb",
    ":(exclude)book/results",
    ":(exclude)book/records",
    ":(exclude)tests/notebooks",
)


def available_notebooks() -> list[str]:
    """Names of the notebooks that have a profile file in ``hypernets/profiles``."""
    if not PROFILES.is_dir():
        return []
    return sorted(entry.name[: -len(".yaml")] for entry in PROFILES.iterdir() if entry.name.endswith(".yaml"))


def load_profiles(notebook: str) -> dict[str, dict[str, Any]]:
    """Read ``hypernets/profiles/<notebook>.yaml`` and check its shape.

    The file maps each profile name (``smoke``, ``full``) to a mapping of every parameter of
    the notebook except ``profile``; ``device`` and ``seed`` are required, and all profiles
    must name the same parameters.
    """
    resource = PROFILES / f"{notebook}.yaml"
    if not resource.is_file():
        raise ValueError(
            f"no profile file for notebook {notebook!r} (expected hypernets/profiles/{notebook}.yaml); "
            f"notebooks with profiles: {', '.join(available_notebooks()) or 'none'}"
        )
    where = f"hypernets/profiles/{notebook}.yaml"
    profiles = yaml.safe_load(resource.read_text(encoding="utf-8"))
    if not isinstance(profiles, dict) or not profiles:
        raise ValueError(f"{where} must map profile names (e.g. smoke, full) to parameter mappings")
    reference_keys = None
    for name, values in profiles.items():
        if not isinstance(values, dict):
            raise ValueError(f"{where}: profile {name!r} must be a mapping of parameter names to values")
        missing = {"device", "seed"} - values.keys()
        if missing:
            raise ValueError(f"{where}: profile {name!r} lacks {', '.join(sorted(missing))}")
        if "profile" in values:
            raise ValueError(f"{where}: profile {name!r} must not set 'profile'")
        if not isinstance(values["seed"], int) or isinstance(values["seed"], bool):
            raise ValueError(f"{where}: profile {name!r} has seed {values['seed']!r}; expected an integer")
        if not isinstance(values["device"], str):
            raise ValueError(f"{where}: profile {name!r} has device {values['device']!r}; expected a string")
        if reference_keys is None:
            reference_keys = set(values)
        elif set(values) != reference_keys:
            raise ValueError(
                f"{where}: profiles name different parameters "
                f"({sorted(reference_keys ^ set(values))} are not in every profile)"
            )
    return profiles


# ---------------------------------------------------------------------------------------------
# Parameter rules: every value is checked before anything runs
# ---------------------------------------------------------------------------------------------

#: Images in the data sets that the notebooks subsample (notMNIST's test set has MNIST's 10,000).
MNIST_SIZES = {"train": 60_000, "test": 10_000}
CIFAR5_SIZES = {"train": 25_000, "test": 5_000}

#: ``check(label, value, params)``: raises ValueError naming ``label`` (e.g. "parameter 'epochs'");
#: ``params`` holds all the notebook's merged values, for rules that relate two parameters.
Check = Callable[[str, Any, Mapping[str, Any]], None]

#: The type names a rule can declare: an int is accepted for a ``real``, a tuple for a ``list``.
TYPES = ("bool", "int", "real", "str", "list", "mapping")


@dataclass(frozen=True)
class Rule:
    """What a notebook parameter must be: its type, and where it has one, a check of its value.

    ``type`` (one of :data:`TYPES`) is what explicit values are checked against, whatever the
    profile's value is; ``nullable`` lets a profile set null (``lr: null``: the method's own
    default). ``note`` is added to an error, to say why the bound is what it is. ``related``
    names the other parameters that ``check`` reads (an error blames the profile file only
    when none of them was given explicitly).
    """

    type: str
    check: Check | None = None
    nullable: bool = False
    note: str = ""
    related: tuple[str, ...] = ()


def _type_matches(type_name: str, value: Any) -> bool:
    if type_name == "bool":
        return isinstance(value, bool)
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "real":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_name == "str":
        return isinstance(value, str)
    if type_name == "list":
        return isinstance(value, (list, tuple))
    if type_name == "mapping":
        return isinstance(value, Mapping)
    raise ValueError(f"unknown rule type {type_name!r}; types: {', '.join(TYPES)}")


def _integer(minimum: int | None = None, maximum: int | None = None, note: str = "") -> Rule:
    return Rule("int", lambda label, value, params: check_int(label, value, minimum=minimum, maximum=maximum), note=note)


def _real(minimum: float | None = None, maximum: float | None = None, *, exclusive_minimum: bool = False,
          exclusive_maximum: bool = False, nullable: bool = False, note: str = "") -> Rule:
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        check_real(label, value, minimum=minimum, maximum=maximum, exclusive_minimum=exclusive_minimum,
                   exclusive_maximum=exclusive_maximum)

    return Rule("real", check, nullable=nullable, note=note)


def _distinct(label: str, values: Any) -> None:
    repeated = sorted({str(item) for item in values if list(values).count(item) > 1})
    if repeated:
        raise ValueError(f"{label} lists {', '.join(repeated)} more than once, got {list(values)!r}")


def _int_list(minimum: int | None = None, maximum: int | None = None, *, distinct: bool = False) -> Rule:
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        check_int_list(label, value, minimum=minimum, maximum=maximum)
        if distinct:
            _distinct(label, value)

    return Rule("list", check)


def _real_list(minimum: float | None = None, maximum: float | None = None, *,
               exclusive_minimum: bool = False, note: str = "") -> Rule:
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        if not value:
            raise ValueError(f"{label} must list at least one number, got {value!r}")
        for item in value:
            check_real(f"every entry of {label}", item, minimum=minimum, maximum=maximum,
                       exclusive_minimum=exclusive_minimum)

    return Rule("list", check, note=note)


def _choice(choices: Callable[[], Any], note: str = "") -> Rule:
    """One of ``choices()`` (called at check time, so that registries are imported lazily)."""
    return Rule("str", lambda label, value, params: check_choice(label, value, choices()), note=note)


def _choices(choices: Callable[[], Any], *, allow_empty: bool = False) -> Rule:
    """A list of distinct entries of ``choices()``; non-empty unless ``allow_empty``."""
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        if not isinstance(value, list) or (not value and not allow_empty):
            raise ValueError(f"{label} must be a {'' if allow_empty else 'non-empty '}list, got {value!r}")
        for item in value:
            check_choice(f"every entry of {label}", item, choices())
        _distinct(label, value)

    return Rule("list", check)


def _acquisitions() -> list[str]:
    from hypernets.experiments.active_learning import ACQUISITIONS

    return list(ACQUISITIONS)


def _registry() -> dict[str, Any]:
    from hypernets.methods.registry import METHODS

    return METHODS


def _target_names(prefix: str) -> list[str]:
    from hypernets.targets import ARCHITECTURES

    return [name for name in ARCHITECTURES if name.startswith(prefix)]


def _constructor_options(method: str) -> dict[str, Any] | None:
    """Keyword options of a registry method's constructor with their defaults (None: it takes any)."""
    from hypernets.methods.registry import method_class

    parameters = inspect.signature(method_class(method).__init__).parameters
    if any(parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters.values()):
        return None
    return {name: parameter.default for name, parameter in parameters.items()
            if name not in ("self", "target", "likelihood", "generator")
            and parameter.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}


def _apply(rule: Rule, label: str, value: Any, params: Mapping[str, Any]) -> None:
    """Type and value of a nested setting (an option of a run, a key of ``nuts``): ValueError."""
    if value is None and rule.nullable:
        return
    if not _type_matches(rule.type, value):
        raise ValueError(f"{label} must be of type {rule.type}, got {value!r}")
    if rule.check is not None:
        try:
            rule.check(label, value, params)
        except ValueError as error:
            raise ValueError(f"{error} ({rule.note})" if rule.note else str(error)) from None


def _check_method_options(label: str, options: Mapping[str, Any], method: str, params: Mapping[str, Any],
                          *, extra: Mapping[str, Rule] | None = None, reserved: tuple[str, ...] = ()) -> None:
    """Names of ``options`` (those of ``method``'s constructor, or of ``extra``) and the values ``extra`` rules."""
    extra = dict(extra or {})
    clashes = sorted(set(options) & set(reserved))
    if clashes:
        them = "it" if len(clashes) == 1 else "them"
        raise ValueError(f"{label} must not set {', '.join(clashes)}: the notebook sets {them}")
    accepted = _constructor_options(method)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted) - set(extra) - set(reserved))
        if unknown:
            raise ValueError(f"{label} has option(s) {', '.join(unknown)} that method {method!r} does not take; "
                             f"its options: {', '.join(sorted((set(accepted) | set(extra)) - set(reserved)))}")
    for key, rule in extra.items():
        if key in options:
            _apply(rule, f"{label}[{key!r}]", options[key], params)


def _method_options(method: str, *, reserved: tuple[str, ...] = (), extra: Mapping[str, Rule] | None = None,
                    note: str = "") -> Rule:
    """A mapping of options of one registry method's constructor."""
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        _check_method_options(label, value, method, params, extra=extra, reserved=reserved)

    return Rule("mapping", check, note=note)


def _fit_settings() -> dict[str, Rule]:
    """Rules of the training settings a run's options may override: those of the same names."""
    from hypernets.runs import FIT_OPTIONS

    return {key: PARAMETER_RULES[key] for key in FIT_OPTIONS if key != "method"}


def _run_options() -> Rule:
    """Per run name: a mapping of constructor options and training settings (``method``, ``lr``, ...)."""
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        registry = _registry()
        for run, options in value.items():
            where = f"{label}[{run!r}]"
            if not isinstance(options, Mapping):
                raise ValueError(f"{where} must be a mapping of option names to values, got {options!r}")
            if "method" in options:
                check_choice(f"{where}['method']", options["method"], sorted(registry))
            method = options.get("method", run)
            if method in registry:  # else the method list's rule names the unknown run
                _check_method_options(where, {k: v for k, v in options.items() if k != "method"}, method, params,
                                      extra=_fit_settings())

    return Rule("mapping", check)


def _subset_of(other: str) -> Rule:
    """A non-empty list of distinct names, each one of the list parameter ``other``."""
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{label} must be a non-empty list of run names, got {value!r}")
        _distinct(label, value)
        missing = [name for name in value if name not in (params.get(other) or [])]
        if missing:
            raise ValueError(f"{label} names {missing}, which are not in parameter {other!r} "
                             f"({params.get(other)!r}): only trained runs can be evaluated")

    return Rule("list", check, related=(other,))


def _integer_at_most(other: str, minimum: int = 1) -> Rule:
    """An integer from ``minimum`` up to the integer parameter ``other``."""
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        check_int(label, value, minimum=minimum, maximum=params.get(other))

    return Rule("int", check, note=f"at most parameter {other!r}", related=(other,))


def _runs(options_name: str, *, distinct_nets: str | None = None) -> Rule:
    """A non-empty list of distinct run names: registry methods, or runs of ``options_name`` with a ``method``.

    As :func:`hypernets.runs.train_methods` does, options that name neither a run of
    the list nor a registry method are refused. With ``distinct_nets`` (the name of a sample
    count), every run must give that many different nets: no MAP, an ensemble with enough members.
    """
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        registry = _registry()
        if not value or isinstance(value, str):
            raise ValueError(f"{label} must list at least one run name, got {value!r}")
        options = params.get(options_name) or {}
        options = options if isinstance(options, Mapping) else {}
        defined = {run: entry["method"] for run, entry in options.items()
                   if isinstance(entry, Mapping) and "method" in entry}
        for run in value:
            try:
                check_choice(f"every entry of {label}", run, sorted(set(registry) | set(defined)))
            except ValueError as error:
                raise ValueError(f"{error} (registry methods, or runs that parameter {options_name!r} defines "
                                 "with a 'method' key)") from None
        _distinct(label, value)
        unknown = sorted(set(options) - set(value) - set(registry))
        if unknown:
            raise ValueError(f"parameter {options_name!r} names run(s) {', '.join(unknown)} that are neither in "
                             f"{label} {list(value)} nor registry methods {sorted(registry)}")
        if distinct_nets is None:
            return
        wanted = params.get(distinct_nets)
        for run in value:
            method = defined.get(run, run)
            if method == "map":
                raise ValueError(f"{label} lists {run!r}, a MAP run: one net cannot give the "
                                 f"{distinct_nets}={wanted} different weight sets that are tested")
            if method == "ensemble":
                members = options.get(run, {}).get("n_members", _constructor_options("ensemble")["n_members"])
                if isinstance(wanted, int) and isinstance(members, int) and members < wanted:
                    raise ValueError(f"{label} lists {run!r}, an ensemble of {members} members: fewer than the "
                                     f"{distinct_nets}={wanted} different weight sets that are tested")

    return Rule("list", check, related=(options_name,) + ((distinct_nets,) if distinct_nets else ()))


def _toy_targets(lengths_of: str) -> Rule:
    """Toy-regression target names, one per entry of ``lengths_of``."""
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        for name in value:
            check_choice(f"every entry of {label}", name, _target_names("toy_"))
        other = params.get(lengths_of)
        if not value or (isinstance(other, (list, tuple)) and len(other) != len(value)):
            raise ValueError(f"{label} must name one target network per entry of parameter {lengths_of!r} "
                             f"({other!r}), got {value!r}")

    return Rule("list", check, related=(lengths_of,))


#: Keyword arguments of :func:`hypernets.reference_posterior.nuts_posterior` that a ``nuts``
#: mapping may set (its prior_std and seed are the notebook's own parameters).
NUTS_RULES: dict[str, Rule] = {
    "num_chains": _integer(1),
    "num_samples": _integer(4, note="pyro's split R-hat needs 4 draws per chain"),
    "warmup_steps": _integer(0),
    "max_tree_depth": _integer(1),
    "target_accept_prob": _real(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True),
}


def _nuts(*, mirrored: bool = False) -> Rule:
    """A mapping of :data:`NUTS_RULES` settings; ``mirrored``: ``num_chains`` required and even."""
    def check(label: str, value: Any, params: Mapping[str, Any]) -> None:
        unknown = sorted(set(value) - set(NUTS_RULES))
        if unknown:
            raise ValueError(f"{label} has setting(s) {', '.join(unknown)}; it may set {', '.join(NUTS_RULES)}")
        for key, rule in NUTS_RULES.items():
            if key in value:
                _apply(rule, f"{label}[{key!r}]", value[key], params)
        if mirrored:
            chains = value.get("num_chains")
            if not isinstance(chains, int) or chains < 2 or chains % 2:
                raise ValueError(f"{label}['num_chains'] must be an even integer >= 2 (the chains start in "
                                 f"mirror pairs), got {chains!r}")

    return Rule("mapping", check)


#: The rules of every notebook parameter, by name: what a name means is the same in every
#: notebook that has it, except the entries of :data:`NOTEBOOK_RULES`. A parameter without a
#: rule is checked against the type of its profile's value only.
PARAMETER_RULES: dict[str, Rule] = {
    # every notebook
    "device": Rule("str"),  # availability: check_device
    "seed": _integer(0, 2**32 - 1, note="NumPy takes seeds in [0, 2**32 - 1]"),
    # data
    "n_train": _integer(1, MNIST_SIZES["train"], note="MNIST has 60,000 training images"),
    "n_test": _integer(1, MNIST_SIZES["test"], note="MNIST and notMNIST have 10,000 test images"),
    "cifar_n_train": _integer(1, 50000, note="CIFAR-10 has 50,000 training images"),
    "cifar_n_test": _integer(1, 10000, note="CIFAR-10 has 10,000 test images"),
    "n_per_class": _integer(1),
    # runs and their options
    "methods": _runs("options"),
    "held_out_methods": _runs("options"),
    "baselines": _runs("options"),
    "detection_methods": _subset_of("methods"),
    "correlation_methods": _runs("correlation_options", distinct_nets="n_weight_samples"),
    "product_methods": _runs("product_options"),
    "options": _run_options(),
    "cifar_options": _run_options(),
    "correlation_options": _run_options(),
    "product_options": _run_options(),
    "target": _choice(lambda: ["lenet", *_target_names("mnist_")], note="an MNIST classifier of hypernets.targets"),
    "architecture_options": _method_options("bbh", reserved=("method", "architecture"),
                                            extra={"n_chunks": _integer(1)}),
    "hypergan_options": _method_options("hypergan", reserved=("use_mixer", "use_discriminator", "train_samples")),
    "mi_options": _method_options("hypergan_mi", reserved=("beta", "train_samples")),
    "units_per_stage": _integer(1),
    # training
    "epochs": _integer(1),
    "held_out_epochs": _integer(1),
    "cifar_epochs": _integer(1),
    "steps": _integer(1),
    "toy_steps": _integer(1),
    "product_steps": _integer(1),
    "batch_size": _integer(1),
    "eval_batch_size": _integer(1),
    "lr": _real(0.0, exclusive_minimum=True, nullable=True, note="null: the method's default"),
    "toy_lr": _real(0.0, exclusive_minimum=True, nullable=True, note="null: the method's default"),
    "train_samples": _integer(2, note="HyperGAN's mixer normalises over the sampled nets"),
    "toy_train_samples": _integer(2, note="HyperGAN-MI's mixer and statistics network normalise over the samples"),
    "eval_every": _integer(1),
    "precision": _choice(lambda: ["fp32", "bf16"], note="bf16: autocast for the matrix work, fp32 master weights"),
    "curve_samples": _integer(1),
    "toy_eval_every": _integer(1),
    # sampled nets
    "n_samples": _integer(1),
    "n_nets": _int_list(1),
    "ensemble_sizes": _int_list(1, distinct=True),
    "detection_nets": _int_list(1),
    "n_detect": _integer_at_most("n_test"),
    "n_attack": _integer_at_most("n_test"),
    "attack_nets": _integer(1),
    "n_predict_samples": _integer(1),
    "n_diversity_samples": _integer(2, note="a diversity needs two weight samples"),
    "toy_n_samples": _integer(2, note="a diversity needs two weight samples"),
    "n_weight_samples": _integer(3, note="a correlation needs 3 points"),
    "product_samples": _integer(1),
    # experiments
    "epsilons": _real_list(0.0, 1.0, note="FGSM budgets are pixel distances, pixels lie in [0, 1]"),
    "detection_epsilons": _real_list(0.0, 1.0, exclusive_minimum=True,
                                     note="attack budgets above 0, in pixels (pixels lie in [0, 1])"),
    "held_out_classes": _int_list(0, 9, distinct=True),
    "train_sizes": _int_list(1, MNIST_SIZES["train"], distinct=True),
    "couplings": _int_list(0, distinct=True),
    "hidden_units": _int_list(1),
    "seeds": _int_list(0, distinct=True),
    "repeats": _int_list(0, distinct=True),
    "acquisitions": _choices(_acquisitions),
    "cold_acquisitions": _choices(_acquisitions, allow_empty=True),
    "n_acquisitions": _integer(0),
    "queries": _integer(1),
    "pool_subset": _integer(1),
    "initial_per_class": _integer(1),
    "n_mc": _integer(1),
    "n_test_nets": _integer(1),
    "noise_stds": _real_list(0.0, exclusive_minimum=True),
    "toy_noise_stds": _real_list(0.0, exclusive_minimum=True),
    "toy_seeds": _int_list(0, distinct=True),
    "loss_nets": _int_list(1),
    "targets": _toy_targets("noise_stds"),
    "prior_std": _real(0.0, exclusive_minimum=True),
    "nuts": _nuts(),
    "nuts_processes": _integer(0),
    "standardize": Rule("bool"),
    "n_held_out": _integer(1),
    "coverage_level": _real(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True,
                            note="the probability of a central predictive interval"),
    "match_factor": _real(1.0, exclusive_minimum=True,
                          note="a std ratio in [1 / match_factor, match_factor] matches NUTS"),
    "n_pairs": _integer(1),
    "product_points": _integer(1),
    "mi_beta": _real(0.0, exclusive_minimum=True, note="the weight of the MI term; 0 is the variant without it"),
    "accuracy_tolerance": _real(0.0, 1.0),
    "significant_ratio": _real(0.0, 1.0, exclusive_minimum=True, exclusive_maximum=True),
}

#: Per notebook, the rules of names that mean something else there than in :data:`PARAMETER_RULES`.
NOTEBOOK_RULES: dict[str, dict[str, Rule]] = {
    "cifar5_table": {
        "n_train": _integer(1, CIFAR5_SIZES["train"], note="CIFAR-5 has 25,000 training images"),
        "n_test": _integer(1, CIFAR5_SIZES["test"], note="CIFAR-5 and its outliers have 5,000 test images each"),
    },
    "weight_correlations": {"nuts": _nuts(mirrored=True)},
}


def parameter_rules(notebook: str) -> dict[str, Rule]:
    """The rules that apply to ``notebook``'s parameters: :data:`PARAMETER_RULES` with its own entries."""
    return {**PARAMETER_RULES, **NOTEBOOK_RULES.get(notebook, {})}


def _type_name(profile_value: Any) -> str:
    if isinstance(profile_value, bool):
        return "bool"
    if isinstance(profile_value, int):
        return "int"
    if isinstance(profile_value, float):
        return "real"
    if isinstance(profile_value, (list, tuple)):
        return "list"
    if isinstance(profile_value, Mapping):
        return "mapping"
    return "str" if isinstance(profile_value, str) else type(profile_value).__name__


_EXPECTED = {"real": "float", "mapping": "dict"}


def _coerce(name: str, value: Any, profile_value: Any, rule: Rule | None = None) -> Any:
    """Check an explicit ``value`` against the rule's type, else the profile value's; int is accepted for float."""
    type_name = rule.type if rule is not None else _type_name(profile_value)
    if type_name in TYPES:
        ok = _type_matches(type_name, value)
    else:
        ok = isinstance(value, type(profile_value))
    if not ok:
        like = f" like the profile's value {profile_value!r}" if profile_value is not None else ""
        raise TypeError(
            f"parameter {name!r} = {value!r} has type {type(value).__name__}; "
            f"expected {_EXPECTED.get(type_name, type_name)}{like}"
        )
    return float(value) if type_name == "real" else value


def _freeze(value: Any) -> Any:
    """Lists become tuples so that a resolved configuration cannot be changed in place."""
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def resolve_parameters(notebook: str, profile: str, **params: Any) -> dict[str, Any]:
    """Merge explicit parameters into a profile's values, with the checks :func:`setup` promises.

    ``params`` must name exactly the profile's parameters; a value of ``None`` takes the
    profile's value, any other value overrides it after a type check. Then every value, the
    profile's and the explicit ones, is checked against :func:`parameter_rules` (ranges,
    choices, the run names of method lists), so a bad value fails here rather than after a
    training run. A profile value of null needs a rule that declares the parameter's type
    and allows null.
    """
    profiles = load_profiles(notebook)
    if profile not in profiles:
        raise ValueError(f"unknown profile {profile!r} for notebook {notebook!r}; profiles: {', '.join(profiles)}")
    values = profiles[profile]
    unknown = sorted(set(params) - set(values))
    if unknown:
        raise ValueError(
            f"unknown parameter(s) {', '.join(unknown)} for notebook {notebook!r}; "
            f"valid parameters: {', '.join(sorted(values))}"
        )
    not_passed = sorted(set(values) - set(params))
    if not_passed:
        raise ValueError(
            f"parameter(s) {', '.join(not_passed)} of hypernets/profiles/{notebook}.yaml were not passed "
            "to setup(); declare them in the notebook's parameters cell and pass them on"
        )
    rules = parameter_rules(notebook)
    where = f"hypernets/profiles/{notebook}.yaml, profile {profile!r}"
    merged = {}
    for name, profile_value in values.items():
        rule = rules.get(name)
        if profile_value is None and not (rule is not None and rule.nullable):
            raise ValueError(
                f"{where} sets {name!r} to null, but no rule declares its type and allows null; "
                f"add a Rule(type, nullable=True) for {name!r} to hypernets.book.PARAMETER_RULES"
            )
        given = params[name]
        if given is not None:
            merged[name] = _coerce(name, given, profile_value, rule)
        else:
            if profile_value is not None and rule is not None:
                try:
                    _coerce(name, profile_value, None, rule)
                except TypeError as error:
                    raise TypeError(f"{where}: {error}") from None
            merged[name] = profile_value
    # Rules that relate parameters run last, once the parameters they read have passed their own.
    for name, value in sorted(merged.items(), key=lambda item: bool(rules.get(item[0]) and rules[item[0]].related)):
        rule = rules.get(name)
        if rule is None or rule.check is None or value is None:
            continue
        try:
            rule.check(f"parameter {name!r}", value, merged)
        except ValueError as error:
            from_profile = all(params.get(other) is None for other in (name, *rule.related))
            source = f"{where}: " if from_profile else ""
            raise ValueError(f"{source}{error}" + (f" ({rule.note})" if rule.note else "")) from None
    return {name: _freeze(value) for name, value in merged.items()}


def check_device(device: str) -> torch.device:
    """Parse ``device`` and check that it is usable here; there is no silent fallback to the CPU."""
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"device {device!r} is not a torch device name (e.g. 'cpu', 'cuda', 'cuda:1')") from error
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {device!r} was requested but CUDA is not available to torch {torch.__version__} "
                "on this machine; to run on the CPU pass device='cpu' (hypernets-run --device cpu, papermill -p device cpu)"
            )
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) visible")
    elif parsed.type == "mps":
        if not torch.backends.mps.is_available():
            raise RuntimeError(f"device {device!r} was requested but MPS is not available on this machine")
    elif parsed.type != "cpu":
        raise ValueError(f"device {device!r} is not supported; use 'cpu', 'cuda[:N]' or 'mps'")
    return parsed


def seed_everything(seed: int, device: torch.device, *, single_thread: bool = True) -> None:
    """Seed Python, NumPy and torch; on the CPU also fix the arithmetic.

    On the CPU, deterministic algorithms cost nothing, and with ``single_thread`` one thread
    makes reductions add up in the same order on every machine (the summed order otherwise
    follows the core count), so smoke runs give the same rounded numbers everywhere; the other
    profiles use every core (the same result for the same seed on the same machine). On CUDA
    deterministic algorithms need a cuBLAS workspace setting and make some kernels raise, so
    they are not requested.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        if single_thread:
            torch.set_num_threads(1)


def git_commit(repo: Path = PROJECT_ROOT) -> str:
    """Short commit of ``repo``, with ``+dirty`` when sources differ from it; ``unknown`` outside git.

    Executed notebooks, results and run records (``book/*.ipynb``, ``book/results``,
    ``book/records``, ``tests/notebooks``) do not count as changes, since a run writes them.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changes = git("status", "--porcelain", "--", ".", *_RUN_OUTPUT_PATHSPECS)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if changes else commit


def _json_ready(value: Any) -> Any:
    """Plain JSON values: NumPy scalars become Python ones and NaN becomes null."""
    if isinstance(value, dict):
        return {str(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class RunHeader:
    """The header a notebook shows when :func:`setup` runs: a table in Jupyter, text elsewhere."""

    def __init__(self, rows: dict[str, str]):
        self.rows = rows

    def __str__(self) -> str:
        width = max(len(key) for key in self.rows)
        return "\n".join(f"{key:<{width}}  {value}" for key, value in self.rows.items())

    def _repr_markdown_(self) -> str:
        lines = ["| run | |", "| --- | --- |"]
        lines += [f"| {key} | `{value}` |" for key, value in self.rows.items()]
        return "\n".join(lines)


class RunConfig:
    """The resolved parameters of one notebook run (read-only), with its summary tables.

    Parameters are attributes (``cfg.seed``, ``cfg.n_per_class``); ``cfg.profile`` and
    ``cfg.notebook`` name the run. :meth:`summary` prints the tables that the regression tests
    compare; :meth:`finish` reports the wall time and writes the results file.
    """

    __slots__ = ("notebook", "profile", "_params", "_commit", "_started_at", "_start_clock", "_summaries",
                 "_runs")

    def __init__(self, notebook: str, profile: str, params: dict[str, Any], commit: str):
        set_ = object.__setattr__
        set_(self, "notebook", notebook)
        set_(self, "profile", profile)
        set_(self, "_params", dict(params))
        set_(self, "_commit", commit)
        set_(self, "_started_at", _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0))
        set_(self, "_start_clock", time.perf_counter())
        set_(self, "_summaries", [])
        set_(self, "_runs", {})

    def __getattr__(self, name: str) -> Any:
        params = object.__getattribute__(self, "_params")
        if name in params:
            return params[name]
        raise AttributeError(f"notebook {self.notebook!r} has no parameter {name!r}; parameters: {', '.join(params)}")

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"RunConfig is read-only; pass {name!r} as a notebook parameter instead")

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self._params))

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self._params.items())
        return f"RunConfig(notebook={self.notebook!r}, profile={self.profile!r}, {params})"

    @property
    def commit(self) -> str:
        """Git commit of the library at setup time (see :func:`git_commit`)."""
        return self._commit

    def as_dict(self) -> dict[str, Any]:
        """The resolved parameters (``profile`` excluded) as a new dict."""
        return dict(self._params)

    def header(self) -> RunHeader:
        """What :func:`setup` displays: notebook, profile, device, seed, commit, torch, start time."""
        return RunHeader(
            {
                "notebook": self.notebook,
                "profile": self.profile,
                "device": self._params["device"],
                "seed": str(self._params["seed"]),
                "commit": self._commit,
                "torch": torch.__version__,
                "started": self._started_at.isoformat(),
            }
        )

    def summary(self, table: pd.DataFrame, decimals: int = 3, name: str | None = None) -> None:
        """Print ``table`` rounded to ``decimals`` as plain text and keep it for the results file.

        This is the output the notebook regression tests compare, so it is plain text with a
        fixed number of decimals. ``name`` labels the table in the results file (default
        ``table_1``, ``table_2``, ...).
        """
        if not isinstance(table, pd.DataFrame):
            raise TypeError(f"summary() takes a pandas DataFrame, got {type(table).__name__}")
        rounded = table.round(decimals)
        print(rounded.to_string())
        if not isinstance(rounded.index, pd.RangeIndex):
            rounded = rounded.reset_index()
        label = name or f"table_{len(self._summaries) + 1}"
        self._summaries.append({"name": label, "decimals": decimals, "records": rounded.to_dict(orient="records")})

    def record_runs(self, trained: Mapping[str, Any], seed: int | None = None) -> pd.DataFrame:
        """Keep each trained run's store key, training time, epochs and source (record, store or
        trained) for the results file;
        return them as a table (``trained``: run name -> :class:`hypernets.runs.TrainedMethod`).

        With ``seed`` (one of several training seeds) the runs are recorded as ``name (seed s)``.
        """
        trained = {name if seed is None else f"{name} (seed {seed})": run
                   for name, run in trained.items()}
        for name, run in trained.items():
            last = run.history[-1] if run.history else {}
            machine = run.trained_with
            self._runs[name] = {"key": run.key, "train_time_s": round(run.train_time_s, 1),
                                "epochs": last.get("epoch"), "steps": last.get("step"),
                                "source": run.source,
                                "trained_on": f"{machine.get('device')}, "
                                              f"{machine.get('threads')} threads"}
        return pd.DataFrame([{"run": name, **self._runs[name]} for name in trained])

    def finish(self) -> None:
        """Print the wall time since :func:`setup`; write the results JSON if ``HYPERNETS_RESULTS`` is set.

        The file holds the parameters, profile, device, torch version, commit, wall time,
        every table passed to :meth:`summary` (as records) and the runs of :meth:`record_runs`. Under the runner the file goes to
        its scratch folder, and the line printed names ``HYPERNETS_RESULTS_DESTINATION``, where
        the runner moves it together with the executed notebook once the run has succeeded
        (a page showing the line is only published then).
        """
        wall_time_s = time.perf_counter() - self._start_clock
        print(f"Wall time: {wall_time_s:.1f} s")
        results = _json_ready(
            {
                "notebook": self.notebook,
                "profile": self.profile,
                "parameters": self.as_dict(),
                "device": self._params["device"],
                "seed": self._params["seed"],
                "torch_version": torch.__version__,
                "commit": self._commit,
                "started_at": self._started_at.isoformat(),
                "wall_time_s": round(wall_time_s, 3),
                "summaries": self._summaries,
                "runs": self._runs,
            }
        )
        target = os.environ.get(RESULTS_ENV)
        if target:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
            print(f"Results written to {os.environ.get(RESULTS_DESTINATION_ENV) or path}")


def _show(header: RunHeader) -> None:
    """Display as a table inside IPython/Jupyter, print otherwise."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        print(header)
        return
    if get_ipython() is None:
        print(header)
    else:
        display(header)


def setup(notebook: str, profile: str, **params: Any) -> RunConfig:
    """Resolve a notebook's parameters against its profile, check the device, seed, show a header.

    ``params`` must name every parameter of ``hypernets/profiles/<notebook>.yaml`` (the
    notebook passes on its whole parameters cell); ``None`` takes the profile's value and any
    other value overrides it (its type must match the rule's, else the profile's; an int is
    accepted for a float). Every value must pass its rule (:data:`PARAMETER_RULES`). An unknown
    profile or parameter, a missing parameter, a value out of range, or an unusable device
    (e.g. ``cuda`` without CUDA) raises an error that says what is valid.
    """
    resolved = resolve_parameters(notebook, profile, **params)
    device = check_device(resolved["device"])
    seed_everything(resolved["seed"], device, single_thread=profile == "smoke")
    config = RunConfig(notebook, profile, resolved, git_commit())
    _show(config.header())
    return config
