"""Bayes by Hypernet's MNIST table (the ``mnist_table`` chapter): evaluate the LeNet runs of
every training seed, judge the paper's claims over the seeds, and the table of hypernetwork
architectures (error, entropy AUCs on MNIST and notMNIST, training time), with the evidence on
Bayes by Hypernet's objective.

The methods are trained by :mod:`hypernets.runs` and evaluated with
:mod:`hypernets.evaluation`. Every table is a pandas DataFrame with a ``method`` column of run
names (a registry name, or a variant such as ``bbh_single``, see :mod:`hypernets.runs`).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import torch
from torch import Tensor

from hypernets.evaluation import (
    SD_SUFFIX,
    accuracy_and_outlier_claims,
    equivalence_verdict,
    classification_row,
    ordering_verdict,
    paper_values,
    predict_probs,
    ranking_prose,
    schedule_sentence,
    table_paragraphs,
    verdict_prose,
)
from hypernets.methods.bayes_by_hypernet import BayesByHypernet, gaussian_marginal_kl_bound
from hypernets.plots import metric_panels
from hypernets.published import method_label as published_label
from hypernets.published import published
from hypernets.runs import TrainedMethod
from hypernets.seeding import seeded
from hypernets.training import tensor_digest
from hypernets.validation import check_int

# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


#: Versions of what this chapter's evaluations compute from a run (see
#: :meth:`~hypernets.runs.TrainedMethod.evaluated`): a change that can alter a kept value
#: increases its version (``tests/test_records.py`` pins the code).
EVALUATION_VERSIONS = {"mnist.classification": 1, "mnist.kl_spread": 1, "mnist.weight_spread": 1}


def evaluate_methods(trained: Mapping[str, TrainedMethod], x_test: Tensor, y_test: Tensor,
                     x_ood: Tensor, *, n_samples: int, batch_size: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """One row per run: error, entropy AUCs, NLL, ECE, Brier, training time, nets used.

    Columns: ``method, label, n_nets`` (distinct sampled nets, see
    :meth:`~hypernets.methods.base.Method.n_distinct_nets`),
    the keys of :func:`classification_row` and ``train_time_s``. A run's row is kept in its
    record, where it has one.
    """
    arguments = {"x_test": tensor_digest(x_test)["sha256"], "y_test": tensor_digest(y_test)["sha256"],
                 "x_ood": tensor_digest(x_ood)["sha256"], "n_samples": n_samples,
                 "batch_size": batch_size, "seed": seed}
    rows = []
    for name, run in trained.items():
        def compute(run=run) -> dict[str, float]:
            probs_in = predict_probs(run, x_test, n_samples, batch_size=batch_size, seed=seed)
            probs_out = predict_probs(run, x_ood, n_samples, batch_size=batch_size, seed=seed)
            return {"n_nets": probs_in.shape[0], **classification_row(probs_in, y_test, probs_out)}

        row = run.evaluated("mnist.classification", arguments,
                            EVALUATION_VERSIONS["mnist.classification"], compute)
        rows.append({"method": name, "label": run.label, **row, "train_time_s": run.train_time_s})
    return pd.DataFrame(rows)


#: The columns of :func:`evaluate_methods` that a table over seeds averages.
TABLE_METRICS = ("error_pct", "entropy_auc_in", "entropy_auc_out", "nll", "ece", "brier",
                 "train_time_s")
#: The baselines Bayes by Hypernet's MNIST claims compare it with (MNF is not implemented).
BASELINES = ("map", "ensemble", "mc_dropout")
#: "About as accurate": the tolerance, in percentage points of test error.
ERROR_TOLERANCE_PP = 0.5


def evaluate_seeds(trained: Mapping[int, Mapping[str, TrainedMethod]], x_test: Tensor,
                   y_test: Tensor, x_ood: Tensor, *, n_samples: int, batch_size: int = 1000,
                   seed: int = 0) -> pd.DataFrame:
    """:func:`evaluate_methods` for the runs of every training seed, with a ``seed`` column.

    ``trained`` maps a training seed to its runs; ``seed`` fixes the test-time sampling.
    """
    if not trained:
        raise ValueError("trained must hold the runs of at least one seed")
    return pd.concat([evaluate_methods(runs, x_test, y_test, x_ood, n_samples=n_samples,
                                       batch_size=batch_size, seed=seed).assign(seed=s)
                      for s, runs in trained.items()], ignore_index=True)


def table_claims(summary: pd.DataFrame, *,
                 error_tolerance: float = ERROR_TOLERANCE_PP) -> pd.DataFrame:
    """Bayes by Hypernet's MNIST claims on a :func:`~hypernets.evaluation.seed_summary`:
    as accurate as each of :data:`BASELINES` and less confident on notMNIST
    (:func:`~hypernets.evaluation.accuracy_and_outlier_claims`)."""
    return accuracy_and_outlier_claims(summary, "bbh", BASELINES,
                                       error_tolerance=error_tolerance, outliers="notMNIST")


def architecture_claims(summary: pd.DataFrame) -> pd.DataFrame:
    """The architecture table's claims: layer-wise hypernetworks are more accurate than a
    single one, and more confident on MNIST (a higher entropy AUC there)."""
    return pd.DataFrame([
        ordering_verdict(summary, "layer-wise more accurate than single", "error_pct",
                         "bbh_layerwise", "bbh_single", lower=True),
        ordering_verdict(summary, "layer-wise more confident on MNIST than single",
                         "entropy_auc_in", "bbh_layerwise", "bbh_single", lower=False),
    ])


# The rows of the paper's table of hypernetwork architectures, by ``BayesByHypernet.architecture``.
ARCHITECTURE_ROWS = {"single": "bbh_single", "layer_wise": "bbh_layerwise", "sliced": "bbh_sliced"}
#: The rows of the KL-estimator ablation (not in the paper), by ``BayesByHypernet.kl_estimator``.
ESTIMATOR_ROWS = {"joint": "bbh_kl_joint", "per_weight": "bbh_kl_per_weight"}


def bbh_setting(method_options: Mapping[str, Mapping[str, Any]] | None, name: str) -> Any:
    """The ``bbh`` run's constructor argument ``name``: its option, else the method's default."""
    parameters = inspect.signature(BayesByHypernet).parameters
    if name not in parameters or name in ("target", "likelihood"):
        raise ValueError(f"name must be an option of BayesByHypernet, got {name!r}")
    return (method_options or {}).get("bbh", {}).get(name, parameters[name].default)


def architecture_variant_options(method_options: Mapping[str, Mapping[str, Any]] | None,
                                 architecture_options: Mapping[str, Any] | None
                                 ) -> dict[str, dict[str, Any]]:
    """Options of the architecture table's runs besides ``bbh``: run name -> options.

    One run per architecture that ``bbh`` does not have, named as the published row
    (:data:`ARCHITECTURE_ROWS`): ``bbh``'s options (so every run shares every other setting)
    with that architecture, plus ``architecture_options`` (e.g. ``n_chunks``) for the single
    hypernetwork.
    """
    bbh = dict((method_options or {}).get("bbh", {}))
    main = bbh_setting(method_options, "architecture")
    return {row: {**bbh, "method": "bbh", "architecture": architecture,
                  **(dict(architecture_options or {}) if architecture == "single" else {})}
            for architecture, row in ARCHITECTURE_ROWS.items() if architecture != main}


def estimator_variant_options(method_options: Mapping[str, Mapping[str, Any]] | None
                              ) -> dict[str, dict[str, Any]]:
    """Options of the KL-estimator ablation's run besides ``bbh``: run name -> options, the
    other estimator of :data:`ESTIMATOR_ROWS` with every other setting of ``bbh``."""
    bbh = dict((method_options or {}).get("bbh", {}))
    main = bbh_setting(method_options, "kl_estimator")
    return {row: {**bbh, "method": "bbh", "kl_estimator": estimator}
            for estimator, row in ESTIMATOR_ROWS.items() if estimator != main}


def variant_rows(results: pd.DataFrame, variant_results: pd.DataFrame, rows: Mapping[str, str],
                 main: str) -> pd.DataFrame:
    """The rows of a table of ``bbh`` variants, in the order of ``rows`` (setting -> row name,
    e.g. :data:`ARCHITECTURE_ROWS`).

    ``results`` is the main :func:`evaluate_methods` table, whose ``bbh`` row (of setting
    ``main``) becomes that setting's row, so it is not trained twice; ``variant_results`` has
    the runs of the other settings (e.g. :func:`architecture_variant_options`).
    """
    bbh = results[results["method"] == "bbh"]
    if len(bbh) != 1:
        raise ValueError(f"variant_rows needs one 'bbh' row in results, got "
                         f"{list(results['method'])}")
    if main not in rows:
        raise ValueError(f"main must be one of {list(rows)}, got {main!r}")
    row = rows[main]
    table = pd.concat([variant_results, bbh.assign(method=row, label=published_label(row))],
                      ignore_index=True)
    missing = set(rows.values()) - set(table["method"])
    if missing:
        raise ValueError(f"variant_rows: no rows for {sorted(missing)} in "
                         f"variant_results {list(variant_results['method'])}")
    order = {name: i for i, name in enumerate(rows.values())}
    table = table[table["method"].isin(order)]
    return table.sort_values("method", key=lambda m: m.map(order)).reset_index(drop=True)


def variant_rows_over_seeds(per_seed: pd.DataFrame, variant_per_seed: pd.DataFrame,
                            rows: Mapping[str, str], main: str) -> pd.DataFrame:
    """:func:`variant_rows` for every seed of two :func:`evaluate_seeds` tables."""
    seeds = list(dict.fromkeys(per_seed["seed"]))
    if set(seeds) != set(variant_per_seed["seed"]):
        raise ValueError(f"the main runs have seeds {sorted(seeds)}, the variants "
                         f"{sorted(set(variant_per_seed['seed']))}: train both for every seed")
    return pd.concat([variant_rows(per_seed[per_seed["seed"] == s],
                                   variant_per_seed[variant_per_seed["seed"] == s], rows, main)
                      for s in seeds], ignore_index=True)


def estimator_claims(summary: pd.DataFrame) -> pd.DataFrame:
    """The measured effect of the KL estimator (the book's question, not a claim of the paper):
    does the per-weight estimate, which sees every weight's spread, give a higher test error
    and a lower (more uncertain) notMNIST entropy AUC than the joint one?"""
    joint, per_weight = ESTIMATOR_ROWS["joint"], ESTIMATOR_ROWS["per_weight"]
    return pd.DataFrame([
        ordering_verdict(summary, "per-weight estimate less accurate than the joint one",
                         "error_pct", per_weight, joint, lower=False),
        ordering_verdict(summary, "per-weight estimate less confident on notMNIST than the joint "
                         "one", "entropy_auc_out", per_weight, joint, lower=True),
    ])


#: The published runs' epochs (pawni/BayesByHypernet's MNIST run scripts).
PAPER_EPOCHS = 100
#: ``published.csv``'s table of hypernetwork architectures.
ARCHITECTURE_TABLE = "mnist_hypernet_architecture"


def conclusion(results: pd.DataFrame, claims: pd.DataFrame, architecture: pd.DataFrame,
               architecture_verdicts: pd.DataFrame, estimator: pd.DataFrame,
               estimator_verdicts: pd.DataFrame, *, epochs: int) -> str:
    """The page's conclusion as Markdown prose, computed from its tables.

    ``results``, ``architecture`` and ``estimator`` are the :func:`seed_summary` tables of the
    main runs, the hypernetwork architectures and the KL estimators; ``claims``,
    ``architecture_verdicts`` and ``estimator_verdicts`` their verdicts (:func:`table_claims`,
    :func:`architecture_claims`, :func:`estimator_claims`); ``epochs`` the runs' epochs. Each
    paragraph ranks the rows by a column of the table, with the paper's number beside ours,
    and groups the verdicts.
    """
    paragraphs = table_paragraphs(results, claims, published("mnist"), epochs=epochs,
                                  paper_epochs=PAPER_EPOCHS, outliers="notMNIST")
    paper = published(ARCHITECTURE_TABLE)
    errors = ranking_prose(architecture, "error_pct", paper=paper_values(paper, "error_pct"), unit=" %")
    confidence = ranking_prose(architecture, "entropy_auc_in",
                               paper=paper_values(paper, "entropy_auc_in"), ascending=False)
    paragraphs.append(
        f"**Hypernetwork architectures.** Test error: {errors}; entropy AUC on MNIST, highest "
        f"(most confident) first: {confidence}. The paper's ordering: "
        f"{verdict_prose(architecture_verdicts)}.")
    paragraphs.append(
        f"**The KL estimator** (not in the paper). Test error: "
        f"{ranking_prose(estimator, 'error_pct', unit=' %')}; entropy AUC on notMNIST: "
        f"{ranking_prose(estimator, 'entropy_auc_out')}. The effect: {verdict_prose(estimator_verdicts)}.")
    return "\n\n".join(paragraphs)


#: Bayes by Hypernet's noise ablation, the README's six MNIST runs: run name -> (noise_dim,
#: independent noise per generated tensor). ``bbh`` is the published run itself.
NOISE_ROWS: dict[str, tuple[int, bool]] = {
    "bbh": (8, False), "bbh_noise1": (1, False), "bbh_noise64": (64, False),
    "bbh_indnoise1": (1, True), "bbh_indnoise8": (8, True), "bbh_indnoise64": (64, True)}


def noise_variant_options(method_options: Mapping[str, Mapping[str, Any]] | None
                          ) -> dict[str, dict[str, Any]]:
    """Options of the noise ablation's runs besides ``bbh``: ``bbh``'s options (every other
    setting shared) with the row's ``noise_dim`` and ``independent_noise``."""
    bbh = dict((method_options or {}).get("bbh", {}))
    clashes = sorted({"noise_dim", "independent_noise"} & set(bbh))
    if clashes:
        raise ValueError(f"options['bbh'] may not set {clashes}: the noise ablation's rows do")
    return {name: {**bbh, "method": "bbh", "noise_dim": dim, "independent_noise": independent}
            for name, (dim, independent) in NOISE_ROWS.items() if name != "bbh"}


def with_noise_columns(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` (rows of :data:`NOISE_ROWS` runs) with ``noise_dim`` and ``noise`` (shared or
    independent) columns after ``label``."""
    unknown = sorted(set(table["method"]) - set(NOISE_ROWS))
    if unknown:
        raise ValueError(f"rows {unknown} are not runs of the noise ablation {list(NOISE_ROWS)}")
    table = table.copy()
    at = list(table.columns).index("label") + 1
    table.insert(at, "noise", table["method"].map(
        lambda m: "independent" if NOISE_ROWS[m][1] else "shared"))
    table.insert(at, "noise_dim", table["method"].map(lambda m: NOISE_ROWS[m][0]))
    return table


def noise_claims(summary: pd.DataFrame, *, error_tolerance: float = ERROR_TOLERANCE_PP
                 ) -> pd.DataFrame:
    """Every noise setting of a :func:`~hypernets.evaluation.seed_summary` as accurate as the
    published one (8 dimensions, shared), within ``error_tolerance`` percentage points
    (:func:`~hypernets.evaluation.equivalence_verdict`)."""
    return pd.DataFrame([
        equivalence_verdict(summary, f"noise {dim}, {'independent' if independent else 'shared'}: "
                            "as accurate as the published noise (8, shared)", "error_pct", name,
                            "bbh", tolerance=error_tolerance)
        for name, (dim, independent) in NOISE_ROWS.items()
        if name != "bbh" and name in set(summary["method"])])


def noise_conclusion(summary: pd.DataFrame, claims: pd.DataFrame, *, epochs: int) -> str:
    """The noise ablation's conclusion as Markdown prose: its rows (a
    :func:`~hypernets.evaluation.seed_summary` of :data:`NOISE_ROWS` runs, named by their noise)
    ranked by test error and notMNIST entropy AUC, and the :func:`noise_claims` grouped by verdict."""
    summary = with_noise_columns(summary)
    summary["label"] = [f"noise {dim}, {noise}" + (" (published)" if method == "bbh" else "")
                        for method, dim, noise in zip(summary["method"], summary["noise_dim"],
                                                      summary["noise"])]
    return "\n\n".join([
        schedule_sentence(epochs, PAPER_EPOCHS, int(summary["n_seeds"].min())),
        "**Test error**, lowest first: " + ranking_prose(summary, "error_pct", unit=" %")
        + "; **entropy AUC on notMNIST**, lowest (most uncertain) first: "
        + ranking_prose(summary, "entropy_auc_out") + ".",
        f"**Against the published noise** (8 dimensions, shared): {verdict_prose(claims)}."])


def plot_noise_ablation(summary: pd.DataFrame) -> plt.Figure:
    """Test error and the entropy AUC on notMNIST against the noise dimension (log axis), shared
    and independent noise, mean ± sd over seeds."""
    table = with_noise_columns(summary)
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), squeeze=False)
    for ax, metric, name in zip(axes[0], ("error_pct", "entropy_auc_out"),
                                ("test error (%)", "entropy AUC on notMNIST")):
        for noise, style in (("shared", "-o"), ("independent", "--s")):
            part = table[table["noise"] == noise].sort_values("noise_dim")
            ax.errorbar(part["noise_dim"], part[metric], yerr=part[metric + SD_SUFFIX].fillna(0),
                        fmt=style, capsize=3, label=f"{noise} noise")
        ax.set_xscale("log")
        ax.set_xticks([1, 8, 64], ["1", "8", "64"])
        ax.set_xlabel("noise dimension")
        ax.set_ylabel(name)
    axes[0][0].legend(frameon=False)
    fig.tight_layout()
    return fig


def _bbh_runs(trained: Mapping[str, TrainedMethod]) -> dict[str, TrainedMethod]:
    """The Bayes by Hypernet runs among ``trained``; ValueError if there is none."""
    runs = {name: run for name, run in trained.items() if run.method_name == "bbh"}
    if not runs:
        raise ValueError(f"no Bayes by Hypernet run among {list(trained)}")
    return runs


def bbh_objective(trained: Mapping[str, TrainedMethod], n_train: int) -> pd.DataFrame:
    """Bayes by Hypernet's objective per epoch, for every run of the method in ``trained``.

    One row per run and epoch: ``method, label, epoch``, the training ``nll`` per data point,
    ``kl_per_point`` (the KL estimate over ``n_train``), ``weighted_kl`` (times the annealing
    weight: what the loss adds) and ``test_error_pct`` where the run was evaluated. The
    epoch's values are means over its steps. How the two terms compare over training is the
    evidence for what limits the method's error.
    """
    n_train = check_int("n_train", n_train, minimum=1)
    rows = []
    for name, run in _bbh_runs(trained).items():
        for record in run.history:
            rows.append({"method": name, "label": run.label, "epoch": record["epoch"],
                         "nll": record["nll"], "kl_per_point": record["kl"] / n_train,
                         "weighted_kl": record["anneal"] * record["kl"] / n_train,
                         "test_error_pct": record.get("test_error_pct", float("nan"))})
    return pd.DataFrame(rows)


def kl_estimate_spread(trained: Mapping[str, TrainedMethod], n_train: int, *,
                       n_draws: int = 20, seed: int = 0) -> pd.DataFrame:
    """How much the trained Bayes by Hypernet's KL estimate varies between draws.

    For every Bayes by Hypernet run: ``n_draws`` estimates of KL / ``n_train``, each from a
    fresh set of the method's S training samples (and as many prior samples), as one training
    step would draw them. Columns ``method, label, n_weights, samples_per_estimate``, ``mean``,
    ``sd`` (over the draws) and ``nll`` (the last epoch's training NLL per point, for scale).
    """
    n_train = check_int("n_train", n_train, minimum=1)
    n_draws = check_int("n_draws", n_draws, minimum=2)
    rows = []
    for name, run in _bbh_runs(trained).items():

        def compute(run=run) -> dict[str, float]:
            method = run.method
            method.eval()
            with seeded(seed, method.device), torch.no_grad():
                estimates = torch.stack([
                    method.kl_estimate(method.sample_params(method.train_samples))
                    for _ in range(n_draws)]) / n_train
            return {"n_weights": method.target.num_params,
                    "samples_per_estimate": method.train_samples,
                    "mean": float(estimates.mean()), "sd": float(estimates.std())}

        spread = run.evaluated("mnist.kl_spread", {"n_train": n_train, "n_draws": n_draws,
                                                   "seed": seed},
                               EVALUATION_VERSIONS["mnist.kl_spread"], compute)
        rows.append({"method": name, "label": run.label, **spread,
                     "nll": run.history[-1]["nll"] if run.history else float("nan")})
    return pd.DataFrame(rows)


def weight_spread(trained: Mapping[str, TrainedMethod], n_train: int, *,
                  n_samples: int = 100, seed: int = 0) -> pd.DataFrame:
    """Where each Bayes by Hypernet posterior puts its spread, and what its KL estimate misses.

    From ``n_samples`` weight sets of every Bayes by Hypernet run, one row per run and weight
    tensor (and a row ``all``): ``n_weights``, ``mean_abs`` (mean over the tensor's weights of
    |mean over samples|), ``std`` (mean of the per-weight standard deviations), ``variance_share``
    (the tensor's part of the summed variance, which is what the joint estimate's distances
    see), ``kl_bound`` (:func:`gaussian_marginal_kl_bound` over the tensor, per training point:
    the true KL per point is at least the row ``all``), and on the row ``all``
    ``kl_estimate`` (the method's own estimate per point, averaged over the sets of S samples
    the n_samples make, as training draws them).
    """
    n_train = check_int("n_train", n_train, minimum=1)
    n_samples = check_int("n_samples", n_samples, minimum=2)
    rows = []
    for name, run in _bbh_runs(trained).items():

        def compute(run=run, name=name) -> dict[str, Any]:
            method = run.method
            per_set = method.train_samples
            if n_samples < per_set:
                raise ValueError(f"n_samples must be at least {name}'s {per_set} training "
                                 f"samples (one KL estimate), got {n_samples}")
            method.eval()
            with seeded(seed, method.device), torch.no_grad():
                flat = method.target.flatten(method.sample_params(n_samples)).float()
                estimates = [method.kl_estimate(method.target.unflatten(flat[i:i + per_set]))
                             for i in range(0, n_samples - per_set + 1, per_set)]
            bound = gaussian_marginal_kl_bound(flat.cpu(), method.prior_std) / n_train
            mean_abs, variance = flat.mean(0).abs().cpu(), flat.var(0).cpu().double()
            sizes = [math.prod(shape) for shape in method.target.param_shapes.values()]
            tensors = [{"tensor": tensor, "n_weights": size, "mean_abs": float(part_mean.mean()),
                        "std": float(part_variance.sqrt().mean()),
                        "variance_share": float(part_variance.sum() / variance.sum()),
                        "kl_bound": float(part_bound.sum())}
                       for tensor, size, part_mean, part_variance, part_bound
                       in zip(method.target.param_shapes, sizes, mean_abs.split(sizes),
                              variance.split(sizes), bound.split(sizes))]
            return {"tensors": tensors, "kl_bound": float(bound.sum()),
                    "kl_estimate": float(torch.stack(estimates).mean()) / n_train,
                    "std": float(variance.sqrt().mean()), "mean_abs": float(mean_abs.mean())}

        spread = run.evaluated("mnist.weight_spread", {"n_train": n_train, "n_samples": n_samples,
                                                       "seed": seed},
                               EVALUATION_VERSIONS["mnist.weight_spread"], compute)
        for tensor in spread["tensors"]:
            rows.append({"method": name, "label": run.label, **tensor})
        rows.append({"method": name, "label": run.label, "tensor": "all",
                     "n_weights": sum(t["n_weights"] for t in spread["tensors"]),
                     "mean_abs": spread["mean_abs"], "std": spread["std"], "variance_share": 1.0,
                     "kl_bound": spread["kl_bound"], "kl_estimate": spread["kl_estimate"]})
    return pd.DataFrame(rows)


def plot_bbh_objective(objective: pd.DataFrame) -> plt.Figure:
    """NLL, the weighted KL per data point (log axes) and the test error, against the epoch."""
    panels = {"nll": "training NLL per data point", "weighted_kl": "annealed KL / n_train",
              "test_error_pct": "test error (%)"}
    fig = metric_panels(objective, "epoch", panels, "label", "epoch")
    for ax, column in zip(fig.axes, panels):
        if (objective[column].dropna() > 0).all():
            ax.set_yscale("log")
    return fig
