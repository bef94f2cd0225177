"""Anomaly detection on MNIST: the Bayesian Hypernetworks suite and HyperGAN's entropy curves.

The ``anomaly_detection`` chapter. Outliers are the positive class and a higher score means more
uncertain (:func:`hypernets.metrics.ood_metrics`).

* :func:`outlier_sets`: notMNIST, and the reference's uniform- and Gaussian-noise images.
* :func:`anomaly_detection`: per method, HyperGAN's ECDFs of the predictive entropy for growing
  numbers of sampled nets; the detection metrics of four scores on every outlier set, with a
  stratified bootstrap interval of the AUROC; and misclassification detection (are the
  model's errors its uncertain test images?).
* :func:`detection_claims`: the papers' claims, judged on paired bootstrap intervals of AUROC
  differences (the same resampled images for both methods).
* The held-out-class setting: :func:`held_out_class_runs` trains on nine digits,
  :func:`held_out_class_experiment` detects the tenth, :func:`mean_over_held_out` and
  :func:`held_out_claims` use the spread over the held-out digits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

from hypernets import metrics
from hypernets.data import NOISE_KINDS, ImageData, ImageSplits, noise_images
from hypernets.evaluation import (
    INTERVAL_SE,
    OOD_METRICS,
    OOD_SCORES,
    SD_SUFFIX,
    entropy_ecdf_table,
    interval_verdict,
    ood_table,
    paired_auroc_verdict,
    predict_probs,
)
from hypernets.runs import RunRequest, TrainedMethod, run_requests
from hypernets.targets import mnist_mlp
from hypernets.validation import check_int, check_int_list

#: Bootstrap resamples of every AUROC interval.
N_RESAMPLES = 1000
#: "Competitive" detection: at most this much below the other method's AUROC.
COMPETITIVE_AUROC = 0.02
#: The detection table's columns: :data:`~hypernets.evaluation.OOD_METRICS` and the AUROC's
#: 95% bootstrap interval.
DETECTION_COLUMNS = ("auroc", "auroc_low", "auroc_high", "aupr_in", "aupr_out", "fpr95")
#: Name of the in-distribution set in :attr:`AnomalyResults.scores` and ``entropy_auc``.
IN_DATA = "in"


def outlier_sets(splits: ImageSplits, *, seed: int = 0) -> dict[str, ImageData]:
    """The outlier sets by name: ``splits.outliers`` (notMNIST) and, shaped like the test set,
    the uniform- and Gaussian-noise images of :func:`hypernets.data.noise_images`."""
    noise = [noise_images(splits.test, kind, seed=seed) for kind in NOISE_KINDS]
    return {data.name: data for data in (splits.outliers, *noise)}


@dataclass(frozen=True)
class AnomalyResults:
    """Entropy curves and detection tables, per method.

    ``ecdf``: method, label, data (``in``/``out``: the test set and ``ecdf_outliers``),
    n_nets (asked), n_nets_used, entropy, cdf.
    ``entropy_auc``: method, label, n_nets, n_nets_used, data (:data:`IN_DATA` or an outlier
    set), entropy_auc.
    ``ood``: method, label, outliers, n_nets_used, score, :data:`DETECTION_COLUMNS`, with all
    drawn nets.
    ``misclassification``: method, label, n_nets_used, error_pct, n_errors, score,
    :data:`DETECTION_COLUMNS`, the misclassified test images positive (``aupr_in`` has the
    correct ones positive); empty without labels.
    ``scores``: ``(method, data, n_nets, score)`` -> the per-image score, for the claims.
    """

    ecdf: pd.DataFrame
    entropy_auc: pd.DataFrame
    ood: pd.DataFrame
    misclassification: pd.DataFrame
    scores: dict[tuple[str, str, int, str], np.ndarray] = field(repr=False)
    n_nets: tuple[int, ...]
    ecdf_outliers: str

    @property
    def outlier_names(self) -> list[str]:
        return list(dict.fromkeys(self.ood["outliers"]))


def _detection_row(score_in: np.ndarray, score_out: np.ndarray, *, n_resamples: int,
                   seed: int) -> dict[str, float]:
    """:data:`DETECTION_COLUMNS` of one score; NaN where a side is empty (e.g. no errors)."""
    if score_in.size == 0 or score_out.size == 0:
        return dict.fromkeys(DETECTION_COLUMNS, float("nan"))
    row = metrics.ood_metrics(score_in, score_out)
    low, high = metrics.auroc_interval(score_in, score_out, n_resamples=n_resamples, seed=seed)
    return {"auroc": row["auroc"], "auroc_low": low, "auroc_high": high,
            "aupr_in": row["aupr_in"], "aupr_out": row["aupr_out"], "fpr95": row["fpr95"]}


def anomaly_detection(trained: Mapping[str, TrainedMethod], x_in: Tensor,
                      outliers: Mapping[str, Tensor], *, y_in: Tensor | None = None,
                      ecdf_outliers: str | None = None, n_nets: Sequence[int] = (5, 10, 100),
                      n_points: int = 200, scores: Mapping[str, str] = OOD_SCORES,
                      batch_size: int = 1000, n_resamples: int = N_RESAMPLES,
                      seed: int = 0) -> AnomalyResults:
    """Entropy curves for each number of sampled nets, and detection of every outlier set and
    of the misclassified test images (with ``y_in``, the test labels) by every score.

    Each method draws ``max(n_nets)`` nets once (fewer for MAP and ensembles, see
    :meth:`~hypernets.methods.base.Method.n_distinct_nets`); the predictive of ``k`` nets uses
    the first ``k`` of them, which are ``k`` independent draws. Detection uses all drawn nets.
    The ECDFs are drawn for ``ecdf_outliers`` (default: the first outlier set).
    """
    n_nets = sorted(set(check_int_list("n_nets", n_nets, minimum=1)))
    n_resamples = check_int("n_resamples", n_resamples, minimum=1)
    if not outliers:
        raise ValueError("outliers must name at least one outlier set")
    ecdf_outliers = next(iter(outliers)) if ecdf_outliers is None else ecdf_outliers
    if ecdf_outliers not in outliers:
        raise ValueError(f"ecdf_outliers must be one of the outlier sets {list(outliers)}, "
                         f"got {ecdf_outliers!r}")
    if IN_DATA in outliers:
        raise ValueError(f"an outlier set may not be called {IN_DATA!r} (the test set's name)")
    if y_in is not None and len(y_in) != len(x_in):
        raise ValueError(f"y_in has {len(y_in)} labels for {len(x_in)} test images")
    ecdf_rows, auc_rows, ood_rows, error_rows = [], [], [], []
    kept: dict[tuple[str, str, int, str], np.ndarray] = {}
    for name, run in trained.items():
        probs = {IN_DATA: predict_probs(run, x_in, n_nets[-1], batch_size=batch_size, seed=seed)}
        probs.update({data: predict_probs(run, x, n_nets[-1], batch_size=batch_size, seed=seed)
                      for data, x in outliers.items()})
        drawn = probs[IN_DATA].shape[0]
        for k in n_nets:
            used = min(k, drawn)
            for data, p in probs.items():
                auc_rows.append({"method": name, "label": run.label, "n_nets": k,
                                 "n_nets_used": used, "data": data,
                                 "entropy_auc": metrics.entropy_auc(p[:used])})
                for score, key in scores.items():
                    kept[(name, data, k, score)] = (
                        metrics.UNCERTAINTY_SCORES[key](p[:used]).to(torch.float64).numpy())
            ecdf_rows.append(entropy_ecdf_table(
                {"in": probs[IN_DATA][:used], "out": probs[ecdf_outliers][:used]},
                n_points=n_points, method=name, label=run.label, n_nets=k, n_nets_used=used))
        base = {"method": name, "label": run.label}
        for data in outliers:
            for score in scores:
                ood_rows.append({**base, "outliers": data, "n_nets_used": drawn, "score": score,
                                 **_detection_row(kept[(name, IN_DATA, n_nets[-1], score)],
                                                  kept[(name, data, n_nets[-1], score)],
                                                  n_resamples=n_resamples, seed=seed)})
        if y_in is not None:
            wrong = (probs[IN_DATA].mean(0).argmax(-1) != y_in.cpu()).numpy()
            for score in scores:
                values = kept[(name, IN_DATA, n_nets[-1], score)]
                error_rows.append({**base, "n_nets_used": drawn,
                                   "error_pct": 100.0 * float(wrong.mean()),
                                   "n_errors": int(wrong.sum()), "score": score,
                                   **_detection_row(values[~wrong], values[wrong],
                                                    n_resamples=n_resamples, seed=seed)})
    error_columns = ["method", "label", "n_nets_used", "error_pct", "n_errors", "score",
                     *DETECTION_COLUMNS]
    return AnomalyResults(
        ecdf=pd.concat(ecdf_rows, ignore_index=True), entropy_auc=pd.DataFrame(auc_rows),
        ood=pd.DataFrame(ood_rows),
        misclassification=pd.DataFrame(error_rows, columns=error_columns),
        scores=kept, n_nets=tuple(n_nets), ecdf_outliers=ecdf_outliers)


def auroc_table(table: pd.DataFrame, columns: str | None = "outliers") -> pd.DataFrame:
    """The AUROCs of a detection table with their 95% intervals as text, ``0.912 [0.905,
    0.919]``: rows (label, score), one column per value of ``columns`` (or one, ``auroc``)."""
    text = table.assign(auroc_text=[
        f"{a:.3f} [{low:.3f}, {high:.3f}]" if np.isfinite(a) else "n/a"
        for a, low, high in zip(table["auroc"], table["auroc_low"], table["auroc_high"])])
    if columns is None:
        return text.set_index(["label", "score"])[["auroc_text"]].rename(
            columns={"auroc_text": "auroc"})
    wide = text.pivot(index=["label", "score"], columns=columns, values="auroc_text")
    order = pd.MultiIndex.from_frame(text[["label", "score"]].drop_duplicates())
    return wide.reindex(index=order, columns=list(dict.fromkeys(text[columns])))


# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------


def auroc_comparison(results: AnomalyResults, claim: str, a: str, b: str, outliers: str, *,
                     n_nets: int, n_nets_b: int | None = None, score: str = "entropy",
                     margin: float = 0.0, n_resamples: int = N_RESAMPLES,
                     seed: int = 0) -> dict[str, Any]:
    """Is ``a``'s AUROC on ``outliers`` above ``b``'s (less ``margin``)? A paired bootstrap.

    ``a`` and ``b`` are run names, or one run at two numbers of nets (``n_nets``, ``n_nets_b``,
    each one of ``results.n_nets``). Both are scored on the same images, so every resample
    draws the same images for both (:func:`~hypernets.evaluation.paired_auroc_verdict`).
    """
    n_nets_b = n_nets if n_nets_b is None else n_nets_b
    pair = []
    for method, k in ((a, n_nets), (b, n_nets_b)):
        key_in, key_out = (method, IN_DATA, k, score), (method, outliers, k, score)
        if key_in not in results.scores or key_out not in results.scores:
            raise ValueError(f"no {score} scores of {method!r} with {k} nets on {outliers!r}; "
                             f"the results have the runs "
                             f"{sorted({key[0] for key in results.scores})}, n_nets "
                             f"{list(results.n_nets)} and outliers {results.outlier_names}")
        pair.append((results.scores[key_in], results.scores[key_out]))
    names = (a, b) if a != b else (f"{a} ({n_nets} nets)", f"{b} ({n_nets_b} nets)")
    return paired_auroc_verdict(claim, pair[0], pair[1], names=names, what=f"{score}, {outliers}",
                                margin=margin, n_resamples=n_resamples, seed=seed)


def detection_claims(results: AnomalyResults, *, score: str = "entropy",
                     n_resamples: int = N_RESAMPLES, seed: int = 0) -> pd.DataFrame:
    """The papers' claims on every outlier set, for the runs present.

    * HyperGAN detects better than a deep ensemble of as many nets: the largest of
      ``results.n_nets`` the ensemble has members for (HyperGAN's claim).
    * HyperGAN detects better with its most nets than with its fewest (its curves).
    * The Bayesian hypernetwork is competitive with MC dropout and Bayes by Backprop (at most
      :data:`COMPETITIVE_AUROC` below) and better than MAP (Bayesian Hypernetworks' claim).
    """
    runs = {key[0] for key in results.scores}
    ood = results.ood.set_index("method")
    rows = []

    def compare(claim, a, b, outliers, **kwargs):
        rows.append({"outliers": outliers, **auroc_comparison(
            results, claim, a, b, outliers, score=score, n_resamples=n_resamples, seed=seed,
            **kwargs)})

    for outliers in results.outlier_names:
        if {"hypergan", "ensemble"} <= runs:
            members = int(ood.loc["ensemble", "n_nets_used"].iloc[0])
            k = max([k for k in results.n_nets if k <= members], default=results.n_nets[0])
            compare(f"HyperGAN detects {outliers} better than the deep ensemble ({k} nets each)",
                    "hypergan", "ensemble", outliers, n_nets=k)
        if "hypergan" in runs and len(results.n_nets) > 1:
            few, many = results.n_nets[0], results.n_nets[-1]
            compare(f"HyperGAN detects {outliers} better with {many} nets than with {few}",
                    "hypergan", "hypergan", outliers, n_nets=many, n_nets_b=few)
        for baseline, margin in (("mc_dropout", COMPETITIVE_AUROC), ("bbb", COMPETITIVE_AUROC),
                                 ("map", 0.0)):
            if {"bhn", baseline} <= runs:
                verb = "competitive with" if margin else "better than"
                compare(f"the Bayesian hypernetwork is {verb} {baseline} on {outliers}", "bhn",
                        baseline, outliers, n_nets=results.n_nets[-1], margin=margin)
    return pd.DataFrame(rows, columns=["outliers", "claim", "seen", "rule", "evidence"])


# ---------------------------------------------------------------------------------------------
# A held-out digit
# ---------------------------------------------------------------------------------------------


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
    """Mean and standard deviation (``<metric>_sd``) of :func:`held_out_class_experiment` over
    the held-out classes, per method and score.

    Adds ``n_held_out``, the number of classes averaged; methods and scores keep their order.
    """
    keys = ["method", "label", "score"]
    columns = ["error_pct", *OOD_METRICS]
    grouped = results.groupby(keys, sort=False)
    mean = grouped[columns].mean()
    spread = grouped[columns].std(ddof=1).add_suffix(SD_SUFFIX)
    table = pd.concat([mean, spread], axis=1)[[c for m in columns for c in (m, m + SD_SUFFIX)]]
    table.insert(0, "n_held_out", grouped["held_out"].nunique())
    return table.reset_index()


def held_out_claims(results: pd.DataFrame, *, score: str = "entropy") -> pd.DataFrame:
    """Bayesian Hypernetworks' claim in the held-out-class setting, for the runs present: the
    Bayesian hypernetwork is competitive with MC dropout and Bayes by Backprop (at most
    :data:`COMPETITIVE_AUROC` below) and better than MAP.

    The interval is the mean over the held-out digits of the per-digit AUROC difference ±
    :data:`~hypernets.evaluation.INTERVAL_SE` standard errors; one digit leaves it undecided.
    """
    table = results[results["score"] == score].pivot(index="held_out", columns="method",
                                                     values="auroc")
    rows = []
    for baseline, margin in (("mc_dropout", COMPETITIVE_AUROC), ("bbb", COMPETITIVE_AUROC),
                             ("map", 0.0)):
        if not {"bhn", baseline} <= set(table.columns):
            continue
        difference = (table["bhn"] - table[baseline]).dropna()
        n = len(difference)
        mean = float(difference.mean())
        half = INTERVAL_SE * float(difference.std(ddof=1)) / n ** 0.5 if n > 1 else float("nan")
        verb = "competitive with" if margin else "better than"
        relation = f"> {baseline}" if margin == 0 else f"≥ {baseline} − {margin:g}"
        rule = (f"bhn {relation} in AUROC ({score}): the mean per-digit difference ± "
                f"{INTERVAL_SE:g} standard errors over the held-out digits lies above {-margin:g}")
        evidence = (f"AUROC bhn − {baseline} = {mean:+.3f} ± {half:.3f} ({n} digits)" if n > 1
                    else f"AUROC bhn − {baseline} = {mean:+.3f} from one digit: no spread")
        rows.append(interval_verdict(f"the Bayesian hypernetwork is {verb} {baseline} on a "
                                     f"held-out digit", mean - half, mean + half, rule=rule,
                                     evidence=evidence, margin=margin))
    return pd.DataFrame(rows, columns=["claim", "seen", "rule", "evidence"])


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


def plot_detection(table: pd.DataFrame, *, panel: str | None = "outliers") -> plt.Figure:
    """AUROC bars per method and score with their 95% bootstrap intervals; one panel per value
    of the ``panel`` column (an outlier set), or one panel (``None``); chance dashed."""
    panels = list(dict.fromkeys(table[panel])) if panel else [None]
    labels = list(dict.fromkeys(table["label"]))
    scores = list(dict.fromkeys(table["score"]))
    colors = sns.color_palette(n_colors=len(scores))
    height = 0.8 / len(scores)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.5,
                                                      0.55 * len(labels) + 1.5),
                             sharey=True, squeeze=False)
    for ax, name in zip(axes[0], panels):
        part = table if name is None else table[table[panel] == name]
        for j, score in enumerate(scores):
            rows = part[part["score"] == score].set_index("label").reindex(labels)
            y = np.arange(len(labels)) + (j - (len(scores) - 1) / 2) * height
            errors = np.nan_to_num(np.vstack([rows["auroc"] - rows["auroc_low"],
                                              rows["auroc_high"] - rows["auroc"]]))
            ax.barh(y, rows["auroc"], height=height, xerr=errors, color=colors[j], label=score,
                    error_kw={"elinewidth": 1, "capsize": 2})
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_xlim(0.0, 1.0)
        ax.set_xlabel("AUROC (95% bootstrap interval)")
        if name is not None:
            ax.set_title(name)
    axes[0][0].set_yticks(np.arange(len(labels)), labels)
    axes[0][0].invert_yaxis()
    axes[0][-1].legend(title="score", loc="upper left", bbox_to_anchor=(1.01, 1.0),
                       frameon=False)
    fig.tight_layout()
    return fig


def plot_held_out(results: pd.DataFrame, metric: str = "auroc") -> plt.Figure:
    """Mean ``metric`` over the held-out digits per method and score, ± its sd over the digits."""
    if metric not in OOD_METRICS:
        raise ValueError(f"metric must be one of {OOD_METRICS}, got {metric!r}")
    labels = list(dict.fromkeys(results["label"]))
    fig, ax = plt.subplots(figsize=(7.5, 0.55 * len(labels) + 1.5))
    sns.barplot(data=results, y="label", x=metric, hue="score", order=labels, ax=ax,
                orient="h", errorbar="sd", err_kws={"linewidth": 1}, capsize=0.1)
    if metric == "auroc":
        ax.axvline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set_ylabel("")
    ax.set_xlabel(f"{metric} (mean ± sd over the held-out digits)")
    ax.legend(title="score", loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
