"""The cubic toy: every method's predictive on [-6, 6] beside a NUTS reference posterior.

HyperGAN (sigma = 3, 1-200-1 ELU net) and Bayes by Hypernet (sigma = 9, 1-100-1 ReLU net) show
the predictive of y = x^3 + noise from 20 points in [-4, 4]: a good posterior is narrow near
the data and widens outside it. Beyond the papers, each method's predictive standard
deviation is compared with that of the exact posterior of the same network under the same
prior and likelihood, sampled with NUTS (:mod:`hypernets.reference_posterior`).

The problem is posed as Hernandez-Lobato & Adams (2015) pose regression: inputs and targets
are standardised with the training set's mean and (population) standard deviation
(:class:`Standardizer`), every network and NUTS work on that scale with the N(0, 1) weight
prior and the noise std sigma / std(y), and every number is reported back on the original
scale. ``standardize=False`` keeps the raw problem (y up to +-64 under an N(0, 1) prior:
MAP underfits, and NUTS is the exact posterior of a misspecified model).

The standard deviations of the figures and of :func:`std_table` are those of the sampled
functions f_s(x) (the epistemic part); the Gaussian observation noise, the same sigma for
every method, is left out so that the comparison is not dominated by it. The held-out
scores (:func:`held_out_table`: NLL, interval coverage) use the full predictive, noise
included, on fresh points inside the data and outside it.

Runs are named as in :mod:`hypernets.runs`: a registry name, whose options (constructor
arguments, plus ``lr`` and ``steps`` for training) come from a per-run mapping.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

from hypernets import metrics
from hypernets.data import ToyRegression, toy_regression
from hypernets.evaluation import prose_list
from hypernets.likelihoods import Gaussian
from hypernets.reference_posterior import (
    REFERENCE_LABEL,
    ReferencePosterior,
    nuts_posterior,
)
from hypernets.runs import TrainedMethod, train_methods
from hypernets.seeding import seeded
from hypernets.targets import TargetNet, get_target
from hypernets.training import predict
from hypernets.validation import check_bool, check_int, check_positive, check_real

# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def toy_settings(noise_stds: Sequence[float], targets: Sequence[str]) -> list[tuple[float, str]]:
    """Pair each noise level with its target network name, checking both lists.

    The papers' settings are ``noise_stds=[3, 9]`` with ``targets=["toy_hypergan", "toy_bbh"]``.
    """
    noise_stds, targets = list(noise_stds), list(targets)
    if not noise_stds or len(noise_stds) != len(targets):
        raise ValueError(f"noise_stds and targets must be non-empty lists of the same length (one target "
                         f"network per noise level), got {noise_stds} and {targets}")
    noise_stds = [check_positive("every noise std", noise_std) for noise_std in noise_stds]
    for target in targets:
        get_target(target)  # raises naming the valid targets
    return [(float(noise_std), target) for noise_std, target in zip(noise_stds, targets)]


def options_table(methods: Sequence[str], options: Mapping[str, Mapping[str, Any]] | None) -> pd.DataFrame:
    """The options of each method that differ from its defaults, as ``name=value`` text (empty: none)."""
    options = options or {}
    rows = {name: ", ".join(f"{key}={value}" for key, value in options.get(name, {}).items()) for name in methods}
    return pd.DataFrame({"options": rows}).rename_axis("method")


# ---------------------------------------------------------------------------------------------
# Scaling and held-out data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Standardizer:
    """The affine maps x -> (x - x_mean) / x_std and y -> (y - y_mean) / y_std, and back.

    :meth:`fit` takes the means and population standard deviations of the training set, as
    Hernandez-Lobato & Adams's PBP code does (``PBP_net.py``: ``np.mean`` and ``np.std``); the
    default is the identity (the raw problem). A Gaussian noise std sigma on the original
    scale is ``sigma / y_std`` on the standardised one (:meth:`noise_std`).
    """

    x_mean: float = 0.0
    x_std: float = 1.0
    y_mean: float = 0.0
    y_std: float = 1.0

    def __post_init__(self):
        for name in ("x_mean", "y_mean"):
            check_real(name, getattr(self, name))
        for name in ("x_std", "y_std"):
            check_positive(name, getattr(self, name))

    @classmethod
    def fit(cls, x: Tensor, y: Tensor) -> Standardizer:
        """Means and population stds of the training inputs ``x`` and targets ``y`` ([n, 1] each)."""
        if x.ndim != 2 or x.shape[1] != 1 or y.shape != x.shape or len(x) < 2:
            raise ValueError(f"x and y must both have shape [n, 1] with n >= 2, got {tuple(x.shape)} and "
                             f"{tuple(y.shape)}")
        stats = {}
        for name, values in (("x", x), ("y", y)):
            values = values.detach().to(torch.float64)
            std = float(values.std(correction=0))
            if not std > 0:
                raise ValueError(f"the training {name} are all equal ({float(values[0, 0])!r}): a standard "
                                 "deviation of 0 cannot be standardised; pass standardize=False")
            stats[f"{name}_mean"], stats[f"{name}_std"] = float(values.mean()), std
        return cls(**stats)

    @property
    def is_identity(self) -> bool:
        return (self.x_mean, self.x_std, self.y_mean, self.y_std) == (0.0, 1.0, 0.0, 1.0)

    def x(self, x: Tensor) -> Tensor:
        """Inputs on the standardised scale."""
        return (x - self.x_mean) / self.x_std

    def y(self, y: Tensor) -> Tensor:
        """Targets on the standardised scale."""
        return (y - self.y_mean) / self.y_std

    def y_back(self, values: Tensor) -> Tensor:
        """Outputs (function values) on the standardised scale back on the original one."""
        return values * self.y_std + self.y_mean

    def noise_std(self, noise_std: float) -> float:
        """A noise std on the original scale, on the standardised one."""
        return check_positive("noise_std", noise_std) / self.y_std


def held_out_seed(seed: int) -> int:
    """The 32-bit seed of the held-out draw for training ``seed``: a stream of its own, never ``seed``.

    (torch's CPU generator keeps only the low 32 bits of a seed, so an offset such as
    ``seed + 2**32`` would repeat the training points; NumPy's ``SeedSequence`` mixes the seed
    with a stream tag instead.)
    """
    state = int(np.random.SeedSequence([check_int("seed", seed, minimum=0), 1]).generate_state(1)[0])
    return state if state != seed else state ^ 1


@dataclass(frozen=True)
class HeldOut:
    """Fresh noisy points inside the data (``x_range``) and outside it (the rest of the grid's range)."""

    x_in: Tensor  # [n, 1]
    y_in: Tensor
    x_out: Tensor
    y_out: Tensor


def held_out_points(data: ToyRegression, n_points: int, seed: int = 0) -> HeldOut:
    """``n_points`` new points uniform on ``data.x_range`` and ``n_points`` uniform on the grid's range outside it.

    Targets are the true function plus N(0, ``data.noise_std``^2) noise, drawn from a private
    generator seeded with :func:`held_out_seed` (independent of the training draw with the
    same ``seed``).
    """
    n_points = check_int("n_held_out", n_points, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    low, high = data.x_range
    grid_low, grid_high = float(data.x_grid.min()), float(data.x_grid.max())
    left, right = max(low - grid_low, 0.0), max(grid_high - high, 0.0)
    if left + right == 0:
        raise ValueError(f"the grid {grid_low, grid_high} has no room outside the data range {data.x_range}")
    generator = torch.Generator().manual_seed(held_out_seed(seed))
    x_in = low + (high - low) * torch.rand(n_points, 1, generator=generator)
    u = (left + right) * torch.rand(n_points, 1, generator=generator)
    x_out = torch.where(u < left, grid_low + u, high + (u - left))
    y_in = data.true_function(x_in) + data.noise_std * torch.randn(n_points, 1, generator=generator)
    y_out = data.true_function(x_out) + data.noise_std * torch.randn(n_points, 1, generator=generator)
    return HeldOut(x_in=x_in, y_in=y_in, x_out=x_out, y_out=y_out)


def function_samples(trained: Mapping[str, TrainedMethod], reference: ReferencePosterior | None,
                     x: Tensor, n_samples: int, scaler: Standardizer | None = None) -> dict[str, Tensor]:
    """Sampled functions on ``x`` ([G, 1], original scale) per label: [S, G] on the original scale.

    The networks see ``scaler.x(x)`` and their outputs come back through ``scaler.y_back``
    (no scaler: the identity). All NUTS draws are used for the reference. Torch's global RNG
    must be seeded by the caller for reproducible samples.
    """
    scaler = scaler or Standardizer()
    inputs = scaler.x(x)
    samples = {}
    for run in trained.values():
        values = predict(run.method, inputs, run.method.n_distinct_nets(n_samples))[..., 0]
        samples[run.label] = scaler.y_back(values)
    if reference is not None:
        with torch.no_grad():
            samples[REFERENCE_LABEL] = scaler.y_back(reference.target(reference.params, inputs)[..., 0])
    return samples


# ---------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------

#: The point sets every method is evaluated on besides the grid: name -> (x, y) of a result.
POINT_SETS = ("train", "inside", "outside")


@dataclass
class ToyResult:
    """One setting's data, scaling, trained methods, NUTS posterior and sampled functions.

    ``samples`` holds the sampled functions on ``data.x_grid``; ``point_samples[name]`` those
    on the training points (``"train"``) and on the held-out points inside and outside the
    data (``"inside"``, ``"outside"``), all from the same sampled networks and on the
    original scale.
    """

    data: ToyRegression
    target: TargetNet
    trained: dict[str, TrainedMethod]
    reference: ReferencePosterior
    samples: dict[str, Tensor]  # label -> [S, G] on data.x_grid
    scaler: Standardizer
    held_out: HeldOut
    point_samples: dict[str, dict[str, Tensor]]  # point set -> label -> [S, n]

    def points(self, name: str) -> tuple[Tensor, Tensor]:
        """Inputs and targets of point set ``name`` (one of :data:`POINT_SETS`), original scale."""
        sets = {"train": (self.data.x, self.data.y), "inside": (self.held_out.x_in, self.held_out.y_in),
                "outside": (self.held_out.x_out, self.held_out.y_out)}
        if name not in sets:
            raise ValueError(f"point set must be one of {', '.join(sets)}; got {name!r}")
        return sets[name]


def _completed(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def run_toy(settings: Sequence[tuple[float, str]], methods: Sequence[str], *, steps: int, n_samples: int,
            nuts: Mapping[str, int], nuts_processes: int = 0, device: str | torch.device = "cpu",
            seed: int = 0, prior_std: float = 1.0, standardize: bool = True, n_held_out: int = 500,
            options: Mapping[str, Mapping[str, Any]] | None = None) -> list[ToyResult]:
    """For each (noise std, target name) of ``settings``: train ``methods``, sample NUTS, sample every predictive.

    With ``standardize`` (the default) the networks and NUTS see the data standardised by
    the training set's means and stds (:class:`Standardizer`), with the likelihood's noise
    std sigma / std(y); ``False`` fits the raw data. Either way the returned samples are on
    the original scale.

    ``nuts`` holds the keyword arguments of :func:`~hypernets.reference_posterior.nuts_posterior`
    (``num_chains``, ``num_samples``, ``warmup_steps``, ``max_tree_depth``); its prior is
    N(0, ``prior_std``^2) on the scale the networks see, the prior of the methods that have
    one (MAP, MC dropout, ensembles, Bayes by Backprop, Bayes by Hypernet and the Bayesian
    hypernetwork use prior_std = 1 unless ``options`` say otherwise). Each data set is drawn
    with ``seed``, and ``n_held_out`` fresh points inside and outside the data with
    :func:`held_out_points`.

    NUTS runs on the CPU. With ``nuts_processes`` > 0 the reference posteriors are sampled in
    that many worker processes while the methods train (on ``device``), which hides NUTS's
    time behind training; 0 samples them in this process first. Both give the same draws.
    The workers sample on one thread each, and this process runs the toy on one thread too:
    together they do not oversubscribe the cores, the toy's tiny nets gain nothing from a
    second thread, and the numbers do not depend on where NUTS ran.
    """
    check_int("nuts_processes", nuts_processes, minimum=0)
    check_bool("standardize", standardize)
    check_int("n_held_out", n_held_out, minimum=1)
    check_int("n_samples", n_samples, minimum=1)
    problems = []
    for noise_std, name in settings:
        data = toy_regression(noise_std=noise_std, seed=seed)
        scaler = Standardizer.fit(data.x, data.y) if standardize else Standardizer()
        problems.append((data, scaler, get_target(name), Gaussian(scaler.noise_std(noise_std))))
    jobs = [dict(target=target, likelihood=likelihood, x=scaler.x(data.x), y=scaler.y(data.y),
                 prior_std=prior_std, seed=seed, **nuts)
            for data, scaler, target, likelihood in problems]
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(1)
        if nuts_processes:
            pool = stack.enter_context(ProcessPoolExecutor(nuts_processes, mp_context=mp.get_context("spawn")))
            futures = [pool.submit(nuts_posterior, **job) for job in jobs]
        else:
            futures = [_completed(nuts_posterior(**job)) for job in jobs]
        trained = [train_methods(methods, target, scaler.x(data.x), scaler.y(data.y), steps=steps,
                                 batch_size=len(data.x), likelihood=likelihood, device=device, seed=seed,
                                 options=options)
                   for data, scaler, target, likelihood in problems]
        references = [future.result() for future in futures]
        results = []
        for (data, scaler, target, _), runs, reference in zip(problems, trained, references):
            held_out = held_out_points(data, n_held_out, seed)
            # One call per method, so that the grid and every point set see the same sampled nets.
            parts = {"grid": data.x_grid, "train": data.x, "inside": held_out.x_in, "outside": held_out.x_out}
            with seeded(seed, device):
                joint = function_samples(runs, reference, torch.cat(list(parts.values())), n_samples, scaler)
            sizes = [len(x) for x in parts.values()]
            split = {name: {label: values.split(sizes, dim=1)[i] for label, values in joint.items()}
                     for i, name in enumerate(parts)}
            grid = split.pop("grid")
            results.append(ToyResult(data, target, runs, reference, grid, scaler, held_out, split))
    return results


# ---------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------


def std_table(samples: Mapping[str, Tensor], inside: Tensor,
              reference: str = REFERENCE_LABEL) -> pd.DataFrame:
    """Mean predictive std of the sampled functions inside and outside the data, and as ratios to the reference's.

    ``samples`` maps labels to [S, G] function values on a grid, ``inside`` is the bool mask
    of the grid points inside the data (:meth:`hypernets.data.ToyRegression.inside`); the std
    per grid point is the population std over the S samples
    (:func:`hypernets.metrics.std_inside_outside`). One row per label, indexed by ``method``:
    ``std in``, ``std out``, their ratio ``out / in`` (the papers' claim: larger than 1), and
    ``std in / ref``, ``std out / ref`` (1 for a method that matches the reference posterior).
    """
    if reference not in samples:
        raise ValueError(f"samples must include the reference {reference!r}; got {sorted(samples)}")
    rows = {}
    for label, values in samples.items():
        if values.shape[-1] != inside.numel():
            raise ValueError(f"samples[{label!r}] has {values.shape[-1]} grid points, inside has "
                             f"{inside.numel()}")
        std_in, std_out = metrics.std_inside_outside(values, inside)
        rows[label] = {"std in": std_in, "std out": std_out}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    table["out / in"] = table["std out"] / table["std in"]
    table["std in / ref"] = table["std in"] / table.loc[reference, "std in"]
    table["std out / ref"] = table["std out"] / table.loc[reference, "std out"]
    return table


def summary_table(results: Sequence[ToyResult]) -> pd.DataFrame:
    """:func:`std_table` of every setting, stacked, with the noise std and target as index levels."""
    tables = []
    for result in results:
        table = std_table(result.samples, result.data.inside(result.data.x_grid)).reset_index()
        table.insert(0, "target", result.target.name)
        table.insert(0, "sigma", result.data.noise_std)
        tables.append(table)
    return pd.concat(tables, ignore_index=True).set_index(["sigma", "target", "method"])


def convergence_table(results: Sequence[ToyResult]) -> pd.DataFrame:
    """NUTS diagnostics per setting: R-hat and ESS of the weights and of f on the grid, divergences, time."""
    tables = []
    for result in results:
        reference = result.reference
        table = reference.convergence({
            "weights": result.target.flatten(reference.params),
            "f(x) on the grid": result.samples[REFERENCE_LABEL],
        }).reset_index()
        table.insert(0, "target", result.target.name)
        table.insert(0, "sigma", result.data.noise_std)
        table["chains"] = reference.num_chains
        table["warmup"] = reference.warmup_steps
        table["divergences"] = reference.divergences
        table["step size"] = reference.step_size
        table["time (s)"] = reference.wall_time_s
        tables.append(table)
    return pd.concat(tables, ignore_index=True).set_index(["sigma", "target", "quantity"])


def training_table(results: Sequence[ToyResult]) -> pd.DataFrame:
    """Per setting and method: steps, final loss and NLL per point, training RMSE, training time.

    ``loss`` and ``nll`` are the training loop's, on the scale the networks are fitted on (the
    standardised one unless ``standardize=False``). ``train RMSE`` is the RMSE of the
    predictive mean on the 20 training points on the original scale, and ``RMSE / sigma`` its
    ratio to the noise std: about 1 for a model that fits the data down to the noise (a little
    below 1 for a flexible one), well above 1 for one that underfits.
    """
    rows = []
    for result in results:
        _, y = result.points("train")
        samples = result.point_samples["train"]
        for run in result.trained.values():
            last = run.history[-1]
            rmse = metrics.rmse(samples[run.label], y)
            rows.append({"sigma": result.data.noise_std, "target": result.target.name, "method": run.label,
                         "steps": last["step"], "loss": last["loss"], "nll": last.get("nll", float("nan")),
                         "train RMSE": rmse, "RMSE / sigma": rmse / result.data.noise_std,
                         "time (s)": run.train_time_s})
    return pd.DataFrame(rows).set_index(["sigma", "target", "method"])


#: The row of :func:`held_out_table` that predicts with the true function and the true noise:
#: the best any method can do in expectation.
ORACLE_LABEL = "true function"


def held_out_table(results: Sequence[ToyResult], level: float = 0.95) -> pd.DataFrame:
    """Held-out NLL, interval coverage and RMSE inside and outside the data, per setting and method.

    The predictive of each method (and of NUTS) at a point is the Gaussian with the mean and
    variance of its sampled functions plus the noise variance sigma^2
    (:func:`hypernets.metrics.gaussian_nll`), on the original scale; ``NLL in`` / ``NLL out``
    are its mean negative log-likelihood (nats) on the fresh points inside / outside the
    data, ``coverage in`` / ``coverage out`` the fraction of those points inside its central
    ``level`` interval (:func:`hypernets.metrics.interval_coverage`; ``level`` for a
    calibrated predictive), ``RMSE in`` / ``RMSE out`` the error of its mean. The last row of
    each setting, :data:`ORACLE_LABEL`, predicts N(x^3, sigma^2): the best NLL possible in
    expectation.
    """
    level = check_real("level", level, minimum=0.0, maximum=1.0, exclusive_minimum=True, exclusive_maximum=True)
    rows = []
    for result in results:
        sigma = result.data.noise_std
        labels = list(result.samples)
        for label in labels + [ORACLE_LABEL]:
            row = {"sigma": sigma, "target": result.target.name, "method": label}
            for name, short in (("inside", "in"), ("outside", "out")):
                x, y = result.points(name)
                if label == ORACLE_LABEL:
                    values = result.data.true_function(x)[:, 0].unsqueeze(0)
                else:
                    values = result.point_samples[name][label]
                row[f"NLL {short}"] = metrics.gaussian_nll(values, y, noise_std=sigma)
                row[f"coverage {short}"] = metrics.interval_coverage(values, y, levels=(level,),
                                                                     noise_std=sigma)[level]
                row[f"RMSE {short}"] = metrics.rmse(values, y)
            rows.append(row)
    return pd.DataFrame(rows).set_index(["sigma", "target", "method"])


# ---------------------------------------------------------------------------------------------
# Conclusion
# ---------------------------------------------------------------------------------------------


#: MAP's training RMSE / sigma up to which the conclusion calls the problem well posed: a
#: model that fits the data down to the noise has a ratio near 1 (a little below for a
#: flexible one, which fits some of the noise too).
WELL_POSED_RMSE = 1.25


def matches_reference(ratio: float, factor: float = 2.0) -> bool:
    """Whether a predictive-std ratio to NUTS's lies in [1 / factor, factor] (``factor`` > 1)."""
    factor = check_real("match_factor", factor, minimum=1.0, exclusive_minimum=True)
    return 1.0 / factor <= ratio <= factor


def _region_sentence(table: pd.DataFrame, column: str, where: str, factor: float) -> str:
    """'Inside the data, A (1.10) and B (0.80) match NUTS; C (0.20) is overconfident; D (4.1) too uncertain.'"""
    ratios = table[column].sort_values(ascending=False)
    match = [f"{label} ({ratio:.2f})" for label, ratio in ratios.items() if matches_reference(ratio, factor)]
    wide = [f"{label} ({ratio:.2f})" for label, ratio in ratios.items() if ratio > factor]
    narrow = [f"{label} ({ratio:.2f})" for label, ratio in ratios.items() if ratio < 1.0 / factor]
    parts = [f"{prose_list(match)} match{'es' if len(match) == 1 else ''} NUTS" if match else "no method matches NUTS"]
    if narrow:
        parts.append(f"{prose_list(narrow)} {'is' if len(narrow) == 1 else 'are'} overconfident")
    if wide:
        parts.append(f"{prose_list(wide)} {'is' if len(wide) == 1 else 'are'} too uncertain")
    return f"{where}, " + "; ".join(parts) + "."


def conclusion(results: Sequence[ToyResult], *, factor: float = 2.0, level: float = 0.95,
               coverage_tolerance: float = 0.10) -> str:
    """The page's conclusion as Markdown prose, computed from the tables of ``results``.

    The rule: a method matches NUTS in a region (inside the data, outside it) if the ratio of
    its mean predictive std to NUTS's there lies in [1 / ``factor``, ``factor``]
    (:func:`matches_reference`); below that it is overconfident, above too uncertain. Per
    setting the prose gives those ratios, MAP's training RMSE against sigma (well posed up to
    :data:`WELL_POSED_RMSE` sigma), NUTS's held-out NLL next to the true function's, and which methods' central
    ``level`` intervals cover fewer than ``level - coverage_tolerance`` of the held-out points;
    then the methods that match NUTS in every setting.
    """
    check_real("coverage_tolerance", coverage_tolerance, minimum=0.0, maximum=1.0)
    summary = summary_table(results)
    held_out = held_out_table(results, level)
    training = training_table(results)
    paragraphs = [(
        f"*Rule*: a method matches NUTS in a region if its mean predictive std there is within a factor "
        f"{factor:g} of NUTS's (ratio in [{1 / factor:.2f}, {factor:.2f}]); ratios in brackets, largest "
        f"first. A predictive *undercovers* if its {level:.0%} interval holds fewer than "
        f"{level - coverage_tolerance:.0%} of the held-out points. The problem is well posed if MAP's "
        f"training RMSE is at most {WELL_POSED_RMSE:g} σ."
    )]
    verdicts: dict[str, list[tuple[bool, bool]]] = {}
    for (sigma, target), table in summary.groupby(level=["sigma", "target"], sort=False):
        table = table.droplevel(["sigma", "target"]).drop(index=REFERENCE_LABEL)
        scores = held_out.loc[(sigma, target)]
        lines = [f"**σ = {sigma:g}** (`{target}`)."]
        fits = training.loc[(sigma, target)]
        if "MAP" in fits.index:
            ratio = fits.loc["MAP", "RMSE / sigma"]
            verdict = ("so the network fits the data down to the noise" if ratio <= WELL_POSED_RMSE
                       else "so MAP underfits (too few steps, or a model that cannot fit the data, whose exact "
                            "posterior NUTS then samples)")
            lines.append(f"MAP's training RMSE is {fits.loc['MAP', 'train RMSE']:.2f} ({ratio:.2f} σ), {verdict}.")
        lines.append(_region_sentence(table, "std in / ref", "Inside the data", factor))
        lines.append(_region_sentence(table, "std out / ref", "Outside it", factor))
        spread = table[table["std in"] > 0]
        flat = [f"{label} ({ratio:.2f})" for label, ratio in spread["out / in"].items() if not ratio > 1]
        nuts_growth = summary.loc[(sigma, target, REFERENCE_LABEL), "out / in"]
        lines.append(
            f"The papers' claim, a larger std outside the data than inside, holds for NUTS (out / in = "
            f"{nuts_growth:.2f}) and for " + (f"every method with a spread except {prose_list(flat)}." if flat
                                             else "every method with a spread."))
        ref, oracle = scores.loc[REFERENCE_LABEL], scores.loc[ORACLE_LABEL]
        methods = scores.drop(index=[REFERENCE_LABEL, ORACLE_LABEL])
        best_in, best_out = methods["NLL in"].idxmin(), methods["NLL out"].idxmin()
        lines.append(
            f"Held-out NLL (nats per point, inside / outside): NUTS {ref['NLL in']:.2f} / {ref['NLL out']:.2f}, the "
            f"true function with the true noise {oracle['NLL in']:.2f} / {oracle['NLL out']:.2f}; the lowest among "
            f"the methods is {best_in}'s inside ({methods.loc[best_in, 'NLL in']:.2f}) and {best_out}'s outside "
            f"({methods.loc[best_out, 'NLL out']:.2f}).")
        floor = level - coverage_tolerance
        short = {region: [f"{label} ({value:.2f})" for label, value in methods[f"coverage {region}"].items()
                          if value < floor]
                 for region in ("in", "out")}
        lines.append(
            f"NUTS's {level:.0%} interval covers {ref['coverage in']:.2f} of the points inside and "
            f"{ref['coverage out']:.2f} outside; the methods' intervals that undercover inside: "
            f"{prose_list(short['in']) or 'none'}; outside: {prose_list(short['out']) or 'none'}.")
        paragraphs.append(" ".join(lines))
        for label, row in table.iterrows():
            verdicts.setdefault(label, []).append((matches_reference(row["std in / ref"], factor),
                                                   matches_reference(row["std out / ref"], factor)))
    groups = {"inside and outside the data": [], "inside only": [], "outside only": [], "in neither region": []}
    for label, flags in verdicts.items():
        inside, outside = all(flag[0] for flag in flags), all(flag[1] for flag in flags)
        key = ("inside and outside the data" if inside and outside else "inside only" if inside
               else "outside only" if outside else "in neither region")
        groups[key].append(label)
    settings = ("both settings" if len(results) == 2 else f"all {len(results)} settings"
                if len(results) > 2 else "this setting")
    paragraphs.append(
        f"**In {settings}**, the methods that match NUTS " + "; ".join(
            f"{where}: {prose_list(labels) or 'none'}" for where, labels in groups.items()) + ".")
    return "\n\n".join(paragraphs)


# ---------------------------------------------------------------------------------------------
# Figure
# ---------------------------------------------------------------------------------------------


def plot_predictive(ax: plt.Axes, data: ToyRegression, values: Tensor, title: str,
                    ylim: tuple[float, float]) -> plt.Axes:
    """One panel: data, true function, predictive mean and its 1, 2, 3 std bands on the grid."""
    palette = sns.color_palette()
    grid = data.x_grid.reshape(-1).numpy()
    mean, std = (t.numpy() for t in metrics.predictive_mean_std(values, noise_std=0.0))
    for k, alpha in ((3, 0.12), (2, 0.2), (1, 0.3)):
        ax.fill_between(grid, mean - k * std, mean + k * std, color=palette[0], alpha=alpha, linewidth=0,
                        label=f"±{k} std")
    ax.plot(grid, data.true_function(data.x_grid.reshape(-1)).numpy(), color="black", linewidth=1,
            linestyle="--", label="$x^3$")
    ax.plot(grid, mean, color=palette[0], linewidth=1.5, label="mean")
    ax.scatter(data.x.reshape(-1).numpy(), data.y.reshape(-1).numpy(), color=palette[3], s=10, zorder=3,
               label="data")
    for edge in data.x_range:
        ax.axvline(edge, color="grey", linewidth=0.5, linestyle=":")
    ax.set_ylim(*ylim)
    ax.set_xlim(grid[0], grid[-1])
    ax.set_title(title)
    return ax


def plot_toy(result: ToyResult, n_cols: int = 3) -> plt.Figure:
    """A panel per method and one for NUTS: predictive mean and ±1/2/3 std of the sampled functions.

    The y-axis spans ±1.5 times the true function at the edge of the training range, so that
    the bands beyond it stay visible (the true function leaves the panel near |x| = 4.6).
    """
    labels = list(result.samples)
    n_rows = int(np.ceil(len(labels) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.0 * n_cols, 3.0 * n_rows), sharex=True, sharey=True,
                             squeeze=False)
    edge = max(abs(end) for end in result.data.x_range)
    bound = 1.5 * float(result.data.true_function(torch.tensor(edge)))
    for ax, label in zip(axes.flat, labels):
        plot_predictive(ax, result.data, result.samples[label], label, (-bound, bound))
    for ax in axes.flat[len(labels):]:
        ax.set_visible(False)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), frameon=False)
    fig.suptitle(f"$\\sigma = {result.data.noise_std:g}$, target {result.target.name}")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def plot_std_profiles(result: ToyResult) -> plt.Figure:
    """Predictive std of the sampled functions along the grid, every method with NUTS's (log scale).

    Methods whose sampled functions are all the same (MAP) have no std to show and are left out.
    """
    fig, ax = plt.subplots(figsize=(7, 3.8))
    grid = result.data.x_grid.reshape(-1).numpy()
    palette = sns.color_palette("tab10", len(result.samples))
    for color, (label, values) in zip(palette, result.samples.items()):
        std = metrics.predictive_mean_std(values, noise_std=0.0)[1].numpy()
        if not std.any():
            continue
        is_reference = label == REFERENCE_LABEL
        ax.plot(grid, std, label=label, color="black" if is_reference else color,
                linewidth=2.5 if is_reference else 1.2, linestyle="--" if is_reference else "-")
    for edge in result.data.x_range:
        ax.axvline(edge, color="grey", linewidth=0.5, linestyle=":")
    ax.set_yscale("log")
    ax.set_xlabel("x")
    ax.set_ylabel("std of f(x)")
    ax.set_title(f"$\\sigma = {result.data.noise_std:g}$, target {result.target.name}")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig
