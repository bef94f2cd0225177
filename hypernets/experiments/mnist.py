"""MNIST experiments: train a list of methods, evaluate them, detect outliers, and plot.

Two chapters use this module. ``mnist_table`` reproduces Bayes by Hypernet's MNIST table
(LeNet; error, entropy AUCs on MNIST and notMNIST, training time) and its table of hypernetwork
architectures. ``anomaly_detection`` runs the Bayesian Hypernetworks protocol (threshold-free
detection metrics of several uncertainty scores, on notMNIST and on a held-out MNIST class)
and HyperGAN's empirical CDFs of the predictive entropy for growing numbers of sampled nets.

The methods are trained by :mod:`hypernets.runs` and evaluated with
:mod:`hypernets.evaluation`. Every table is a pandas DataFrame with a ``method`` column of run
names (a registry name, or a variant such as ``bbh_single``, see :mod:`hypernets.runs`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

from hypernets import metrics
from hypernets.data import ImageData
from hypernets.evaluation import (
    OOD_METRICS,
    accuracy_and_outlier_claims,
    OOD_SCORES,
    classification_row,
    entropy_ecdf_table,
    ood_table,
    ordering_verdict,
    predict_probs,
)
from hypernets.methods.bayes_by_hypernet import BayesByHypernet
from hypernets.plots import metric_panels
from hypernets.published import method_label as published_label
from hypernets.runs import RunRequest, TrainedMethod, run_requests
from hypernets.seeding import seeded
from hypernets.targets import mnist_mlp
from hypernets.validation import check_int, check_int_list

# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def evaluate_methods(trained: Mapping[str, TrainedMethod], x_test: Tensor, y_test: Tensor,
                     x_ood: Tensor, *, n_samples: int, batch_size: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """One row per run: error, entropy AUCs, NLL, ECE, Brier, training time, nets used.

    Columns: ``method, label, n_nets`` (distinct sampled nets, see
    :meth:`~hypernets.methods.base.Method.n_distinct_nets`),
    the keys of :func:`classification_row` and ``train_time_s``.
    """
    rows = []
    for name, run in trained.items():
        probs_in = predict_probs(run, x_test, n_samples, batch_size=batch_size, seed=seed)
        probs_out = predict_probs(run, x_ood, n_samples, batch_size=batch_size, seed=seed)
        rows.append({"method": name, "label": run.label, "n_nets": probs_in.shape[0],
                     **classification_row(probs_in, y_test, probs_out),
                     "train_time_s": run.train_time_s})
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


def bbh_architecture(method_options: Mapping[str, Mapping[str, Any]] | None) -> str:
    """The architecture of the ``bbh`` run: its option, else the method's default."""
    default = inspect.signature(BayesByHypernet).parameters["architecture"].default
    return (method_options or {}).get("bbh", {}).get("architecture", default)


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
    main = bbh_architecture(method_options)
    return {row: {**bbh, "method": "bbh", "architecture": architecture,
                  **(dict(architecture_options or {}) if architecture == "single" else {})}
            for architecture, row in ARCHITECTURE_ROWS.items() if architecture != main}


def architecture_results(results: pd.DataFrame, variant_results: pd.DataFrame,
                         bbh_architecture: str) -> pd.DataFrame:
    """Rows of the architecture table, in :data:`ARCHITECTURE_ROWS` order.

    ``results`` is the main :func:`evaluate_methods` table, whose ``bbh`` row (of architecture
    ``bbh_architecture``) becomes that architecture's row, so it is not trained twice;
    ``variant_results`` has the runs of :func:`architecture_variant_options`.
    """
    main = results[results["method"] == "bbh"]
    if len(main) != 1:
        raise ValueError(f"architecture_results needs one 'bbh' row in results, got "
                         f"{list(results['method'])}")
    if bbh_architecture not in ARCHITECTURE_ROWS:
        raise ValueError(f"bbh_architecture must be one of {list(ARCHITECTURE_ROWS)}, got "
                         f"{bbh_architecture!r}")
    row = ARCHITECTURE_ROWS[bbh_architecture]
    table = pd.concat([variant_results, main.assign(method=row, label=published_label(row))],
                      ignore_index=True)
    missing = set(ARCHITECTURE_ROWS.values()) - set(table["method"])
    if missing:
        raise ValueError(f"architecture_results: no rows for {sorted(missing)} in "
                         f"variant_results {list(variant_results['method'])}")
    order = {name: i for i, name in enumerate(ARCHITECTURE_ROWS.values())}
    table = table[table["method"].isin(order)]
    return table.sort_values("method", key=lambda m: m.map(order)).reset_index(drop=True)


def architecture_over_seeds(per_seed: pd.DataFrame, variant_per_seed: pd.DataFrame,
                            bbh_architecture: str) -> pd.DataFrame:
    """:func:`architecture_results` for every seed of two :func:`evaluate_seeds` tables."""
    seeds = list(dict.fromkeys(per_seed["seed"]))
    if set(seeds) != set(variant_per_seed["seed"]):
        raise ValueError(f"the main runs have seeds {sorted(seeds)}, the variants "
                         f"{sorted(set(variant_per_seed['seed']))}: train both for every seed")
    return pd.concat([architecture_results(per_seed[per_seed["seed"] == s],
                                           variant_per_seed[variant_per_seed["seed"] == s],
                                           bbh_architecture) for s in seeds], ignore_index=True)


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
    for name, run in trained.items():
        if not isinstance(run.method, BayesByHypernet):
            continue
        for record in run.history:
            rows.append({"method": name, "label": run.label, "epoch": record["epoch"],
                         "nll": record["nll"], "kl_per_point": record["kl"] / n_train,
                         "weighted_kl": record["anneal"] * record["kl"] / n_train,
                         "test_error_pct": record.get("test_error_pct", float("nan"))})
    if not rows:
        raise ValueError(f"no Bayes by Hypernet run among {list(trained)}")
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
    for name, run in trained.items():
        method = run.method
        if not isinstance(method, BayesByHypernet):
            continue
        method.eval()
        with seeded(seed, method.device), torch.no_grad():
            estimates = torch.stack([method.kl_estimate(method.sample_params(method.train_samples))
                                     for _ in range(n_draws)]) / n_train
        rows.append({"method": name, "label": run.label, "n_weights": method.target.num_params,
                     "samples_per_estimate": method.train_samples,
                     "mean": float(estimates.mean()), "sd": float(estimates.std()),
                     "nll": run.history[-1]["nll"] if run.history else float("nan")})
    if not rows:
        raise ValueError(f"no Bayes by Hypernet run among {list(trained)}")
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


# ---------------------------------------------------------------------------------------------
# Anomaly detection
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AnomalyResults:
    """HyperGAN's entropy ECDFs and the Bayesian Hypernetworks detection table, per method.

    ``ecdf``: method, label, data (``in``/``out``), n_nets (asked), n_nets_used, entropy, cdf.
    ``entropy_auc``: method, label, n_nets, n_nets_used, entropy_auc_in, entropy_auc_out.
    ``ood``: method, label, n_nets_used, score and :data:`OOD_METRICS`, at the largest n_nets.
    """

    ecdf: pd.DataFrame
    entropy_auc: pd.DataFrame
    ood: pd.DataFrame


def anomaly_detection(trained: Mapping[str, TrainedMethod], x_in: Tensor, x_out: Tensor, *,
                      n_nets: Sequence[int] = (5, 10, 100), n_points: int = 200,
                      scores: Mapping[str, str] = OOD_SCORES, batch_size: int = 1000,
                      seed: int = 0) -> AnomalyResults:
    """Entropy ECDFs for each number of sampled nets and detection metrics per score.

    Each method draws ``max(n_nets)`` nets once (fewer for MAP and ensembles, see
    :meth:`~hypernets.methods.base.Method.n_distinct_nets`); the predictive of ``k`` nets uses
    the first ``k`` of them, which are ``k`` independent draws. Detection metrics use all drawn
    nets.
    """
    n_nets = sorted(set(check_int_list("n_nets", n_nets, minimum=1)))
    ecdf_rows, auc_rows, ood_rows = [], [], []
    for name, run in trained.items():
        probs = {"in": predict_probs(run, x_in, n_nets[-1], batch_size=batch_size, seed=seed),
                 "out": predict_probs(run, x_out, n_nets[-1], batch_size=batch_size, seed=seed)}
        for k in n_nets:
            used = min(k, probs["in"].shape[0])
            auc_rows.append({"method": name, "label": run.label, "n_nets": k, "n_nets_used": used,
                             "entropy_auc_in": metrics.entropy_auc(probs["in"][:used]),
                             "entropy_auc_out": metrics.entropy_auc(probs["out"][:used])})
            ecdf_rows.append(entropy_ecdf_table({part: p[:used] for part, p in probs.items()},
                                                n_points=n_points, method=name, label=run.label,
                                                n_nets=k, n_nets_used=used))
        table = ood_table(probs["in"], probs["out"], scores)
        table.insert(0, "n_nets_used", probs["in"].shape[0])
        table.insert(0, "label", run.label)
        table.insert(0, "method", name)
        ood_rows.append(table)
    return AnomalyResults(pd.concat(ecdf_rows, ignore_index=True), pd.DataFrame(auc_rows),
                          pd.concat(ood_rows, ignore_index=True))


def held_out_split(data: ImageData, held_out: int) -> tuple[Tensor, Tensor, Tensor]:
    """Images of the other classes, their labels renumbered 0..C-2, and the images of ``held_out``.

    Labels above ``held_out`` move down by one so that the remaining classes are contiguous.
    """
    held_out = check_int("held_out (a class index)", held_out, minimum=0,
                         maximum=len(data.classes) - 1)
    inside = data.y != held_out
    labels = data.y[inside]
    return data.x[inside], labels - (labels > held_out).long(), data.x[~inside]


def held_out_class_runs(methods: Sequence[str], train: ImageData, *,
                        held_out_classes: Sequence[int], epochs: int, batch_size: int,
                        hidden: Sequence[int] = (256, 256, 256),
                        device: str | torch.device = "cpu", seed: int = 0,
                        options: Mapping[str, Mapping[str, Any]] | None = None,
                        precision: str = "fp32") -> dict[int, list[RunRequest]]:
    """The runs of the held-out-class setting: per class, ``methods`` trained on the others.

    The target is :func:`mnist_mlp` with ``hidden`` and one output per remaining class.
    """
    held_out_classes = check_int_list("held_out_classes", held_out_classes, minimum=0,
                                      maximum=len(train.classes) - 1)
    runs = {}
    for held_out in held_out_classes:
        x_train, y_train, _ = held_out_split(train, held_out)
        target = mnist_mlp(len(train.classes) - 1, hidden)
        runs[held_out] = run_requests(methods, target, x_train, y_train, epochs=epochs,
                                      batch_size=batch_size, device=device, seed=seed,
                                      options=options, precision=precision)
    return runs


def held_out_class_experiment(trained: Mapping[int, Mapping[str, TrainedMethod]],
                              test: ImageData, *, n_samples: int,
                              scores: Mapping[str, str] = OOD_SCORES,
                              eval_batch_size: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Detect each held-out class with the runs trained without it (:func:`held_out_class_runs`).

    ``trained`` maps each held-out class to its trained runs. The in-distribution test set is
    the test images of the other classes, the outliers the test images of the held-out class.
    Returns one row per (held_out, method, score): ``held_out, method, label, error_pct`` (on
    the remaining classes), ``score`` and :data:`OOD_METRICS`.
    """
    tables = []
    for held_out, runs in trained.items():
        x_in, y_in, x_out = held_out_split(test, held_out)
        for name, run in runs.items():
            probs_in = predict_probs(run, x_in, n_samples, batch_size=eval_batch_size, seed=seed)
            probs_out = predict_probs(run, x_out, n_samples, batch_size=eval_batch_size, seed=seed)
            table = ood_table(probs_in, probs_out, scores)
            table.insert(0, "error_pct", 100.0 * (1.0 - metrics.accuracy(probs_in, y_in)))
            table.insert(0, "label", run.label)
            table.insert(0, "method", name)
            table.insert(0, "held_out", held_out)
            tables.append(table)
    if not tables:
        raise ValueError("held_out_class_experiment needs the trained runs of at least one class")
    return pd.concat(tables, ignore_index=True)


def mean_over_held_out(results: pd.DataFrame) -> pd.DataFrame:
    """Mean of :func:`held_out_class_experiment` over the held-out classes, per method and score.

    Adds ``n_held_out``, the number of classes averaged; methods and scores keep their order.
    """
    keys = ["method", "label", "score"]
    columns = ["error_pct", *OOD_METRICS]
    grouped = results.groupby(keys, sort=False)
    mean = grouped[columns].mean()
    mean.insert(0, "n_held_out", grouped["held_out"].nunique())
    return mean.reset_index()


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def plot_entropy_ecdfs(ecdf: pd.DataFrame, in_name: str = "MNIST test",
                       out_name: str = "outliers") -> plt.Figure:
    """HyperGAN-style ECDFs of the predictive entropy: rows in/out data, one column per n_nets.

    ``in_name`` and ``out_name`` title the rows of the test set and the outliers.

    Entropies are in nats, as on every page, from 0 (one-hot) to log C (uniform). On the
    outliers a curve low and to the right (high entropy) is what an uncertainty-aware model
    should show; on the test set a curve high on the left.
    """
    n_nets = sorted(ecdf["n_nets"].unique())
    labels = list(dict.fromkeys(ecdf["label"]))
    palette = dict(zip(labels, sns.color_palette(n_colors=len(labels))))
    fig, axes = plt.subplots(2, len(n_nets), figsize=(3.6 * len(n_nets), 6.4), sharex=True,
                             sharey=True, squeeze=False)
    titles = {"in": in_name, "out": out_name}
    for row, data in enumerate(("in", "out")):
        for col, k in enumerate(n_nets):
            ax = axes[row][col]
            part = ecdf[(ecdf["data"] == data) & (ecdf["n_nets"] == k)]
            for label in labels:
                curve = part[part["label"] == label]
                if curve.empty:
                    continue
                ax.plot(curve["entropy"], curve["cdf"], color=palette[label],
                        label=label, drawstyle="steps-post")
            ax.set_title(f"{titles[data]}, {k} nets")
            ax.set_xlabel("predictive entropy (nats)" if row == 1 else "")
            ax.set_ylabel("fraction of inputs" if col == 0 else "")
    fig.tight_layout()
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    return fig


def plot_ood_scores(ood: pd.DataFrame, metric: str = "auroc") -> plt.Figure:
    """One bar per (method, score) of a detection table; a dashed line marks chance for AUROC."""
    if metric not in OOD_METRICS:
        raise ValueError(f"metric must be one of {OOD_METRICS}, got {metric!r}")
    labels = list(dict.fromkeys(ood["label"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.5 * len(labels) + 1.5))
    sns.barplot(data=ood, y="label", x=metric, hue="score", order=labels, ax=ax, orient="h")
    if metric == "auroc":
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylabel("")
    ax.legend(title="score", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
