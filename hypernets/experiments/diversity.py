"""HyperGAN's diversity ablation on MNIST and HyperGAN-MI's regulariser on the cubic toy.

Two experiments share one question: what keeps the networks a hypernetwork generates
different from each other?

* **Ablation** (HyperGAN, Ratzlaff & Fuxin 2019): HyperGAN as published, without its
  discriminator, and without its mixer (:data:`ABLATION_VARIANTS`), trained on MNIST with the
  HyperGAN target ``mnist_small_conv``. After every ``eval_every`` epochs (and once before
  training, epoch 0) each variant is scored on test images and on the diversity of 100 sampled
  weight sets (:func:`hypernets.metrics.weight_norm_diversity`: std / mean of the L2 norms of
  the samples, averaged over the weight tensors). :func:`ablation_claims` checks the paper's
  three statements against the numbers.
* **MI toy** (HyperGAN-MI): the same HyperGAN-MI on the cubic toy (sigma = 3, and the
  reference's default 9) with its mutual information weight beta and with beta = 0
  (:data:`MI_VARIANTS`), for several training seeds; the spread of the sampled functions inside
  and outside the training inputs, the weight diversity, and the test loss against the number
  of sampled nets (:data:`LOSS_NETS`).

Every evaluation draws its sampled nets from a generator forked off torch's global RNG and
seeded with the run's seed, so evaluating does not change training and all epochs are scored
with the same noise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
from hypernets.evaluation import (  # claims_markdown: the notebook reads the verdicts here
    claims_markdown, count_of, equivalence_verdict, ordering_verdict, ranking_prose,
    seed_summary, verdict_prose)
from hypernets.likelihoods import Gaussian
from hypernets.methods.base import Method
from hypernets.plots import figure_legend, metric_panels, plot_toy_data
from hypernets.seeding import seeded
from hypernets.targets import TargetNet, get_target
from hypernets.runs import RunRequest, train_runs
from hypernets.training import predict, tensor_digest
from hypernets.validation import check_int, check_int_list, check_positive

__all__ = [
    "ABLATION_VARIANTS",
    "MI_VARIANTS",
    "TENSOR_PREFIX",
    "AblationEvaluator",
    "WeightDiversity",
    "ablation_claims",
    "ablation_over_seeds",
    "ablation_runs",
    "ablation_summary",
    "band_widths",
    "claims_markdown",
    "conclusion",
    "diversity_by_tensor",
    "LOSS_NETS",
    "MI_TOY_METRICS",
    "MiToyStudy",
    "mi_toy_claims",
    "mi_toy_groups",
    "mi_toy_losses",
    "mi_toy_over_seeds",
    "mi_toy_runs",
    "mi_toy_summary",
    "plot_mi_toy_losses",
    "run_mi_toy_study",
    "toy_test_set",
    "plot_ablation",
    "plot_diversity_by_tensor",
    "plot_mi_toy_bands",
    "run_ablation",
    "run_mi_toy",
]

#: The ablation's variants: name -> HyperGAN switches. Without the mixer each generator gets
#: its own N(0, I) noise, which is already the prior, so there is no discriminator either.
ABLATION_VARIANTS: dict[str, dict[str, bool]] = {
    "full": {"use_mixer": True, "use_discriminator": True},
    "no discriminator": {"use_mixer": True, "use_discriminator": False},
    "no mixer": {"use_mixer": False, "use_discriminator": False},
}

#: The MI toy's variants: name -> MI weight beta (None: the weight given to :func:`run_mi_toy`).
MI_VARIANTS: dict[str, float | None] = {"HyperGAN-MI": None, "no regulariser": 0.0}

#: Prefix of the history columns holding the diversity of one weight tensor.
TENSOR_PREFIX = "diversity:"

_ABLATION_COLUMNS = {"accuracy": "test accuracy (mean predictive)",
                     "single_net_accuracy": "test accuracy (single nets, mean)",
                     "diversity": "diversity (std / mean of weight norms)"}


def _check_variants(variants: Sequence[str], known: Mapping[str, Any], what: str) -> list[str]:
    if isinstance(variants, str) or not variants:
        raise ValueError(f"variants must be a non-empty list of {what} variants, got {variants!r}")
    unknown = [name for name in variants if name not in known]
    if unknown:
        raise ValueError(f"unknown {what} variant(s) {unknown}; known: {list(known)}")
    if len(set(variants)) != len(variants):
        raise ValueError(f"variants lists a variant twice: {list(variants)}")
    return list(variants)


# ---------------------------------------------------------------------------------------------
# Ablation on MNIST
# ---------------------------------------------------------------------------------------------


class AblationEvaluator:
    """The per-epoch evaluation of the ablation (the ``evaluate`` of its runs).

    Called with a method it gives ``accuracy`` (of the mean predictive of
    ``n_predict_samples`` sampled nets on ``x_test``), ``single_net_accuracy`` (the mean over
    those nets of each one's own accuracy), ``diversity`` (of ``n_diversity_samples`` sampled
    weight sets, the paper's 100) and the diversity of each weight tensor under the key
    ``TENSOR_PREFIX + name``. Its sampling uses a fork of the global RNG seeded with ``seed``,
    so it leaves training untouched.
    """

    def __init__(self, x_test: Tensor, y_test: Tensor, *, n_predict_samples: int,
                 n_diversity_samples: int = 100, batch_size: int = 1000, seed: int = 0):
        self.x_test, self.y_test = x_test, y_test
        self.n_predict_samples = check_int("n_predict_samples", n_predict_samples, minimum=1)
        self.n_diversity_samples = check_int("n_diversity_samples", n_diversity_samples, minimum=2)
        self.batch_size, self.seed = batch_size, seed

    def __call__(self, method: Method) -> dict[str, float]:
        with seeded(self.seed, method.device), torch.no_grad():
            params = method.sample_params(self.n_diversity_samples)
            probs = predict(method, self.x_test, self.n_predict_samples, batch_size=self.batch_size)
        y_test = self.y_test.to(probs.device)
        single = [metrics.accuracy(probs[s:s + 1], y_test) for s in range(probs.shape[0])]
        by_tensor = metrics.weight_norm_diversity_by_tensor(params)
        return {"accuracy": metrics.accuracy(probs, y_test),
                "single_net_accuracy": float(np.mean(single)),
                # weight_norm_diversity(params), without computing the norms a second time.
                "diversity": float(by_tensor.mean()),
                **{f"{TENSOR_PREFIX}{name}": float(value) for name, value in by_tensor.items()}}

    def store_key(self) -> dict[str, Any]:
        return {"kind": "hypergan_ablation", "x": tensor_digest(self.x_test)["sha256"],
                "y": tensor_digest(self.y_test)["sha256"],
                "n_predict_samples": self.n_predict_samples,
                "n_diversity_samples": self.n_diversity_samples, "batch_size": self.batch_size,
                "seed": self.seed}


def ablation_runs(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *,
                  variants: Sequence[str] = tuple(ABLATION_VARIANTS), epochs: int,
                  batch_size: int = 32, train_samples: int = 32, eval_every: int = 1,
                  n_predict_samples: int = 10, n_diversity_samples: int = 100,
                  target: str | TargetNet = "mnist_small_conv",
                  hypergan_options: Mapping[str, Any] | None = None,
                  device: str | torch.device = "cpu", seed: int = 0,
                  lr: float | None = None, eval_batch_size: int = 1000) -> list[RunRequest]:
    """The runs of :func:`run_ablation`, one per variant (its arguments)."""
    variants = _check_variants(variants, ABLATION_VARIANTS, "ablation")
    check_int("epochs", epochs, minimum=1)
    check_int("eval_every", eval_every, minimum=1)
    options = dict(hypergan_options or {})
    clashes = sorted(set(options) & {"use_mixer", "use_discriminator", "train_samples"})
    if clashes:
        raise ValueError(f"hypergan_options must not set {clashes}: the variants and "
                         "train_samples set them")
    target = get_target(target) if isinstance(target, str) else target
    evaluate = AblationEvaluator(x_test, y_test, n_predict_samples=n_predict_samples,
                                 n_diversity_samples=n_diversity_samples,
                                 batch_size=eval_batch_size, seed=seed)
    requests = []
    for name in variants:
        switches = ABLATION_VARIANTS[name]
        # The adversarial weight means nothing without a discriminator (HyperGAN refuses it).
        variant_options = {key: value for key, value in options.items()
                           if key != "beta" or switches["use_discriminator"]}
        run_options = {"method": "hypergan", "train_samples": train_samples, **switches,
                       **variant_options, **({} if lr is None else {"lr": lr})}
        requests.append(RunRequest(name, target, x_train, y_train, batch_size, epochs=epochs,
                                   device=device, seed=seed, options=run_options,
                                   evaluate=evaluate, eval_every=eval_every))
    return requests


def run_ablation(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *,
                 store: Any = "default", **settings: Any) -> pd.DataFrame:
    """Train (or load from the run store) each HyperGAN variant and score it over training.

    ``settings`` are those of :func:`ablation_runs`: ``variants`` are names of
    :data:`ABLATION_VARIANTS`; ``hypergan_options`` go to every variant's constructor (sizes),
    except ``beta``, the adversarial weight, which goes to the variants with a discriminator
    only. Each variant is built after seeding the global RNG with ``seed`` and trained with
    that seed, so all see the same mini-batches. ``train_samples`` nets are sampled per step
    (the paper's S = 32).

    Returns one row per (variant, evaluated epoch), epoch 0 being the untrained method:
    ``variant, epoch, step, accuracy, single_net_accuracy, diversity``, one
    ``diversity:<tensor>`` column per weight tensor, the epoch's mean training ``loss`` and
    ``nll`` (NaN at epoch 0) and the cumulative training time ``time_total_s``.
    """
    requests = ablation_runs(x_train, y_train, x_test, y_test, **settings)
    trained = train_runs(requests, store=store)
    rows = []
    for request in requests:
        with seeded(request.seed):
            untrained = request.build().to(request.device).eval()
        rows.append({"variant": request.name, "epoch": 0, "step": 0, **request.evaluate(untrained),
                     "time_total_s": 0.0})
        rows += [{"variant": request.name, **record} for record in trained[request.name].history
                 if "diversity" in record]
    table = pd.DataFrame(rows)
    tensors = [column for column in table.columns if column.startswith(TENSOR_PREFIX)]
    return table[["variant", "epoch", "step", "accuracy", "single_net_accuracy", "diversity",
                  *tensors, "loss", "nll", "time_total_s"]]


def ablation_summary(history: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: accuracies and diversity at the last epoch, diversity at 0 and 1.

    Columns: ``variant, epochs, accuracy, single_net_accuracy, diversity`` (last evaluation),
    ``diversity_init`` (epoch 0), ``diversity_first`` (the first evaluation after training
    started), ``diversity_change`` = diversity / diversity_first - 1 and ``diversity_vs_init``
    = diversity / diversity_init (how much of its starting diversity a variant keeps: the
    variants start at different diversities).
    """
    rows = []
    for name, part in history.groupby("variant", sort=False):
        part = part.sort_values("epoch")
        trained = part[part["epoch"] > 0]
        if trained.empty:
            raise ValueError(f"variant {name!r} has no evaluation after training started")
        last, first = trained.iloc[-1], trained.iloc[0]
        init = part[part["epoch"] == 0]
        rows.append({
            "variant": name, "epochs": int(last["epoch"]), "accuracy": float(last["accuracy"]),
            "single_net_accuracy": float(last["single_net_accuracy"]),
            "diversity": float(last["diversity"]),
            "diversity_init": float(init["diversity"].iloc[0]) if len(init) else math.nan,
            "diversity_first": float(first["diversity"]),
            "diversity_change": float(last["diversity"] / first["diversity"] - 1.0),
            "diversity_vs_init": (float(last["diversity"] / init["diversity"].iloc[0])
                                  if len(init) else math.nan),
        })
    return pd.DataFrame(rows)


def diversity_by_tensor(history: pd.DataFrame) -> pd.DataFrame:
    """Diversity of each weight tensor at each variant's last evaluation, tensors as columns.

    One row per variant (``variant`` and ``epoch``), one column per tensor in the target's
    order; read down a column to compare the variants on one layer. With a ``seed`` column
    (several training seeds) each value is the mean over the seeds' last evaluations.
    """
    tensors = [column for column in history.columns if column.startswith(TENSOR_PREFIX)]
    if not tensors:
        raise ValueError(f"history has no per-tensor diversity columns ({TENSOR_PREFIX}<name>)")
    keys = ["variant", "seed"] if "seed" in history.columns else ["variant"]
    last = history.sort_values("epoch").groupby(keys, sort=False).tail(1)
    order = list(dict.fromkeys(history["variant"]))
    table = (last.groupby("variant", sort=False)[["epoch", *tensors]].mean()
             .loc[order].reset_index())
    return table.rename(columns={column: column[len(TENSOR_PREFIX):] for column in tensors})


#: The :func:`ablation_summary` columns that a table over seeds averages.
SUMMARY_METRICS = ("accuracy", "single_net_accuracy", "diversity", "diversity_init",
                   "diversity_first", "diversity_vs_init")


def _as_runs(per_seed: pd.DataFrame) -> pd.DataFrame:
    return per_seed.rename(columns={"variant": "method"}).assign(label=per_seed["variant"])


def ablation_over_seeds(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of :func:`ablation_summary` tables that carry a
    ``seed`` column: one row per variant, ``variant, n_seeds`` and each of
    :data:`SUMMARY_METRICS` with its ``_sd``."""
    summary = seed_summary(_as_runs(per_seed), SUMMARY_METRICS)
    return summary.drop(columns="label").rename(columns={"method": "variant"})


def ablation_claims(per_seed: pd.DataFrame, *, accuracy_tolerance: float = 0.01,
                    significant_ratio: float = 0.5) -> pd.DataFrame:
    """The paper's statements, checked over the seeds of :func:`ablation_summary` tables.

    ``per_seed`` is their concatenation with a ``seed`` column. Every comparison is a
    difference of means over seeds ± 2 standard errors
    (:func:`~hypernets.evaluation.ordering_verdict`, :func:`~hypernets.evaluation.equivalence_verdict`):

    1. Diversity falls as training proceeds: the full HyperGAN's diversity at the last
       evaluation is below that at the first one after training started (needs two).
    2. Removing the discriminator reduces diversity: no-D diversity < full diversity.
    3. Removing the mixer keeps accuracy but reduces diversity significantly: accuracies of
       the mean predictive within ``accuracy_tolerance`` (absolute), no-mixer diversity lower,
       and at most ``significant_ratio`` times the full one.
    4. The same reduction relative to where each variant started (``diversity_vs_init``):
       the variants start at different diversities, which can decide claim 3 by itself.

    Returns ``claim, seen`` (True, False, or None when the seeds' spread cannot decide, e.g.
    one seed or one epoch), ``evidence`` and ``rule``.
    """
    variants = set(per_seed["variant"])
    missing = [name for name in ABLATION_VARIANTS if name not in variants]
    if missing:
        raise ValueError(f"per_seed lacks the variant(s) {missing}; the claims compare all of "
                         f"{list(ABLATION_VARIANTS)}")
    if "seed" not in per_seed.columns:
        raise ValueError("per_seed needs a seed column (one ablation_summary per seed)")
    summary = seed_summary(_as_runs(per_seed), SUMMARY_METRICS)
    full_rows = per_seed[per_seed["variant"] == "full"]
    claim = "diversity falls as training proceeds"
    if (full_rows["epochs"] > 1).all():
        stages = pd.concat([
            full_rows.assign(method="after the first epoch", diversity=full_rows["diversity_first"]),
            full_rows.assign(method="at the end")])
        falls = ordering_verdict(seed_summary(stages.assign(label=stages["method"]), ["diversity"]),
                                 claim, "diversity", "at the end", "after the first epoch",
                                 lower=True)
    else:
        falls = {"claim": claim, "seen": None, "rule": "needs two evaluated epochs",
                 "evidence": "only one evaluated epoch: nothing to compare"}
    no_d = ordering_verdict(summary, "removing the discriminator reduces diversity", "diversity",
                            "no discriminator", "full", lower=True)
    accuracy = equivalence_verdict(summary, "", "accuracy", "no mixer", "full",
                                   tolerance=accuracy_tolerance)
    lower = ordering_verdict(summary, "", "diversity", "no mixer", "full", lower=True)
    means = summary.set_index("method")
    ratio = float(means.loc["no mixer", "diversity"] / means.loc["full", "diversity"])
    parts = (accuracy["seen"], lower["seen"], ratio <= significant_ratio)
    mixer = {"claim": "removing the mixer keeps accuracy but reduces diversity significantly",
             "seen": True if all(p is True for p in parts) else False
             if any(p is False for p in parts) else None,
             "evidence": f"{accuracy['evidence']}; {lower['evidence']}; ratio of the means no mixer "
                         f"/ full {ratio:.3f} (significant if <= {significant_ratio:.3f})",
             "rule": f"{accuracy['rule']}; {lower['rule']}; ratio <= {significant_ratio:g}"}
    relative = ordering_verdict(summary, "the mixer's reduction holds relative to initialisation",
                                "diversity_vs_init", "no mixer", "full", lower=True)
    init = (f"; at initialisation full {means.loc['full', 'diversity_init']:.3f}, no mixer "
            f"{means.loc['no mixer', 'diversity_init']:.3f}")
    relative["evidence"] += init
    return pd.DataFrame([falls, no_d, mixer, relative])


def plot_ablation(history: pd.DataFrame) -> plt.Figure:
    """Test accuracy (mean predictive, single nets) and diversity against the epoch, per variant."""
    return metric_panels(history, "epoch", _ABLATION_COLUMNS, "variant", "epoch (0: before training)")


def plot_diversity_by_tensor(history: pd.DataFrame) -> plt.Figure:
    """Bars of each weight tensor's diversity at the last evaluation, one colour per variant."""
    table = diversity_by_tensor(history).drop(columns="epoch")
    long = table.melt(id_vars="variant", var_name="tensor", value_name="diversity")
    fig, ax = plt.subplots(figsize=(1.1 * len(table.columns) + 2.5, 3.6))
    sns.barplot(data=long, x="tensor", y="diversity", hue="variant", ax=ax)
    ax.set_xlabel("")
    ax.set_ylabel("std / mean of weight norms")
    ax.set_title("diversity per weight tensor after training")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# HyperGAN-MI on the toy
# ---------------------------------------------------------------------------------------------


def band_widths(samples: Tensor, inside: Tensor) -> dict[str, float]:
    """Width of the mean +- 2 std band of sampled functions inside and outside the data.

    ``samples`` is ``[S, G]`` (S sampled functions on G grid points), ``inside`` the bool mask
    of the grid points inside the data (:meth:`hypernets.data.ToyRegression.inside`); the std
    is the spread of the samples alone (:func:`hypernets.metrics.std_inside_outside`). Returns
    the mean band width (4 std) ``inside`` and ``outside`` and their ``ratio`` outside / inside.
    """
    std_in, std_out = metrics.std_inside_outside(samples, inside)
    return {"band_inside": 4.0 * std_in, "band_outside": 4.0 * std_out,
            "band_ratio": std_out / std_in}


class WeightDiversity:
    """Per-evaluation weight diversity of ``n_samples`` draws (the MI toy's ``evaluate``),
    sampled from a fork of the global RNG seeded with ``seed``."""

    def __init__(self, n_samples: int, seed: int = 0):
        self.n_samples = check_int("n_samples", n_samples, minimum=2)
        self.seed = seed

    def __call__(self, method: Method) -> dict[str, float]:
        with seeded(self.seed, method.device):
            return {"diversity": metrics.weight_norm_diversity(method.sample_params(self.n_samples))}

    def store_key(self) -> dict[str, Any]:
        return {"kind": "weight_diversity", "n_samples": self.n_samples, "seed": self.seed}


def mi_toy_runs(toy: ToyRegression, *, variants: Sequence[str] = tuple(MI_VARIANTS),
                beta: float, steps: int, train_samples: int = 32, eval_every: int = 100,
                n_samples: int = 100, target: str | TargetNet = "toy_mi",
                mi_options: Mapping[str, Any] | None = None, lr: float | None = None,
                device: str | torch.device = "cpu", seed: int = 0) -> list[RunRequest]:
    """The runs of :func:`run_mi_toy`, one per variant (its arguments)."""
    variants = _check_variants(variants, MI_VARIANTS, "MI toy")
    check_int("steps", steps, minimum=1)
    check_int("eval_every", eval_every, minimum=1)
    check_positive("beta (the regularised variant's weight)", beta)
    options = dict(mi_options or {})
    clashes = sorted(set(options) & {"beta", "train_samples"})
    if clashes:
        raise ValueError(f"mi_options must not set {clashes}: beta and train_samples are "
                         "arguments of run_mi_toy")
    target = get_target(target) if isinstance(target, str) else target
    evaluate = WeightDiversity(n_samples, seed)
    requests = []
    for name in variants:
        variant_beta = beta if MI_VARIANTS[name] is None else MI_VARIANTS[name]
        run_options = {"method": "hypergan_mi", "beta": variant_beta,
                       "train_samples": train_samples, **options,
                       **({} if lr is None else {"lr": lr})}
        requests.append(RunRequest(name, target, toy.x, toy.y, len(toy.x), steps=steps,
                                   likelihood=Gaussian(toy.noise_std), device=device, seed=seed,
                                   options=run_options, evaluate=evaluate,
                                   eval_every=eval_every))
    return requests


def run_mi_toy(toy: ToyRegression, *, n_samples: int = 100, store: Any = "default",
               **settings: Any) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or load) HyperGAN-MI on the toy with MI weight ``beta`` and without the regulariser.

    ``settings`` are those of :func:`mi_toy_runs`. Full-batch training (every step sees the 20
    points, so steps = epochs) with the toy's noise std in the Gaussian likelihood and
    ``train_samples`` nets per step; ``mi_options`` go to every variant's constructor. Every
    ``eval_every`` steps the weight diversity of ``n_samples`` draws is recorded; at the end
    ``n_samples`` functions are drawn on ``toy.x_grid``.

    Returns ``(history, samples)``: ``history`` has one row per (variant, evaluated step) with
    ``variant, beta, step, loss, nll, mi`` (the step's MINE estimate) ``, diversity``;
    ``samples`` one row per (variant, sample, grid point): ``variant, sample, x, y``.
    """
    requests = mi_toy_runs(toy, n_samples=n_samples, **settings)
    trained = train_runs(requests, store=store)
    return _mi_toy_tables(requests, trained, toy, n_samples)


def _mi_toy_tables(requests: Sequence[RunRequest], trained: Mapping[str, Any], toy: ToyRegression,
                   n_samples: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`run_mi_toy`'s history and sampled functions of trained MI-toy runs."""
    grid = toy.x_grid
    history_rows, sample_tables = [], []
    for request in requests:
        run = trained[request.name]
        for record in run.history:
            if "diversity" in record:
                history_rows.append({"variant": request.name, "beta": request.options["beta"],
                                     "step": record["step"], "loss": record["loss"],
                                     "nll": record["nll"], "mi": record["mi"],
                                     "diversity": record["diversity"]})
        with seeded(request.seed, request.device):
            functions = predict(run.method, grid, n_samples)[..., 0]  # [S, G]
        sample_tables.append(pd.DataFrame({
            "variant": request.name,
            "sample": np.repeat(np.arange(n_samples), len(grid)),
            "x": np.tile(grid[:, 0].numpy(), n_samples),
            "y": functions.reshape(-1).numpy(),
        }))
    return pd.DataFrame(history_rows), pd.concat(sample_tables, ignore_index=True)


#: The numbers of sampled nets of HyperGAN-MI's test loss (gtegner/hyper-gan, ``main.py``).
LOSS_NETS = (1, 5, 10, 100)


def toy_test_set(toy: ToyRegression, n_points: int = 1000) -> tuple[Tensor, Tensor]:
    """HyperGAN-MI's test set: ``n_points`` inputs evenly over the training interval and their
    noise-free targets x**3 (the reference's ``true_data(range=4)``)."""
    x = torch.linspace(*toy.x_range, check_int("n_points", n_points, minimum=2)).unsqueeze(1)
    return x, toy.true_function(x)


def mi_toy_losses(trained: Mapping[str, Any], toy: ToyRegression, *,
                  n_nets: Sequence[int] = LOSS_NETS, seed: int = 0) -> pd.DataFrame:
    """HyperGAN-MI's test loss against the number of sampled nets, per variant.

    Each run draws ``max(n_nets)`` functions once on :func:`toy_test_set` (seeded); for every
    ``k`` the first ``k``: ``net_mse``, the mean over the k nets of each net's MSE (the
    reference's ``loss_k``), and ``ensemble_mse``, the MSE of their mean function (its
    ``ensemble_loss_k``). Columns ``variant, n_nets, net_mse, ensemble_mse``.
    """
    n_nets = sorted(set(check_int_list("n_nets", n_nets, minimum=1)))
    x, y = toy_test_set(toy)
    rows = []
    for name, run in trained.items():
        method = run.method
        with seeded(seed, method.device):
            functions = predict(method, x, n_nets[-1])[..., 0].double()  # [S, N]
        errors = functions - y[:, 0].double()
        for k in n_nets:
            rows.append({"variant": name, "n_nets": k,
                         "net_mse": float(errors[:k].pow(2).mean()),
                         "ensemble_mse": float(errors[:k].mean(0).pow(2).mean())})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class MiToyStudy:
    """HyperGAN-MI on the toy for several noise levels and training seeds.

    ``toys``: noise std -> the toy data (drawn with one data seed). ``history``, ``samples``
    (:func:`run_mi_toy`'s tables) and ``losses`` (:func:`mi_toy_losses`) carry ``noise_std``
    and ``seed`` columns.
    """

    toys: dict[float, ToyRegression]
    history: pd.DataFrame
    samples: pd.DataFrame
    losses: pd.DataFrame


def mi_toy_groups(noise_stds: Sequence[float], seeds: Sequence[int], *, data_seed: int,
                  **settings: Any) -> tuple[dict[float, ToyRegression], dict[tuple[float, int], list[RunRequest]]]:
    """The toys of ``noise_stds`` (drawn with ``data_seed``) and the runs of :func:`mi_toy_runs`
    for every (noise std, training seed)."""
    if not noise_stds or not seeds:
        raise ValueError(f"noise_stds and seeds must each list at least one value, got "
                         f"{list(noise_stds)} and {list(seeds)}")
    toys = {float(std): toy_regression(noise_std=float(std), seed=data_seed) for std in noise_stds}
    groups = {(std, seed): mi_toy_runs(toy, seed=seed, **settings)
              for std, toy in toys.items() for seed in seeds}
    return toys, groups


def run_mi_toy_study(noise_stds: Sequence[float], seeds: Sequence[int], *, data_seed: int,
                     n_samples: int = 100, loss_nets: Sequence[int] = LOSS_NETS,
                     store: Any = "default", **settings: Any) -> MiToyStudy:
    """:func:`run_mi_toy` and :func:`mi_toy_losses` for every noise std and training seed
    (:func:`mi_toy_groups`; ``settings`` as for :func:`mi_toy_runs`)."""
    toys, groups = mi_toy_groups(noise_stds, seeds, data_seed=data_seed, n_samples=n_samples,
                                 **settings)
    tables: dict[str, list[pd.DataFrame]] = {"history": [], "samples": [], "losses": []}
    for (std, seed), requests in groups.items():
        trained = train_runs(requests, store=store)
        history, samples = _mi_toy_tables(requests, trained, toys[std], n_samples)
        losses = mi_toy_losses(trained, toys[std], n_nets=loss_nets, seed=seed)
        for name, table in (("history", history), ("samples", samples), ("losses", losses)):
            tables[name].append(table.assign(noise_std=std, seed=seed))
    return MiToyStudy(toys, *(pd.concat(tables[name], ignore_index=True)
                              for name in ("history", "samples", "losses")))


def _samples_matrix(samples: pd.DataFrame, variant: str) -> tuple[Tensor, Tensor]:
    """(grid [G], functions [S, G]) of one variant of :func:`run_mi_toy`'s samples."""
    part = samples[samples["variant"] == variant]
    if part.empty:
        raise ValueError(f"samples hold no variant {variant!r}; they hold "
                         f"{list(dict.fromkeys(samples['variant']))}")
    table = part.pivot(index="sample", columns="x", values="y")
    return (torch.tensor(table.columns.to_numpy(), dtype=torch.float64),
            torch.tensor(table.to_numpy(), dtype=torch.float64))


def mi_toy_summary(toy: ToyRegression, history: pd.DataFrame,
                   samples: pd.DataFrame) -> pd.DataFrame:
    """One row per variant: beta, final MINE estimate, diversity, RMSE and band widths.

    ``rmse`` is that of the mean sampled function on the training points against their
    targets; the bands are :func:`band_widths` inside and outside the data
    (:meth:`~hypernets.data.ToyRegression.inside`).
    """
    rows = []
    for name, part in history.groupby("variant", sort=False):
        last = part.sort_values("step").iloc[-1]
        grid, functions = _samples_matrix(samples, name)
        # The mean function at the training inputs, interpolated from the grid.
        mean = functions.mean(0).numpy()
        fitted = np.interp(toy.x[:, 0].numpy(), grid.numpy(), mean)
        rmse = float(np.sqrt(np.mean((fitted - toy.y[:, 0].numpy()) ** 2)))
        rows.append({"variant": name, "beta": float(last["beta"]), "steps": int(last["step"]),
                     "mi": float(last["mi"]), "diversity": float(last["diversity"]),
                     "rmse": rmse, **band_widths(functions, toy.inside(grid))})
    return pd.DataFrame(rows)


#: The MI toy's summary columns a table over seeds averages.
MI_TOY_METRICS = ("mi", "diversity", "rmse", "band_inside", "band_outside", "band_ratio",
                  "net_mse", "ensemble_mse")


def mi_toy_over_seeds(study: MiToyStudy) -> pd.DataFrame:
    """:func:`mi_toy_summary` of every (noise std, seed) of a study, with the test losses of
    the most nets (``net_mse``, ``ensemble_mse``) and ``noise_std, seed`` columns."""
    rows = []
    for (std, seed), history in study.history.groupby(["noise_std", "seed"], sort=False):
        samples = study.samples[(study.samples["noise_std"] == std) & (study.samples["seed"] == seed)]
        summary = mi_toy_summary(study.toys[std], history, samples)
        losses = study.losses[(study.losses["noise_std"] == std) & (study.losses["seed"] == seed)]
        most = losses[losses["n_nets"] == losses["n_nets"].max()].set_index("variant")
        summary["net_mse"] = summary["variant"].map(most["net_mse"])
        summary["ensemble_mse"] = summary["variant"].map(most["ensemble_mse"])
        rows.append(summary.assign(noise_std=std, seed=seed))
    return pd.concat(rows, ignore_index=True)


def mi_toy_claims(per_seed: pd.DataFrame) -> pd.DataFrame:
    """What the MI regulariser should do, per noise std, judged over the training seeds of
    :func:`mi_toy_over_seeds` (:func:`~hypernets.evaluation.ordering_verdict`):

    1. It increases the weight diversity (HyperGAN-MI's diversity > that without it).
    2. It widens the band outside the data relative to inside (a larger ``band_ratio``).
    3. It lowers the test MSE of the ensemble of the most sampled nets (the reference's
       "higher and more robust performance").

    Columns ``noise_std, claim, seen, rule, evidence``.
    """
    regularised, plain = MI_VARIANTS
    rows = []
    for std, part in per_seed.groupby("noise_std", sort=True):
        missing = [name for name in MI_VARIANTS if name not in set(part["variant"])]
        if missing:
            raise ValueError(f"per_seed lacks the variant(s) {missing} at noise std {std:g}; the "
                             f"claims compare {list(MI_VARIANTS)}")
        summary = seed_summary(part.assign(method=part["variant"], label=part["variant"]),
                               MI_TOY_METRICS)
        for claim, metric, lower in (
                ("the MI regulariser increases weight diversity", "diversity", False),
                ("the MI regulariser widens the band outside the data", "band_ratio", False),
                ("the MI regulariser lowers the ensemble's test MSE", "ensemble_mse", True)):
            rows.append({"noise_std": std, **ordering_verdict(
                summary, f"{claim} (σ = {std:g})", metric, regularised, plain, lower=lower)})
    return pd.DataFrame(rows, columns=["noise_std", "claim", "seen", "rule", "evidence"])


def conclusion(ablation: pd.DataFrame, ablation_verdicts: pd.DataFrame,
               mi_toy_verdicts: pd.DataFrame, *, epochs: int) -> str:
    """The page's conclusion as Markdown prose, computed from its tables: the ablation's
    variants (:func:`ablation_over_seeds`, trained ``epochs`` epochs) ranked by their diversity
    at the end and before training and by accuracy, with :func:`ablation_claims`; then the
    toy's :func:`mi_toy_claims`; the verdicts grouped."""
    epochs = check_int("epochs", epochs, minimum=1)
    runs = _as_runs(ablation)
    return "\n\n".join([
        f"**The ablation** (HyperGAN on MNIST, {count_of(epochs, 'epoch')}, "
        f"{count_of(int(runs['n_seeds'].min()), 'training seed')}; mean ± sd). Diversity of the "
        "sampled weights after training (std / mean of their L2 norms, averaged over the tensors), "
        f"highest first: {ranking_prose(runs, 'diversity', digits=3, ascending=False)}; before "
        f"training: {ranking_prose(runs, 'diversity_init', digits=3, ascending=False)}; test "
        f"accuracy of the mean predictive: {ranking_prose(runs, 'accuracy', digits=3, ascending=False)}. "
        f"The paper's statements: {verdict_prose(ablation_verdicts)}.",
        f"**HyperGAN-MI on the toy**: {verdict_prose(mi_toy_verdicts)}."])


def plot_mi_toy_losses(losses: pd.DataFrame) -> plt.Figure:
    """Test MSE against the number of sampled nets (log axes), one panel per noise std: each
    variant's mean single-net MSE (dashed) and ensemble MSE (solid), mean ± sd over seeds."""
    stds = sorted(losses["noise_std"].unique())
    variants = list(dict.fromkeys(losses["variant"]))
    colors = dict(zip(variants, sns.color_palette(n_colors=len(variants))))
    fig, axes = plt.subplots(1, len(stds), figsize=(4.4 * len(stds) + 2.2, 3.6), squeeze=False)
    for ax, std in zip(axes[0], stds):
        part = losses[losses["noise_std"] == std]
        for variant in variants:
            grouped = part[part["variant"] == variant].groupby("n_nets")
            for column, style, what in (("ensemble_mse", "-", "ensemble"),
                                        ("net_mse", "--", "single nets")):
                mean, sd = grouped[column].mean(), grouped[column].std(ddof=1).fillna(0)
                ax.errorbar(mean.index, mean, yerr=sd, linestyle=style, marker="o", capsize=3,
                            color=colors[variant], label=f"{variant}, {what}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("sampled nets")
        ax.set_ylabel("test MSE (x in the training range)")
        ax.set_title(f"σ = {std:g}")
    figure_legend(fig)
    fig.tight_layout()
    return fig


def plot_mi_toy_bands(toy: ToyRegression, samples: pd.DataFrame,
                      n_curves: int = 10) -> plt.Figure:
    """One panel per variant: data, true function, mean +- 2 std of the samples, a few samples."""
    variants = list(dict.fromkeys(samples["variant"]))
    fig, axes = plt.subplots(1, len(variants), figsize=(5.2 * len(variants), 3.8), sharey=True,
                             squeeze=False)
    palette = sns.color_palette()
    inside = toy.x_range
    for ax, name in zip(axes[0], variants):
        grid, functions = _samples_matrix(samples, name)
        mean, std = metrics.predictive_mean_std(functions)
        x = grid.numpy()
        for curve in functions[:n_curves]:
            ax.plot(x, curve.numpy(), color=palette[2], alpha=0.35, linewidth=0.8)
        ax.fill_between(x, (mean - 2 * std).numpy(), (mean + 2 * std).numpy(),
                        color=palette[2], alpha=0.25, label="mean ± 2 std of the samples")
        ax.plot(x, mean.numpy(), color=palette[2], label="mean of the samples")
        plot_toy_data(toy, ax=ax)
        ax.axvspan(x.min(), inside[0], color="grey", alpha=0.08, linewidth=0)
        ax.axvspan(inside[1], x.max(), color="grey", alpha=0.08, linewidth=0)
        ax.set_title(name)
        ax.set_ylim(-150, 150)
        ax.legend(loc="upper left", fontsize="small", frameon=False)
    fig.tight_layout()
    return fig
