"""HyperGAN's classification tables (the ``hypergan_tables`` chapter).

MNIST with HyperGAN's small convolutional net (``mnist_small_conv``) and CIFAR-10, all ten
classes, with its CIFAR net (``cifar_small_conv``). Per method and training seed: the test
accuracy of single sampled nets (their mean, and their spread across nets) and of the mean
predictive of ensembles of 5, 10 and 100 sampled nets (:data:`ENSEMBLE_SIZES`), the sizes of
HyperGAN's tables. MAP has one net and a deep ensemble at most its members: its row then uses
what it has (``n_nets_used``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

from hypernets import metrics
from hypernets.evaluation import (
    SD_SUFFIX,
    count_of,
    noninferiority_verdict,
    predict_probs,
    ranking_prose,
    seed_summary,
    verdict_prose,
)
from hypernets.plots import figure_legend
from hypernets.runs import TrainedMethod
from hypernets.training import tensor_digest
from hypernets.validation import check_int, check_int_list

#: HyperGAN's ensemble sizes.
ENSEMBLE_SIZES = (5, 10, 100)
#: The data sets of the chapter and their target nets.
TARGETS = {"mnist": "mnist_small_conv", "cifar10": "cifar_small_conv"}
#: "Competitive with fully supervised learning": at most this many percentage points of test
#: accuracy below MAP, per data set.
ACCURACY_TOLERANCE_PP = {"mnist": 0.5, "cifar10": 2.0}


#: Versions of the evaluations here that a run's record keeps (see
#: :meth:`~hypernets.runs.TrainedMethod.evaluated`; ``tests/test_records.py`` pins the code).
EVALUATION_VERSIONS = {"accuracy_by_nets": 1}


def accuracy_column(k: int) -> str:
    """The column of the accuracy (%) of the mean predictive of ``k`` sampled nets."""
    return f"accuracy_{k}"


def accuracy_by_nets(trained: Mapping[str, TrainedMethod], x: Tensor, y: Tensor, *,
                     sizes: Sequence[int] = ENSEMBLE_SIZES, batch_size: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """Test accuracy (%) of single nets and of ensembles of the first ``k`` sampled nets.

    Each run draws ``max(sizes)`` nets once (fewer for MAP and ensembles,
    :meth:`~hypernets.methods.base.Method.n_distinct_nets`). One row per run: ``method,
    label, n_nets_used, single_accuracy`` (the mean accuracy of the drawn nets, each alone),
    ``single_accuracy_spread`` (its sd across those nets; 0 for one net) and
    :func:`accuracy_column` of every size (``k`` capped at the nets drawn).
    """
    sizes = sorted(set(check_int_list("sizes", sizes, minimum=1)))
    arguments = {"x": tensor_digest(x)["sha256"], "y": tensor_digest(y)["sha256"],
                 "sizes": sizes, "batch_size": batch_size, "seed": seed}
    rows = []
    for name, run in trained.items():
        def compute(run=run) -> dict[str, float]:
            probs = predict_probs(run, x, sizes[-1], batch_size=batch_size, seed=seed)
            labels = y.cpu()
            singles = torch.tensor([metrics.accuracy(p[None], labels) for p in probs])
            row = {"n_nets_used": probs.shape[0],
                   "single_accuracy": 100.0 * float(singles.mean()),
                   "single_accuracy_spread":
                       100.0 * float(singles.std()) if len(singles) > 1 else 0.0}
            for k in sizes:
                row[accuracy_column(k)] = 100.0 * metrics.accuracy(probs[:k], labels)
            return row

        row = run.evaluated("accuracy_by_nets", arguments, EVALUATION_VERSIONS["accuracy_by_nets"],
                            compute)
        rows.append({"method": name, "label": run.label, **row})
    return pd.DataFrame(rows)


def table_metrics(sizes: Sequence[int] = ENSEMBLE_SIZES) -> tuple[str, ...]:
    """The columns of :func:`accuracy_by_nets` that a table over seeds averages."""
    return ("single_accuracy", *(accuracy_column(k) for k in sorted(sizes)))


def accuracy_over_seeds(trained: Mapping[int, Mapping[str, TrainedMethod]], x: Tensor, y: Tensor,
                        **kwargs) -> pd.DataFrame:
    """:func:`accuracy_by_nets` for the runs of every training seed, with a ``seed`` column."""
    if not trained:
        raise ValueError("trained must hold the runs of at least one seed")
    return pd.concat([accuracy_by_nets(runs, x, y, **kwargs).assign(seed=s)
                      for s, runs in trained.items()], ignore_index=True)


def table_claims(summary: pd.DataFrame, data_set: str, *,
                 sizes: Sequence[int] = ENSEMBLE_SIZES) -> pd.DataFrame:
    """HyperGAN's claim on one data set, "competitive performance to fully supervised
    learning", as rules on a :func:`~hypernets.evaluation.seed_summary` of
    :func:`accuracy_over_seeds`: its largest ensemble and its single nets at most
    :data:`ACCURACY_TOLERANCE_PP` below MAP (:func:`noninferiority_verdict`), and its
    ensemble of the deep ensemble's size at most as much below the deep ensemble."""
    if data_set not in ACCURACY_TOLERANCE_PP:
        raise ValueError(f"data_set must be one of {sorted(ACCURACY_TOLERANCE_PP)}, got {data_set!r}")
    tolerance = ACCURACY_TOLERANCE_PP[data_set]
    present = set(summary["method"])
    largest = accuracy_column(max(sizes))
    rows = []
    if {"hypergan", "map"} <= present:
        rows.append(noninferiority_verdict(summary, f"HyperGAN's {max(sizes)} nets competitive with MAP",
                                           largest, "hypergan", "map", tolerance=tolerance,
                                           lower=False))
        rows.append(noninferiority_verdict(summary, "a single HyperGAN net competitive with MAP",
                                           "single_accuracy", "hypergan", "map",
                                           tolerance=tolerance, lower=False))
    if {"hypergan", "ensemble"} <= present:
        members = int(summary.set_index("method").loc["ensemble", "n_nets_used"])
        k = max([k for k in sizes if k <= members], default=min(sizes))
        rows.append(noninferiority_verdict(
            summary, f"HyperGAN's {k} nets competitive with the deep ensemble of {members}",
            accuracy_column(k), "hypergan", "ensemble", tolerance=tolerance, lower=False))
    return pd.DataFrame(rows, columns=["claim", "seen", "rule", "evidence"])


def summarise(per_seed: pd.DataFrame, sizes: Sequence[int] = ENSEMBLE_SIZES) -> pd.DataFrame:
    """:func:`~hypernets.evaluation.seed_summary` of :func:`accuracy_over_seeds`, with the
    nets each run could offer (``n_nets_used``)."""
    summary = seed_summary(per_seed, table_metrics(sizes))
    used = per_seed.groupby("method", sort=False)["n_nets_used"].first()
    summary.insert(3, "n_nets_used", summary["method"].map(used))
    return summary


#: The data sets' names in prose.
DATA_SET_NAMES = {"mnist": "MNIST", "cifar10": "CIFAR-10"}


def conclusion(summaries: Mapping[str, pd.DataFrame], claims: Mapping[str, pd.DataFrame],
               epochs: Mapping[str, int], sizes: Sequence[int] = ENSEMBLE_SIZES) -> str:
    """The page's conclusion as Markdown prose, computed from its tables: per data set (keys of
    :data:`TARGETS`), the runs' epochs, the methods ranked by the accuracy of the most sampled
    nets and of single nets (:func:`summarise` tables), and the :func:`table_claims` grouped
    by verdict."""
    sizes = check_int_list("ensemble_sizes", sizes, minimum=1)
    largest = max(sizes)
    paragraphs = []
    for name, summary in summaries.items():
        if name not in DATA_SET_NAMES:
            raise ValueError(f"summaries must be keyed by data sets of {sorted(DATA_SET_NAMES)}, "
                             f"got {name!r}")
        n_epochs = check_int(f"epochs[{name!r}]", epochs[name], minimum=1)
        paragraphs.append(
            f"**{DATA_SET_NAMES[name]}** ({count_of(n_epochs, 'epoch')}, the paper trains to "
            f"convergence; {count_of(int(summary['n_seeds'].min()), 'training seed')}). "
            f"Accuracy of the mean predictive of {largest} sampled nets (of every net where a run "
            f"has fewer), highest first: "
            + ranking_prose(summary, accuracy_column(largest), unit=" %", ascending=False)
            + "; of single nets: "
            + ranking_prose(summary, "single_accuracy", unit=" %", ascending=False)
            + f". HyperGAN's claim: {verdict_prose(claims[name])}.")
    return "\n\n".join(paragraphs)


def plot_accuracy_by_nets(summaries: Mapping[str, pd.DataFrame],
                          sizes: Sequence[int] = ENSEMBLE_SIZES) -> plt.Figure:
    """Test accuracy against the number of sampled nets (1: the mean single net), mean ± sd
    over seeds, one panel per data set (``summaries``: data set -> :func:`summarise`)."""
    sizes = sorted(sizes)
    xs = [1, *sizes]
    columns = table_metrics(sizes)
    labels = list(dict.fromkeys(label for s in summaries.values() for label in s["label"]))
    colors = dict(zip(labels, sns.color_palette(n_colors=len(labels))))
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.6 * len(summaries) + 2.0, 3.8),
                             squeeze=False)
    for ax, (name, summary) in zip(axes[0], summaries.items()):
        for row in summary.itertuples(index=False):
            means = [getattr(row, c) for c in columns]
            sds = [0.0 if pd.isna(getattr(row, c + SD_SUFFIX)) else getattr(row, c + SD_SUFFIX)
                   for c in columns]
            ax.errorbar(xs, means, yerr=sds, marker="o", capsize=3, color=colors[row.label],
                        label=row.label)
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(k) for k in xs])
        ax.set_xlabel("sampled nets (1: a single net)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(name)
    figure_legend(fig)
    fig.tight_layout()
    return fig
