"""Run configuration for the book's notebooks: profiles, seeding, run header and results.

Every notebook in ``notebooks/`` takes a ``profile`` (``smoke``: CPU, seconds, what CI runs;
``full``: the papers' scale) plus its own parameters. The values of each profile live in one
YAML file per notebook, ``hypernets/profiles/<notebook>.yaml``; the notebook's parameters cell
declares every parameter with ``None`` ("take the profile's value") and its next cell calls
:func:`setup`, which resolves, checks and seeds.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import random
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

#: Root of the checkout when the package is installed in editable mode (the documented way).
PROJECT_ROOT = Path(__file__).resolve().parents[1]

#: Folder of the profile files, ``<notebook>.yaml`` (package data).
PROFILES = resources.files("hypernets") / "profiles"

#: Environment variable naming the JSON file that :meth:`RunConfig.finish` writes.
RESULTS_ENV = "HYPERNETS_RESULTS"

# Outputs of notebook runs: rewriting them must not mark the source tree as dirty, otherwise
# every run would report "+dirty" because the runner writes its output during the run.
_RUN_OUTPUT_PATHSPECS = (
    ":(exclude)book/*.ipynb",
    ":(exclude)book/results",
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


def _coerce(name: str, value: Any, profile_value: Any) -> Any:
    """Check an explicit ``value`` against the type of the profile's value; int is accepted for float."""
    expected = type(profile_value).__name__
    if profile_value is None:
        return value
    if isinstance(profile_value, bool):
        ok = isinstance(value, bool)
    elif isinstance(profile_value, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(profile_value, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(profile_value, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        expected = "list"
    else:
        ok = isinstance(value, type(profile_value))
    if not ok:
        raise TypeError(
            f"parameter {name!r} = {value!r} has type {type(value).__name__}; "
            f"expected {expected} like the profile's value {profile_value!r}"
        )
    return value


def _freeze(value: Any) -> Any:
    """Lists become tuples so that a resolved configuration cannot be changed in place."""
    if isinstance(value, list):
        return tuple(_freeze(item) for item in value)
    return value


def resolve_parameters(notebook: str, profile: str, **params: Any) -> dict[str, Any]:
    """Merge explicit parameters into a profile's values, with the checks :func:`setup` promises.

    ``params`` must name exactly the profile's parameters; a value of ``None`` takes the
    profile's value, any other value overrides it after a type check.
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
    resolved = {}
    for name, profile_value in values.items():
        given = params[name]
        resolved[name] = _freeze(profile_value if given is None else _coerce(name, given, profile_value))
    return resolved


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


def seed_everything(seed: int, device: torch.device) -> None:
    """Seed Python, NumPy and torch; on the CPU also fix the arithmetic.

    On the CPU, deterministic algorithms cost nothing, and one thread makes reductions add up
    in the same order on every machine (the summed order otherwise follows the core count),
    so smoke runs give the same rounded numbers everywhere. On CUDA deterministic algorithms
    need a cuBLAS workspace setting and make some kernels raise, so they are not requested.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(1)


def git_commit(repo: Path = PROJECT_ROOT) -> str:
    """Short commit of ``repo``, with ``+dirty`` when sources differ from it; ``unknown`` outside git.

    Executed notebooks and results (``book/*.ipynb``, ``book/results``, ``tests/notebooks``)
    do not count as changes, since a run rewrites them.
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

    __slots__ = ("notebook", "profile", "_params", "_commit", "_started_at", "_start_clock", "_summaries")

    def __init__(self, notebook: str, profile: str, params: dict[str, Any], commit: str):
        set_ = object.__setattr__
        set_(self, "notebook", notebook)
        set_(self, "profile", profile)
        set_(self, "_params", dict(params))
        set_(self, "_commit", commit)
        set_(self, "_started_at", _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0))
        set_(self, "_start_clock", time.perf_counter())
        set_(self, "_summaries", [])

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

    @property
    def torch_device(self) -> torch.device:
        """``device`` as a :class:`torch.device`."""
        return torch.device(self._params["device"])

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

    def finish(self) -> None:
        """Print the wall time since :func:`setup`; write the results JSON if ``HYPERNETS_RESULTS`` is set.

        The file holds the parameters, profile, device, torch version, commit, wall time and
        every table passed to :meth:`summary` (as records).
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
            }
        )
        target = os.environ.get(RESULTS_ENV)
        if target:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n", encoding="utf-8")
            print(f"Results written to {path}")


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
    other value overrides it (its type must match the profile's; an int is accepted for a
    float). An unknown profile or parameter, a missing parameter, or an unusable device
    (e.g. ``cuda`` without CUDA) raises an error that says what is valid.
    """
    resolved = resolve_parameters(notebook, profile, **params)
    device = check_device(resolved["device"])
    seed_everything(resolved["seed"], device)
    config = RunConfig(notebook, profile, resolved, git_commit())
    _show(config.header())
    return config
