"""Bayesian Hypernetworks' two looks at what a non-factorised posterior buys.

(a) Correlations between weights. Draw S weight sets from a method trained on MNIST, pick
random pairs of scalar weights and test each pair for correlation across the S samples
(Pearson, :func:`hypernets.metrics.weight_correlations`). A mean-field posterior (Bayes by
Backprop) has independent weights, so its p-values are uniform and about 5% fall below 0.05;
a hypernetwork that maps low-dimensional noise to all weights correlates them, which piles the
p-values up near 0.

(b) Multimodality. The over-parametrised product network y_hat = a b x, with noise
log-variance a c x, fit to y = x + noise: the posterior over (a, b) lies along both branches
of the hyperbola b = 1/a (a, b > 0 and a, b < 0, mirror images under (a, b, c) -> (-a, -b, -c),
so each holds exactly half of the posterior mass). A unimodal approximation sits on one
branch; NUTS chains started on both sides give the reference shape.
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
from pyro.infer.mcmc.util import diagnostics
from scipy import stats
from torch import Tensor

from hypernets import metrics
from hypernets.data import ImageSplits, load_mnist_splits
from hypernets.evaluation import predict_probs
from hypernets.likelihoods import Likelihood
from hypernets.methods.base import Method
from hypernets.reference_posterior import (
    REFERENCE_LABEL,
    ReferencePosterior,
    nuts_posterior,
)
from hypernets.runs import RunRequest, TrainedMethod, run_requests, train_runs
from hypernets.seeding import seeded
from hypernets.targets import Linear, Params, TargetNet, get_target
from hypernets.training import tensor_digest
from hypernets.validation import check_int, check_positive, check_positive_int

#: Significance level of the correlation tests.
ALPHA = 0.05


# ---------------------------------------------------------------------------------------------
# (a) Correlations between weights
# ---------------------------------------------------------------------------------------------


#: Versions of the evaluations here that a run's record keeps (see
#: :meth:`~hypernets.runs.TrainedMethod.evaluated`; ``tests/test_records.py`` pins the code).
#: The product network's runs are small and are trained again rather than recorded.
EVALUATION_VERSIONS = {"correlations.pvalues": 1, "correlations.accuracy": 1}


@torch.no_grad()
def weight_samples(method: Method, n_samples: int) -> Tensor:
    """``n_samples`` weight sets of ``method`` flattened in spec order: [S, P] on the CPU, float64.

    Torch's global RNG must be seeded by the caller for reproducible samples.
    """
    check_int("n_samples (a correlation needs 3 points)", n_samples, minimum=3)
    method.eval()
    return method.target.flatten(method.sample_params(n_samples)).to("cpu", torch.float64)


def correlation_pvalues(trained: Mapping[str, TrainedMethod], *, n_samples: int, n_pairs: int,
                        seed: int = 0) -> pd.DataFrame:
    """Pearson tests of ``n_pairs`` random weight pairs across ``n_samples`` draws, per method.

    Pairs are drawn among the weights that vary across the draws: a parameter a method keeps
    as a point estimate has no correlation to test, and such parameters are reported in
    ``n_fixed`` rather than silently tested. Methods that give fewer distinct nets than
    ``n_samples`` (MAP, ensembles) are refused. The same ``seed`` draws the pairs for every
    method. Long format: one row per pair with ``method`` (label), ``first``, ``second``
    (indices among all weights), ``r``, ``p_value``, ``n_fixed``.
    """
    tables = []
    for run in trained.values():
        def compute(run=run) -> list[dict]:
            distinct = run.method.n_distinct_nets(n_samples)
            if distinct < n_samples:
                raise ValueError(f"{run.label} gives at most {distinct} distinct nets, fewer "
                                 f"than n_samples={n_samples}; correlations need a distribution "
                                 "over weights")
            with seeded(seed, run.method.device):
                samples = weight_samples(run.method, n_samples)
            varying = torch.nonzero(samples.amax(0) > samples.amin(0)).flatten()
            if len(varying) < 2:
                raise ValueError(f"{run.label}: fewer than 2 weights vary across the "
                                 f"{n_samples} samples")
            table = metrics.weight_correlations(samples[:, varying], n_pairs=n_pairs, seed=seed)
            for column in ("first", "second"):  # back to indices among all weights
                table[column] = varying.numpy()[table[column].to_numpy()]
            table["n_fixed"] = samples.shape[1] - len(varying)
            return table.to_dict("records")

        pairs = run.evaluated("correlations.pvalues",
                              {"n_samples": n_samples, "n_pairs": n_pairs, "seed": seed},
                              EVALUATION_VERSIONS["correlations.pvalues"], compute)
        table = pd.DataFrame(pairs)
        table.insert(0, "method", run.label)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


@dataclass
class CorrelationResult:
    """MNIST-trained methods, their test accuracy, and the p-values of their weight pairs."""

    trained: dict[str, TrainedMethod]
    accuracy: pd.DataFrame
    pvalues: pd.DataFrame


def correlation_runs(methods: Sequence[str], data: ImageSplits, *, epochs: int, batch_size: int,
                     device: str | torch.device = "cpu", seed: int = 0,
                     options: Mapping[str, Mapping[str, Any]] | None = None) -> list[RunRequest]:
    """The MNIST runs of :func:`run_correlations` (Bayesian Hypernetworks' MLP)."""
    return run_requests(methods, get_target("mnist_mlp"), data.train.x, data.train.y, epochs=epochs,
                        batch_size=batch_size, device=device, seed=seed, options=options)


def run_correlations(methods: Sequence[str], *, n_train: int | None, n_test: int | None, epochs: int,
                     batch_size: int, n_weight_samples: int, n_pairs: int, device: str | torch.device = "cpu",
                     seed: int = 0, options: Mapping[str, Mapping[str, Any]] | None = None) -> CorrelationResult:
    """Train ``methods`` on MNIST with Bayesian Hypernetworks' MLP and test their weight pairs.

    The target is ``get_target("mnist_mlp")`` (784-256-256-256-10); training is
    :func:`hypernets.runs.train_methods` on ``n_train`` images (None: all
    60,000). ``accuracy`` holds each method's test accuracy on ``n_test`` images with
    ``n_weight_samples`` sampled nets and its training time, to show the posteriors tested
    are those of working classifiers.
    """
    data = load_mnist_splits(n_train, n_test, seed=seed)
    trained = train_runs(correlation_runs(methods, data, epochs=epochs, batch_size=batch_size,
                                          device=device, seed=seed, options=options))
    accuracy, pvalues = evaluate_correlation_runs(trained, data, n_weight_samples=n_weight_samples,
                                                  n_pairs=n_pairs, seed=seed)
    return CorrelationResult(trained, accuracy, pvalues)


def evaluate_correlation_runs(trained: Mapping[str, TrainedMethod], data: ImageSplits, *,
                              n_weight_samples: int, n_pairs: int,
                              seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The test accuracy table and :func:`correlation_pvalues` of trained MNIST runs (what
    :func:`run_correlations` reports), each kept in a run's record where it has one."""
    rows = {}
    arguments = {"x": tensor_digest(data.test.x)["sha256"], "y": tensor_digest(data.test.y)["sha256"],
                 "n_samples": n_weight_samples, "seed": seed}
    for run in trained.values():
        accuracy = run.evaluated(
            "correlations.accuracy", arguments, EVALUATION_VERSIONS["correlations.accuracy"],
            lambda run=run: metrics.accuracy(predict_probs(run, data.test.x, n_weight_samples,
                                                           seed=seed), data.test.y))
        rows[run.label] = {"test accuracy": accuracy, "train time (s)": run.train_time_s}
    accuracy = pd.DataFrame.from_dict(rows, orient="index")
    accuracy.index.name = "method"
    pvalues = correlation_pvalues(trained, n_samples=n_weight_samples, n_pairs=n_pairs, seed=seed)
    return accuracy, pvalues


def pvalue_summary(pvalues: pd.DataFrame, alpha: float = ALPHA) -> pd.DataFrame:
    """One row per method of :func:`correlation_pvalues`' p-values.

    Columns: the fraction below ``alpha`` (about ``alpha`` for independent weights), the median
    |r|, the Kolmogorov-Smirnov statistic of the p-values against U(0, 1) (scipy; near 0 for
    independent weights), the pairs tested and the weights kept fixed.
    """
    rows = {}
    for label, group in pvalues.groupby("method", sort=False):
        rows[label] = {
            f"p < {alpha:g}": float((group["p_value"] < alpha).mean()),
            "median |r|": float(group["r"].abs().median()),
            "KS vs uniform": float(stats.kstest(group["p_value"], "uniform").statistic),
            "pairs": len(group),
            "fixed weights": int(group["n_fixed"].iloc[0]),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


#: "Piles up near 0": at least this many times the independent weights' share below alpha.
PILE_UP_FACTOR = 2.0
#: "Mass on both branches": at least this share of the samples on each.
BRANCH_SHARE = 0.1
#: A correlation verdict needs nets that classify: at least this test accuracy.
MIN_ACCURACY = 0.9
#: The mean-field reference of (a), whose weights are independent by construction.
MEAN_FIELD = ("Bayes by Backprop",)


def correlation_claims(pvalues: pd.DataFrame, accuracy: Mapping[str, float] | None = None, *,
                       alpha: float = ALPHA, factor: float = PILE_UP_FACTOR,
                       min_accuracy: float = MIN_ACCURACY,
                       independent: Sequence[str] = MEAN_FIELD) -> pd.DataFrame:
    """(a)'s claims per method (label) of :func:`correlation_pvalues`, by one rule.

    The share of weight pairs with p < ``alpha`` has a Wilson 95% interval over the pairs
    (:func:`hypernets.metrics.proportion_interval`). "Correlates its weights" is seen when the
    interval lies wholly at or above ``factor * alpha`` (independent weights give ``alpha``),
    not seen when wholly below, undecided otherwise; for the methods of ``independent`` the claim
    is the reverse, "keeps its weights independent". With ``accuracy`` (label -> test accuracy of
    the sampled nets' mean predictive), a method below ``min_accuracy`` gets no verdict
    (undecided): weights of nets that do not classify are not a posterior of the task, whatever
    their correlations. Columns ``method, claim, seen, rule, evidence``.
    """
    threshold = factor * alpha
    accuracy = {} if accuracy is None else dict(accuracy)
    rows = []
    for label, group in pvalues.groupby("method", sort=False):
        k, n = int((group["p_value"] < alpha).sum()), len(group)
        low, high = metrics.proportion_interval(k, n)
        correlated = True if low >= threshold else False if high < threshold else None
        mean_field = label in independent
        seen = correlated if not mean_field or correlated is None else not correlated
        evidence = f"{k} of {n} pairs = {k / n:.3f}, 95% interval [{low:.3f}, {high:.3f}]"
        if label in accuracy and accuracy[label] < min_accuracy:
            seen = None
            evidence += f"; no verdict: test accuracy {accuracy[label]:.3f} < {min_accuracy:g}"
        claim = (f"{label} keeps its weights independent" if mean_field
                 else f"{label} correlates its weights")
        rows.append({"method": label, "claim": claim, "seen": seen,
                     "rule": (f"share of pairs with p < {alpha:g}, Wilson 95% interval over the "
                              f"pairs, wholly {'below' if mean_field else 'at or above'} "
                              f"{threshold:g} ({factor:g} x {alpha:g}); only for nets of test "
                              f"accuracy >= {min_accuracy:g}"),
                     "evidence": evidence})
    return pd.DataFrame(rows, columns=["method", "claim", "seen", "rule", "evidence"])


def plot_pvalue_histograms(pvalues: pd.DataFrame, alpha: float = ALPHA, bins: int = 20) -> plt.Figure:
    """A histogram of the pairs' p-values per method, as densities, with the uniform density 1 and ``alpha`` marked."""
    labels = list(dict.fromkeys(pvalues["method"]))
    fig, axes = plt.subplots(1, len(labels), figsize=(3.2 * len(labels), 3.0), sharey=True, squeeze=False)
    edges = np.linspace(0.0, 1.0, bins + 1)
    for ax, label in zip(axes[0], labels):
        values = pvalues.loc[pvalues["method"] == label, "p_value"].to_numpy()
        ax.hist(values, bins=edges, density=True, color=sns.color_palette()[0])
        ax.axhline(1.0, color="black", linewidth=1, linestyle="--", label="uniform")
        ax.axvline(alpha, color=sns.color_palette()[3], linewidth=1, label=f"p = {alpha:g}")
        ax.set_title(f"{label}\n{(values < alpha).mean():.0%} below {alpha:g}")
        ax.set_xlabel("p-value")
        ax.set_xlim(0, 1)
    axes[0, 0].set_ylabel("density")
    axes[0, 0].legend(frameon=False, loc="upper right")
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------
# (b) The product network
# ---------------------------------------------------------------------------------------------


def product_network() -> TargetNet:
    """The over-parametrised regression net y_hat = a b x with noise log-variance a c x.

    Built from two bias-free linear layers, x -> a x -> [b (a x), c (a x)]: ``fc1.weight`` is
    [[a]] and ``fc2.weight`` is [[b], [c]]. As linear layers every method can generate them
    (HyperGAN's generators and the Bayesian hypernetwork's weight normalisation know linear
    and convolutional layers only); their default initialisation draws each scalar from
    U(-1, 1), so the signs start at random.
    """
    return TargetNet("product", [("fc1", Linear(1, 1, bias=False)), ("fc2", Linear(1, 2, bias=False))], (1,), 2)


class HeteroscedasticGaussian(Likelihood):
    """Gaussian noise whose log-variance is the net's second output; targets are [B, 1].

    ``predictive`` gives the mean (the first output), [S, B, 1], like :class:`Gaussian`.
    """

    task = "regression"

    def nll(self, outputs, y):
        if outputs.shape[-1] != 2:
            raise ValueError(f"outputs must end in 2 values (mean, log-variance), got shape {tuple(outputs.shape)}")
        if y.shape != (outputs.shape[1], 1):
            raise ValueError(f"targets y must have shape ({outputs.shape[1]}, 1), got {tuple(y.shape)}")
        mean, log_variance = outputs[..., 0], outputs[..., 1]
        squared = (y[:, 0] - mean).pow(2)
        return 0.5 * (math.log(2 * math.pi) + log_variance + squared * torch.exp(-log_variance))

    def predictive(self, outputs):
        return outputs[..., :1]


@dataclass(frozen=True, eq=False)
class ProductData:
    """Training data y = x + noise for the product network."""

    x: Tensor  # [n, 1]
    y: Tensor  # [n, 1]
    noise_std: float


def product_data(n_points: int = 20, noise_std: float = 1.0, x_range: float = 2.0, seed: int = 0) -> ProductData:
    """``n_points`` inputs uniform on [-x_range, x_range] and y = x + N(0, noise_std^2), from a generator seeded by ``seed``."""
    check_positive_int("n_points", n_points)
    check_positive("noise_std", noise_std)
    check_positive("x_range", x_range)
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(n_points, 1, generator=generator) * 2 - 1) * x_range
    y = x + noise_std * torch.randn(n_points, 1, generator=generator)
    return ProductData(x, y, float(noise_std))


@dataclass
class ProductResult:
    """Posterior samples of (a, b, c) per method label, [S, 3], with the data and NUTS run."""

    data: ProductData
    trained: dict[str, TrainedMethod]
    reference: ReferencePosterior
    samples: dict[str, Tensor]


def abc_samples(params: Params) -> Tensor:
    """The product network's scalars as columns a, b, c: [S, 3]."""
    first, second = params["fc1.weight"], params["fc2.weight"]
    return torch.stack([first[:, 0, 0], second[:, 0, 0], second[:, 1, 0]], dim=1)


def mirrored_starts(target: TargetNet, num_chains: int, seed: int = 0) -> Params:
    """Starts for the product network's chains: half with a, b > 0, the other half their mirror images.

    Negating (a, b, c) leaves a b and a c, hence the likelihood, and the Gaussian prior
    unchanged, so the posterior is symmetric and each branch holds exactly half of its mass.
    NUTS cannot cross between the branches (the region between them has almost no mass), so a
    chain samples the branch it starts on. The first half of the chains start from draws of
    the default initialisation with a and b made positive, the second half at their
    negatives: both branches get their exact weight, and NUTS supplies their shape.
    """
    if check_int("num_chains", num_chains, minimum=2) % 2:
        raise ValueError(f"num_chains must be an even integer >= 2 (chains come in mirror pairs), got {num_chains!r}")
    if set(target.param_shapes) != {"fc1.weight", "fc2.weight"}:
        raise ValueError(f"mirrored_starts is for product_network(), got target {target.name!r}")
    half = target.init(num_chains // 2, torch.Generator().manual_seed(seed))
    half["fc1.weight"] = half["fc1.weight"].abs()  # a > 0
    half["fc2.weight"][:, 0] = half["fc2.weight"][:, 0].abs()  # b > 0; c keeps its drawn sign
    return {name: torch.cat([value, -value]) for name, value in half.items()}


def product_runs(methods: Sequence[str], data: ProductData, *, steps: int,
                 device: str | torch.device = "cpu", seed: int = 0,
                 options: Mapping[str, Mapping[str, Any]] | None = None) -> list[RunRequest]:
    """The full-batch runs of :func:`run_product` on the product network."""
    return run_requests(methods, product_network(), data.x, data.y, steps=steps,
                        batch_size=len(data.x), likelihood=HeteroscedasticGaussian(),
                        device=device, seed=seed, options=options)


def run_product(methods: Sequence[str], *, n_points: int, steps: int, n_samples: int,
                nuts: Mapping[str, int], device: str | torch.device = "cpu", seed: int = 0,
                prior_std: float = 1.0, options: Mapping[str, Mapping[str, Any]] | None = None) -> ProductResult:
    """Fit ``methods`` and NUTS to the product-network problem; draw ``n_samples`` (a, b, c) per method.

    ``nuts`` holds :func:`~hypernets.reference_posterior.nuts_posterior`'s keyword arguments
    (an even ``num_chains``: the chains start in mirror pairs, see :func:`mirrored_starts`); its
    prior is N(0, ``prior_std``^2), the methods' default. MAP and ensembles give their 1 or M
    nets. The data are drawn with ``seed``.
    """
    data = product_data(n_points, seed=seed)
    target, likelihood = product_network(), HeteroscedasticGaussian()
    trained = train_runs(product_runs(methods, data, steps=steps, device=device, seed=seed,
                                      options=options))
    nuts = dict(nuts)
    starts = mirrored_starts(target, nuts.get("num_chains", 0), seed)
    reference = nuts_posterior(target, likelihood, data.x, data.y, prior_std=prior_std, seed=seed,
                               init_params=starts, **nuts)
    samples = {}
    with seeded(seed, device), torch.no_grad():
        for run in trained.values():
            run.method.eval()
            params = run.method.sample_params(run.method.n_distinct_nets(n_samples))
            samples[run.label] = abc_samples(params).cpu()
    samples[REFERENCE_LABEL] = abc_samples(reference.params)
    return ProductResult(data, trained, reference, samples)


def product_convergence(result: ProductResult) -> pd.DataFrame:
    """NUTS diagnostics of the identifiable products a b and a c, and of (a, b, c) within each branch.

    Across branches the chains disagree on the signs of (a, b, c) by design, so an R-hat over
    all chains would be meaningless; the products are the same on both branches, and each
    branch's chains (see :func:`mirrored_starts`) must agree among themselves.
    """
    reference = result.reference
    values = result.samples[REFERENCE_LABEL]
    table = reference.convergence({"a b, a c": torch.stack([values[:, 0] * values[:, 1],
                                                            values[:, 0] * values[:, 2]], dim=1)})
    half = reference.num_chains // 2
    chains = reference.by_chain(values)
    for name, part in (("a, b, c on the branch a, b > 0", chains[:half]),
                       ("a, b, c on the branch a, b < 0", chains[half:])):
        branch = diagnostics({"abc": part.double()})["abc"]
        table.loc[name] = pd.Series({"components": 3, "max r_hat": float(branch["r_hat"].max()),
                                     "min ess": float(branch["n_eff"].min()),
                                     "median ess": float(branch["n_eff"].median()),
                                     "draws": part.shape[0] * part.shape[1]})
    table["divergences"] = reference.divergences
    table["time (s)"] = reference.wall_time_s
    return table


def branch_table(samples: Mapping[str, Tensor]) -> pd.DataFrame:
    """Fraction of each method's samples on each branch of b = 1/a, and off both (a b <= 0).

    Also the mean of a b (1 when the fit is right) and the sample count.
    """
    rows = {}
    for label, values in samples.items():
        a, b = values[:, 0], values[:, 1]
        rows[label] = {
            "a, b > 0": float(((a > 0) & (b > 0)).double().mean()),
            "a, b < 0": float(((a < 0) & (b < 0)).double().mean()),
            "off (a b <= 0)": float((a * b <= 0).double().mean()),
            "mean a b": float((a * b).double().mean()),
            "samples": len(values),
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "method"
    return table


def branch_claims(samples: Mapping[str, Tensor], *, share: float = BRANCH_SHARE) -> pd.DataFrame:
    """(b)'s claim per method: "puts mass on both branches" of b = 1/a.

    Seen when the Wilson 95% interval of the share of samples on each branch (a, b > 0 and
    a, b < 0) lies wholly at or above ``share``, not seen when that of either branch lies wholly
    below, undecided otherwise (too few distinct samples: MAP's one, an ensemble's members).
    Columns ``method, claim, seen, rule, evidence``.
    """
    rows = []
    for label, values in samples.items():
        a, b = values[:, 0], values[:, 1]
        n = len(values)
        counts = {"a, b > 0": int(((a > 0) & (b > 0)).sum()), "a, b < 0": int(((a < 0) & (b < 0)).sum())}
        intervals = {name: metrics.proportion_interval(k, n) for name, k in counts.items()}
        seen = (True if all(low >= share for low, _ in intervals.values())
                else False if any(high < share for _, high in intervals.values()) else None)
        evidence = "; ".join(f"{name}: {k} of {n}, [{intervals[name][0]:.3f}, {intervals[name][1]:.3f}]"
                             for name, k in counts.items())
        rows.append({"method": label, "claim": f"{label} puts mass on both branches", "seen": seen,
                     "rule": (f"the Wilson 95% interval of each branch's share of the samples "
                              f"wholly at or above {share:g}"),
                     "evidence": evidence})
    return pd.DataFrame(rows, columns=["method", "claim", "seen", "rule", "evidence"])


def plot_product_posteriors(samples: Mapping[str, Tensor], limit: float = 3.0, max_points: int = 1000,
                            n_cols: int = 4, seed: int = 0) -> plt.Figure:
    """A panel per method: samples of (a, b), their KDE where the cloud allows one, and b = 1/a.

    At most ``max_points`` points are drawn per panel (a random subset chosen with ``seed``).
    """
    labels = list(samples)
    n_rows = math.ceil(len(labels) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.0 * n_cols, 3.1 * n_rows), sharex=True, sharey=True,
                             squeeze=False)
    a_curve = np.linspace(1.0 / limit, limit, 200)
    rng = np.random.default_rng(seed)
    palette = sns.color_palette()
    for ax, label in zip(axes.flat, labels):
        values = samples[label][:, :2].double().numpy()
        shown = values[rng.permutation(len(values))[:max_points]]
        for sign in (1, -1):
            ax.plot(sign * a_curve, sign / a_curve, color="black", linewidth=1, linestyle="--")
        few = len(values) < 20  # MAP, ensembles: make single nets visible
        ax.scatter(shown[:, 0], shown[:, 1], s=30 if few else 4, alpha=1.0 if few else 0.4, color=palette[0],
                   linewidths=0, zorder=3)
        if len(values) >= 10 and np.all(np.std(values, axis=0) > 1e-6):
            sns.kdeplot(x=values[:, 0], y=values[:, 1], ax=ax, levels=5, bw_adjust=0.5, color=palette[3],
                        linewidths=0.8)
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.axvline(0, color="grey", linewidth=0.5)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.set_title(label)
    for ax in axes[-1]:
        ax.set_xlabel("a")
    for ax in axes[:, 0]:
        ax.set_ylabel("b")
    for ax in axes.flat[len(labels):]:
        ax.set_visible(False)
    fig.tight_layout()
    return fig
