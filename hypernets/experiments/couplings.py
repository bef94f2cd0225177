"""Bayesian Hypernetworks' generalisation study (the ``bhn_couplings`` chapter).

MNIST test error of the Bayesian hypernetwork against its number of RealNVP coupling layers,
trained on a small subset and on the full training set, beside MC dropout, Bayes by Backprop
and MAP. With 0 couplings the flow is its element-wise affine alone: a diagonal Gaussian over
the weight-norm scales, the mean-field posterior the couplings are meant to improve on.

The run of ``k`` couplings is named :data:`RUN_NAME` (``bhn_c4``): the registry's ``bhn`` with
``n_couplings=k`` and the chapter's other ``bhn`` options. Each training-set size and training
seed is one group of runs (:data:`GROUP`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from torch import Tensor

from hypernets import metrics
from hypernets.evaluation import (SD_SUFFIX, noninferiority_verdict, ordering_verdict,
                                  predict_probs, seed_summary, training_curves)
from hypernets.plots import figure_legend
from hypernets.published import method_label
from hypernets.runs import TrainedMethod
from hypernets.training import tensor_digest
from hypernets.validation import check_int_list

#: The run of the Bayesian hypernetwork with k coupling layers.
RUN_NAME = "bhn_c{}"
#: The group of runs of one training-set size and training seed.
GROUP = "n{}_seed{}"
#: The metrics a table over seeds averages.
METRICS = ("error_pct", "nll")
#: "Competitive": at most this many percentage points of test error worse.
ERROR_TOLERANCE_PP = 0.5
BHN_LABEL = method_label("bhn")


def coupling_options(couplings: Sequence[int],
                     options: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, Any]]:
    """Run name -> options of the Bayesian hypernetwork's runs: ``bhn``'s options of
    ``options`` with ``n_couplings`` set, one run per entry of ``couplings``."""
    couplings = check_int_list("couplings", couplings, minimum=0)
    if len(set(couplings)) != len(couplings):
        raise ValueError(f"couplings lists a number twice: {list(couplings)}")
    bhn = dict((options or {}).get("bhn", {}))
    if "n_couplings" in bhn:
        raise ValueError("options['bhn'] may not set n_couplings: the couplings parameter does")
    return {RUN_NAME.format(k): {**bhn, "method": "bhn", "n_couplings": k} for k in couplings}


def run_label(run: TrainedMethod) -> str:
    """The run's label: the method's, with the number of couplings for a Bayesian hypernetwork."""
    k = n_couplings(run)
    if math.isnan(k):
        return run.label
    return f"{BHN_LABEL}, {int(k)} coupling{'' if k == 1 else 's'}"


def curves(runs: Mapping[str, TrainedMethod]) -> pd.DataFrame:
    """:func:`~hypernets.evaluation.training_curves` of one group's runs, labelled by :func:`run_label`."""
    table = training_curves(runs)
    table["label"] = table["method"].map({name: run_label(run) for name, run in runs.items()})
    return table


#: Versions of the evaluations here that a run's record keeps (see
#: :meth:`~hypernets.runs.TrainedMethod.evaluated`; ``tests/test_records.py`` pins the code).
EVALUATION_VERSIONS = {"bhn.n_couplings": 1, "couplings.error": 1}


def n_couplings(run: TrainedMethod) -> float:
    """The run's number of coupling layers; NaN for a run that is not a Bayesian hypernetwork."""
    if run.method_name != "bhn":
        return float("nan")
    return float(run.evaluated("bhn.n_couplings", {}, EVALUATION_VERSIONS["bhn.n_couplings"],
                               lambda: len(run.method.flow.couplings)))


def evaluate_groups(trained: Mapping[tuple[int, int], Mapping[str, TrainedMethod]], x_test: Tensor,
                    y_test: Tensor, *, n_samples: int, batch_size: int = 1000,
                    seed: int = 0) -> pd.DataFrame:
    """Test error and NLL of the mean predictive of every run.

    ``trained`` maps ``(train_size, training seed)`` to its runs. One row per run:
    ``train_size, seed, method, label, n_couplings`` (NaN for the baselines), ``error_pct``,
    ``nll``. ``seed`` of the keyword fixes the test-time samples.
    """
    if not trained:
        raise ValueError("trained must hold the runs of at least one training size and seed")
    arguments = {"x": tensor_digest(x_test)["sha256"], "y": tensor_digest(y_test)["sha256"],
                 "n_samples": n_samples, "batch_size": batch_size, "seed": seed}
    rows = []
    for (size, training_seed), runs in trained.items():
        for name, run in runs.items():
            def compute(run=run) -> dict[str, float]:
                probs = predict_probs(run, x_test, n_samples, batch_size=batch_size, seed=seed)
                return {"error_pct": 100.0 * (1.0 - metrics.accuracy(probs, y_test)),
                        "nll": metrics.nll(probs, y_test)}

            scores = run.evaluated("couplings.error", arguments,
                                   EVALUATION_VERSIONS["couplings.error"], compute)
            rows.append({"train_size": size, "seed": training_seed, "method": name,
                         "label": run_label(run), "n_couplings": n_couplings(run), **scores})
    return pd.DataFrame(rows)


def summarise(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Mean and sd over the training seeds of :data:`METRICS`, per training size and run:
    :func:`~hypernets.evaluation.seed_summary` with ``train_size`` and ``n_couplings``."""
    parts = []
    for size, part in per_seed.groupby("train_size", sort=True):
        summary = seed_summary(part, METRICS)
        couplings = part.groupby("method", sort=False)["n_couplings"].first()
        summary.insert(0, "n_couplings", summary["method"].map(couplings))
        summary.insert(0, "train_size", size)
        parts.append(summary)
    return pd.concat(parts, ignore_index=True)


def claims(summary: pd.DataFrame, *, baselines: Sequence[str] = ("mc_dropout", "bbb"),
           tolerance: float = ERROR_TOLERANCE_PP) -> pd.DataFrame:
    """The study's claims per training size, judged over the seeds.

    * Couplings help: the most couplings are more accurate than none (the diagonal Gaussian),
      :func:`~hypernets.evaluation.ordering_verdict`.
    * Competitive regularisation: with the most couplings, at most ``tolerance`` percentage
      points less accurate than each of ``baselines`` present (:func:`noninferiority_verdict`).
    """
    rows = []
    for size, part in summary.groupby("train_size", sort=True):
        flows = part.dropna(subset=["n_couplings"]).sort_values("n_couplings")
        if flows.empty:
            continue
        most = flows["method"].iloc[-1]
        k = int(flows["n_couplings"].iloc[-1])
        if len(flows) > 1 and int(flows["n_couplings"].iloc[0]) == 0:
            rows.append({"train_size": size, **ordering_verdict(
                part, f"{k} couplings more accurate than 0 ({size} images)", "error_pct",
                most, flows["method"].iloc[0], lower=True)})
        for baseline in baselines:
            if baseline in set(part["method"]):
                rows.append({"train_size": size, **noninferiority_verdict(
                    part, f"{k} couplings competitive with {baseline} ({size} images)",
                    "error_pct", most, baseline, tolerance=tolerance, lower=True)})
    return pd.DataFrame(rows, columns=["train_size", "claim", "seen", "rule", "evidence"])


def plot_error_vs_couplings(summary: pd.DataFrame, metric: str = "error_pct") -> plt.Figure:
    """One panel per training size: the Bayesian hypernetwork's ``metric`` (mean ± sd over
    seeds) against its couplings, and each baseline as a line with its ± sd band."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    sizes = sorted(summary["train_size"].unique())
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.6 * len(sizes) + 1.5, 3.6), squeeze=False)
    baselines = list(dict.fromkeys(summary.loc[summary["n_couplings"].isna(), "label"]))
    colors = dict(zip([BHN_LABEL, *baselines], sns.color_palette(n_colors=len(baselines) + 1)))
    # Baselines can land on the same error (MAP and Bayes by Backprop at a small initial sigma):
    # a dash pattern each keeps both lines visible.
    dashes = dict(zip(baselines, itertools.cycle([(5, 2), (1, 1.5), (6, 2, 1, 2), (3, 3)])))
    for ax, size in zip(axes[0], sizes):
        part = summary[summary["train_size"] == size]
        flows = part.dropna(subset=["n_couplings"]).sort_values("n_couplings")
        ax.errorbar(flows["n_couplings"], flows[metric], yerr=flows[metric + SD_SUFFIX].fillna(0),
                    marker="o", capsize=3, color=colors[BHN_LABEL], label=BHN_LABEL)
        for row in part[part["n_couplings"].isna()].itertuples():
            mean, sd = getattr(row, metric), getattr(row, metric + SD_SUFFIX)
            ax.axhline(mean, color=colors[row.label], dashes=dashes[row.label], linewidth=1.3,
                       label=row.label)
            if pd.notna(sd):
                ax.axhspan(mean - sd, mean + sd, color=colors[row.label], alpha=0.12, linewidth=0)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(list(flows["n_couplings"]), [str(int(k)) for k in flows["n_couplings"]])
        ax.set_xlabel("coupling layers")
        ax.set_ylabel({"error_pct": "test error (%)", "nll": "test NLL"}[metric])
        ax.set_title(f"{size:,} training images")
    figure_legend(fig)
    fig.tight_layout()
    return fig
