"""Evaluating trained methods: seeded predictions over a data set and the tables built on them.

Shared by every chapter: the predictive of a run's sampled nets on a whole data set, Bayes by
Hypernet's classification row, the detection table of several uncertainty scores, and the
empirical CDFs of the predictive entropy.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from torch import Tensor

from hypernets import metrics
from hypernets.methods.base import Method
from hypernets.runs import TrainedMethod
from hypernets.seeding import seeded
from hypernets.training import predict

#: The Bayesian Hypernetworks scores: table name -> key of :data:`hypernets.metrics.UNCERTAINTY_SCORES`.
#: ``std`` is scored by the variance of the class probabilities across the sampled nets: the
#: square root is monotone, so every threshold metric (AUROC, AUPR, FPR at 95% TPR) of the
#: standard deviation equals that of the variance. ``max_prob`` is 1 - max probability, so that
#: higher means more uncertain for every score.
OOD_SCORES: dict[str, str] = {"entropy": "entropy", "bald": "bald", "max_prob": "max_prob",
                              "std": "variance"}

OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


def predict_probs(method: Method | TrainedMethod, x: Tensor, n_samples: int, *,
                  batch_size: int = 1000, seed: int = 0) -> Tensor:
    """Class probabilities of sampled nets on all of ``x``: ``[S', N, C]`` on the CPU.

    ``S' = method.n_distinct_nets(n_samples)``: MAP gives one net and an ensemble at most its
    members, rather than copies. The nets are drawn with torch's RNG seeded by ``seed``
    (:func:`~hypernets.seeding.seeded`), so they do not depend on what ran before.
    """
    if isinstance(method, TrainedMethod):
        method = method.method
    n_nets = method.n_distinct_nets(n_samples)
    with seeded(seed, method.device):
        return predict(method, x, n_nets, batch_size=batch_size)


def classification_row(probs_in: Tensor, labels: Tensor, probs_out: Tensor) -> dict[str, float]:
    """Bayes by Hypernet's numbers plus NLL, ECE and Brier from predictions on test and outlier sets.

    ``error_pct`` is the error of the mean predictive in %, ``entropy_auc_in``/``_out`` the
    areas under the ECDF of the predictive entropy (:func:`hypernets.metrics.entropy_auc`).
    """
    scores = metrics.classification_metrics(probs_in, labels)
    return {
        "error_pct": 100.0 * (1.0 - scores["accuracy"]),
        "entropy_auc_in": metrics.entropy_auc(probs_in),
        "entropy_auc_out": metrics.entropy_auc(probs_out),
        "nll": scores["nll"],
        "ece": scores["ece"],
        "brier": scores["brier"],
    }


def ood_table(probs_in: Tensor, probs_out: Tensor,
              scores: Mapping[str, str] = OOD_SCORES) -> pd.DataFrame:
    """Detection metrics of each score (outliers positive): columns ``score`` and :data:`OOD_METRICS`.

    ``scores`` maps table names to keys of :data:`hypernets.metrics.UNCERTAINTY_SCORES`.
    """
    rows = [{"score": name, **metrics.ood_metrics_from_probs(probs_in, probs_out, score=key)}
            for name, key in scores.items()]
    return pd.DataFrame(rows)


def entropy_ecdf_table(probs: Mapping[str, Tensor], *, n_points: int = 200,
                       **columns) -> pd.DataFrame:
    """Empirical CDFs of the predictive entropy of each data part (e.g. ``in``/``out``).

    ``probs`` maps a part's name to its probabilities ``[S, N, C]``; ``columns`` (such as
    ``method`` and ``label``) are added to every row. Columns: ``*columns, data, entropy,
    cdf`` on ``n_points`` entropies in [0, log C] (:func:`hypernets.metrics.entropy_ecdf`).
    """
    parts = []
    for part, p in probs.items():
        grid, cdf = metrics.entropy_ecdf(p, n_points=n_points)
        parts.append(pd.DataFrame({**columns, "data": part, "entropy": grid.numpy(),
                                   "cdf": cdf.numpy()}))
    return pd.concat(parts, ignore_index=True)


def training_curves(trained: Mapping[str, TrainedMethod]) -> pd.DataFrame:
    """One row per run and epoch: ``method, label, epoch, loss`` and the per-epoch evaluation
    (``test_error_pct`` for runs trained with :class:`~hypernets.runs.TestError`)."""
    rows = [{"method": name, "label": run.label, **record}
            for name, run in trained.items() for record in run.history]
    columns = ["method", "label", "epoch", "loss"]
    table = pd.DataFrame(rows)
    extra = [c for c in ("test_error_pct",) if c in table.columns]
    return table[columns + extra] if rows else pd.DataFrame(columns=columns)
