"""The cubic toy: every method's predictive on [-6, 6] beside a NUTS reference posterior.

HyperGAN (sigma = 3, 1-200-1 ELU net) and Bayes by Hypernet (sigma = 9, 1-100-1 ReLU net) show
the predictive of y = x^3 + noise from 20 points in [-4, 4]: a good posterior is narrow near
the data and widens outside it. Beyond the papers, each method's predictive standard
deviation is compared with that of the exact posterior of the same network under the same
prior and likelihood, sampled with NUTS (:mod:`hypernets.reference_posterior`).

The standard deviations here are those of the sampled functions f_s(x) (the epistemic part);
the Gaussian observation noise, the same sigma for every method, is left out so that the
comparison is not dominated by it.

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
from hypernets.validation import check_int, check_positive

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


def function_samples(trained: Mapping[str, TrainedMethod], reference: ReferencePosterior | None,
                     x: Tensor, n_samples: int) -> dict[str, Tensor]:
    """Sampled functions on ``x`` ([G, 1]) per label: [S, G] (all NUTS draws for the reference).

    Torch's global RNG must be seeded by the caller for reproducible samples.
    """
    samples = {}
    for run in trained.values():
        samples[run.label] = predict(run.method, x, run.method.n_distinct_nets(n_samples))[..., 0]
    if reference is not None:
        with torch.no_grad():
            samples[REFERENCE_LABEL] = reference.target(reference.params, x)[..., 0]
    return samples


# ---------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------


@dataclass
class ToyResult:
    """One setting's data, trained methods, NUTS posterior and sampled functions on the grid."""

    data: ToyRegression
    target: TargetNet
    trained: dict[str, TrainedMethod]
    reference: ReferencePosterior
    samples: dict[str, Tensor]  # label -> [S, G] on data.x_grid


def _completed(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def run_toy(settings: Sequence[tuple[float, str]], methods: Sequence[str], *, steps: int, n_samples: int,
            nuts: Mapping[str, int], nuts_processes: int = 0, device: str | torch.device = "cpu",
            seed: int = 0, prior_std: float = 1.0,
            options: Mapping[str, Mapping[str, Any]] | None = None) -> list[ToyResult]:
    """For each (noise std, target name) of ``settings``: train ``methods``, sample NUTS, sample every predictive.

    ``nuts`` holds the keyword arguments of :func:`~hypernets.reference_posterior.nuts_posterior`
    (``num_chains``, ``num_samples``, ``warmup_steps``, ``max_tree_depth``); its prior is
    N(0, ``prior_std``^2), the prior of the methods that have one (MAP, MC dropout, ensembles,
    Bayes by Backprop, Bayes by Hypernet and the Bayesian hypernetwork use prior_std = 1 unless
    ``options`` say otherwise). Each data set is drawn with ``seed``.

    NUTS runs on the CPU. With ``nuts_processes`` > 0 the reference posteriors are sampled in
    that many worker processes while the methods train (on ``device``), which hides NUTS's
    time behind training; 0 samples them in this process first. Both give the same draws.
    The workers sample on one thread each, and this process runs the toy on one thread too:
    together they do not oversubscribe the cores, the toy's tiny nets gain nothing from a
    second thread, and the numbers do not depend on where NUTS ran.
    """
    check_int("nuts_processes", nuts_processes, minimum=0)
    problems = [(toy_regression(noise_std=noise_std, seed=seed), get_target(name), Gaussian(noise_std))
                for noise_std, name in settings]
    jobs = [dict(target=target, likelihood=likelihood, x=data.x, y=data.y, prior_std=prior_std, seed=seed, **nuts)
            for data, target, likelihood in problems]
    with contextlib.ExitStack() as stack:
        stack.callback(torch.set_num_threads, torch.get_num_threads())
        torch.set_num_threads(1)
        if nuts_processes:
            pool = stack.enter_context(ProcessPoolExecutor(nuts_processes, mp_context=mp.get_context("spawn")))
            futures = [pool.submit(nuts_posterior, **job) for job in jobs]
        else:
            futures = [_completed(nuts_posterior(**job)) for job in jobs]
        trained = [train_methods(methods, target, data.x, data.y, steps=steps, batch_size=len(data.x),
                                 likelihood=likelihood, device=device, seed=seed, options=options)
                   for data, target, likelihood in problems]
        references = [future.result() for future in futures]
        results = []
        for (data, target, _), runs, reference in zip(problems, trained, references):
            with seeded(seed, device):
                samples = function_samples(runs, reference, data.x_grid, n_samples)
            results.append(ToyResult(data, target, runs, reference, samples))
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
    """Per setting and method: steps, final training loss and NLL per point, training time."""
    rows = []
    for result in results:
        for run in result.trained.values():
            last = run.history[-1]
            rows.append({"sigma": result.data.noise_std, "target": result.target.name, "method": run.label,
                         "steps": last["step"], "loss": last["loss"], "nll": last.get("nll", float("nan")),
                         "time (s)": run.train_time_s})
    return pd.DataFrame(rows).set_index(["sigma", "target", "method"])


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
