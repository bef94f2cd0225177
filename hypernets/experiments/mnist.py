"""MNIST experiments: train a list of methods, evaluate them, detect outliers, and plot.

Two chapters use this module. ``mnist_table`` reproduces Bayes by Hypernet's MNIST table
(LeNet; error, entropy AUCs on MNIST and notMNIST, training time) and its table of hypernetwork
architectures. ``anomaly_detection`` runs the Bayesian Hypernetworks protocol (threshold-free
detection metrics of several uncertainty scores, on notMNIST and on a held-out MNIST class)
and HyperGAN's empirical CDFs of the predictive entropy for growing numbers of sampled nets.

The functions are general: any method of :mod:`hypernets.methods.registry`, any target (a
name of :func:`hypernets.targets.get_target` or a :class:`~hypernets.targets.TargetNet`), data
tensors, epochs, number of sampled nets and device. Every table is a pandas DataFrame with a
``method`` column of run names. A run name is a registry name (``bbh``) or a variant whose
options name the registry method (``{"bbh_single": {"method": "bbh", "per_layer": False}}``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

from hypernets import metrics
from hypernets.data import ImageData, load_mnist, load_notmnist
from hypernets.likelihoods import Categorical, Likelihood
from hypernets.methods.base import Method
from hypernets.methods.ensemble import DeepEnsemble
from hypernets.methods.map import MAP
from hypernets.methods.registry import METHODS, make_method, method_label
from hypernets.published import method_label as published_label
from hypernets.targets import Flatten, TargetNet, get_target, mlp
from hypernets.training import fit, predict

#: Keys of a run's options that set training, not the method's constructor.
FIT_OPTIONS = ("method", "lr", "epochs", "steps", "batch_size")

#: The Bayesian Hypernetworks scores: table name -> key of :data:`hypernets.metrics.UNCERTAINTY_SCORES`.
#: ``std`` is scored by the variance of the class probabilities across the sampled nets: the
#: square root is monotone, so every threshold metric (AUROC, AUPR, FPR at 95% TPR) of the
#: standard deviation equals that of the variance. ``max_prob`` is 1 - max probability, so that
#: higher means more uncertain for every score.
OOD_SCORES: dict[str, str] = {"entropy": "entropy", "bald": "bald", "max_prob": "max_prob",
                              "std": "variance"}

OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")


# ---------------------------------------------------------------------------------------------
# Data and targets
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MnistData:
    """MNIST training and test images and the notMNIST outliers, all normalised with MNIST's statistics."""

    train: ImageData
    test: ImageData
    outliers: ImageData


def load_data(n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> MnistData:
    """MNIST train/test and notMNIST; ``n_train``/``n_test`` draw subsets (None: everything).

    ``n_test`` applies to the MNIST test set and to notMNIST alike (both have 10,000 images).
    Subsets are drawn without replacement with ``seed`` (:meth:`ImageData.subset`).
    """
    train, test, outliers = load_mnist("train"), load_mnist("test"), load_notmnist()
    if n_train is not None:
        train = train.subset(n_train, seed=seed)
    if n_test is not None:
        test, outliers = test.subset(n_test, seed=seed), outliers.subset(n_test, seed=seed)
    return MnistData(train, test, outliers)


def mnist_mlp(n_classes: int = 10, hidden: Sequence[int] = (256, 256, 256)) -> TargetNet:
    """Bayesian Hypernetworks' MLP 784-256-256-256 with ``n_classes`` outputs (9 for a held-out class).

    With the defaults it has the parameters of ``get_target("mnist_mlp")``; only the output
    width can change, which ``get_target`` does not offer.
    """
    if isinstance(n_classes, bool) or not isinstance(n_classes, int) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    net = mlp([28 * 28, *hidden, n_classes], "relu", dropout=True,
              name=f"mnist_mlp{'-'.join(map(str, hidden))}-{n_classes}")
    return TargetNet(net.name, [("flatten", Flatten())] + net.layers, (1, 28, 28), n_classes)


def _target(target: str | TargetNet) -> TargetNet:
    if isinstance(target, TargetNet):
        return target
    if isinstance(target, str):
        return get_target(target)
    raise TypeError(f"target must be a target name or a TargetNet, got {type(target).__name__}")


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class TrainedMethod:
    """A trained method with its run name, registry name, label and training record."""

    name: str
    method_name: str
    method: Method
    train_time_s: float
    history: list[dict] = field(repr=False)

    @property
    def label(self) -> str:
        """The run's label: the registry's, or the published tables' for variants like ``bbh_single``."""
        return published_label(self.name) if self.name != self.method_name else method_label(self.name)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_method(name: str, target: str | TargetNet, x: Tensor, y: Tensor, *,
                 epochs: int | None = None, steps: int | None = None, batch_size: int,
                 likelihood: Likelihood | None = None, device: str | torch.device = "cpu",
                 seed: int = 0, options: Mapping[str, Any] | None = None, transform=None,
                 progress: bool = False) -> TrainedMethod:
    """Build run ``name`` with its paper defaults and ``options``, train it with :func:`fit`.

    ``options`` go to the method's constructor, except :data:`FIT_OPTIONS`: ``method`` (the
    registry name; default ``name``), and ``lr``, ``epochs``, ``steps``, ``batch_size`` that
    override the training settings for this run. Give ``epochs`` or ``steps`` as :func:`fit`
    takes them (a full-batch run: ``batch_size=len(x)``). ``likelihood`` defaults to
    :class:`Categorical`. The global RNG is seeded with ``seed`` before the method is built,
    so each run's initialisation does not depend on the runs before it. ``transform``
    augments every mini-batch (see :func:`fit`). ``train_time_s`` is the wall time of
    :func:`fit` (GPU work included).
    """
    options = dict(options or {})
    fit_settings = {key: options.pop(key) for key in FIT_OPTIONS if key in options}
    method_name = fit_settings.get("method", name)
    if method_name not in METHODS:
        raise ValueError(f"run {name!r}: method must be one of {sorted(METHODS)}, got "
                         f"{method_name!r} (a variant names its registry method in the option 'method')")
    if "epochs" in fit_settings or "steps" in fit_settings:
        # A run's own training length replaces the shared one, whichever unit either is in.
        epochs, steps = fit_settings.get("epochs"), fit_settings.get("steps")
    device = torch.device(device)
    torch.manual_seed(seed)
    method = make_method(method_name, _target(target), likelihood or Categorical(), **options)
    _synchronize(device)
    started = time.perf_counter()
    history = fit(method, x, y, epochs=epochs, steps=steps,
                  batch_size=fit_settings.get("batch_size", batch_size), lr=fit_settings.get("lr"),
                  device=device, seed=seed, transform=transform, progress=progress)
    _synchronize(device)
    return TrainedMethod(name, method_name, method, time.perf_counter() - started, history)


def train_methods(methods: Sequence[str], target: str | TargetNet, x: Tensor, y: Tensor, *,
                  epochs: int | None = None, steps: int | None = None, batch_size: int,
                  likelihood: Likelihood | None = None, device: str | torch.device = "cpu",
                  seed: int = 0, options: Mapping[str, Mapping[str, Any]] | None = None,
                  transform=None, progress: bool = False) -> dict[str, TrainedMethod]:
    """Train every run of ``methods`` on (x, y) one after the other: run name -> TrainedMethod.

    ``options`` maps run names to their options (see :func:`train_method`). A key that is
    neither a run here nor a registry method is refused as a likely typo; options of registry
    methods not run here are ignored, so one profile can serve several method lists.
    """
    if isinstance(methods, str) or not methods:
        raise ValueError(f"methods must be a non-empty list of run names, got {methods!r}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods lists a run twice: {list(methods)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"options name runs {unknown} that are neither in methods {list(methods)} "
                         f"nor registry methods {sorted(METHODS)}")
    target = _target(target)
    return {name: train_method(name, target, x, y, epochs=epochs, steps=steps, batch_size=batch_size,
                               likelihood=likelihood, device=device, seed=seed,
                               options=options.get(name), transform=transform, progress=progress)
            for name in methods}


# ---------------------------------------------------------------------------------------------
# Prediction and evaluation
# ---------------------------------------------------------------------------------------------


def n_distinct_nets(method: Method, n_samples: int) -> int:
    """How many different nets ``method`` can give for ``n_samples`` requested: 1 for MAP, M for an ensemble."""
    if isinstance(method, MAP):
        return 1
    if isinstance(method, DeepEnsemble):
        return min(n_samples, method.n_members)
    return n_samples


def predict_probs(method: Method | TrainedMethod, x: Tensor, n_samples: int, *,
                  batch_size: int = 1000, seed: int = 0) -> Tensor:
    """Class probabilities of sampled nets on all of ``x``: ``[S', N, C]`` on the CPU.

    ``S' = n_distinct_nets(method, n_samples)``: MAP gives one net and an ensemble at most its
    members, rather than copies. The global RNG is seeded with ``seed`` first, so the sampled
    nets do not depend on what ran before.
    """
    if isinstance(method, TrainedMethod):
        method = method.method
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be an integer >= 1, got {n_samples!r}")
    torch.manual_seed(seed)
    return predict(method, x, n_distinct_nets(method, n_samples), batch_size=batch_size)


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


def evaluate_methods(trained: Mapping[str, TrainedMethod], x_test: Tensor, y_test: Tensor,
                     x_ood: Tensor, *, n_samples: int, batch_size: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """One row per run: error, entropy AUCs, NLL, ECE, Brier, training time, nets used.

    Columns: ``method, label, n_nets`` (distinct sampled nets, see :func:`n_distinct_nets`),
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


def single_hypernet_options(method_options: Mapping[str, Mapping[str, Any]] | None,
                            architecture_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Options of the single-hypernetwork variant of Bayes by Hypernet (run name ``bbh_single``).

    Those of ``bbh`` (so both architectures share every other setting), then
    ``per_layer=False`` and ``architecture_options`` (e.g. ``n_chunks``).
    """
    bbh = dict((method_options or {}).get("bbh", {}))
    return {**bbh, "method": "bbh", "per_layer": False, **dict(architecture_options or {})}


def architecture_results(results: pd.DataFrame, single_results: pd.DataFrame) -> pd.DataFrame:
    """Rows of the architecture table: ``bbh`` of ``results`` as ``bbh_layerwise``, ``bbh_single``.

    ``results`` and ``single_results`` are :func:`evaluate_methods` tables; the layer-wise run
    is the main table's Bayes by Hypernet (layer-wise is its default), so it is not trained twice.
    """
    layerwise = results[results["method"] == "bbh"]
    single = single_results[single_results["method"] == "bbh_single"]
    if len(layerwise) != 1 or len(single) != 1:
        raise ValueError("architecture_results needs one 'bbh' row in results and one "
                         f"'bbh_single' row in single_results; got {list(results['method'])} and "
                         f"{list(single_results['method'])}")
    layerwise = layerwise.assign(method="bbh_layerwise", label=published_label("bbh_layerwise"))
    return pd.concat([single, layerwise], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# Anomaly detection
# ---------------------------------------------------------------------------------------------


def ood_table(probs_in: Tensor, probs_out: Tensor,
              scores: Mapping[str, str] = OOD_SCORES) -> pd.DataFrame:
    """Detection metrics of each score (outliers positive): columns ``score`` and :data:`OOD_METRICS`.

    ``scores`` maps table names to keys of :data:`hypernets.metrics.UNCERTAINTY_SCORES`.
    """
    rows = [{"score": name, **metrics.ood_metrics_from_probs(probs_in, probs_out, score=key)}
            for name, key in scores.items()]
    return pd.DataFrame(rows)


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
    :func:`n_distinct_nets`); the predictive of ``k`` nets uses the first ``k`` of them,
    which are ``k`` independent draws. Detection metrics use all drawn nets.
    """
    n_nets = sorted(set(n_nets))
    if not n_nets or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in n_nets):
        raise ValueError(f"n_nets must list integers >= 1, got {n_nets!r}")
    ecdf_rows, auc_rows, ood_rows = [], [], []
    for name, run in trained.items():
        probs = {"in": predict_probs(run, x_in, n_nets[-1], batch_size=batch_size, seed=seed),
                 "out": predict_probs(run, x_out, n_nets[-1], batch_size=batch_size, seed=seed)}
        for k in n_nets:
            used = min(k, probs["in"].shape[0])
            auc_rows.append({"method": name, "label": run.label, "n_nets": k, "n_nets_used": used,
                             "entropy_auc_in": metrics.entropy_auc(probs["in"][:used]),
                             "entropy_auc_out": metrics.entropy_auc(probs["out"][:used])})
            for data, p in probs.items():
                grid, cdf = metrics.entropy_ecdf(p[:used], n_points=n_points)
                ecdf_rows.append(pd.DataFrame({"method": name, "label": run.label, "data": data,
                                               "n_nets": k, "n_nets_used": used,
                                               "entropy": grid.numpy(), "cdf": cdf.numpy()}))
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
    n_classes = len(data.classes)
    if isinstance(held_out, bool) or not isinstance(held_out, int) or not 0 <= held_out < n_classes:
        raise ValueError(f"held_out must be a class index in [0, {n_classes - 1}], got {held_out!r}")
    inside = data.y != held_out
    labels = data.y[inside]
    return data.x[inside], labels - (labels > held_out).long(), data.x[~inside]


def held_out_class_experiment(methods: Sequence[str], train: ImageData, test: ImageData, *,
                              held_out_classes: Sequence[int], epochs: int, batch_size: int,
                              n_samples: int, hidden: Sequence[int] = (256, 256, 256),
                              device: str | torch.device = "cpu", seed: int = 0,
                              options: Mapping[str, Mapping[str, Any]] | None = None,
                              scores: Mapping[str, str] = OOD_SCORES,
                              eval_batch_size: int = 1000) -> pd.DataFrame:
    """Train on all classes but one, detect the held-out class; once per class in ``held_out_classes``.

    The target is :func:`mnist_mlp` with ``hidden`` and one output per remaining class. The
    in-distribution test set is the test images of the other classes, the outliers the test
    images of the held-out class. Returns one row per (held_out, method, score): ``held_out,
    method, label, error_pct`` (on the remaining classes), ``score`` and :data:`OOD_METRICS`.
    """
    if isinstance(held_out_classes, (str, int)) or not held_out_classes:
        raise ValueError(f"held_out_classes must be a non-empty list of classes, got {held_out_classes!r}")
    tables = []
    for held_out in held_out_classes:
        x_train, y_train, _ = held_out_split(train, held_out)
        x_in, y_in, x_out = held_out_split(test, held_out)
        target = mnist_mlp(len(train.classes) - 1, hidden)
        trained = train_methods(methods, target, x_train, y_train, epochs=epochs,
                                batch_size=batch_size, device=device, seed=seed, options=options)
        for name, run in trained.items():
            probs_in = predict_probs(run, x_in, n_samples, batch_size=eval_batch_size, seed=seed)
            probs_out = predict_probs(run, x_out, n_samples, batch_size=eval_batch_size, seed=seed)
            table = ood_table(probs_in, probs_out, scores)
            table.insert(0, "error_pct", 100.0 * (1.0 - metrics.accuracy(probs_in, y_in)))
            table.insert(0, "label", run.label)
            table.insert(0, "method", name)
            table.insert(0, "held_out", held_out)
            tables.append(table)
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


def plot_comparison(comparison: pd.DataFrame, metrics_shown: Sequence[str] | None = None) -> plt.Figure:
    """Published and our values side by side, one panel per metric (a :func:`compare_with_published` table)."""
    shown = list(dict.fromkeys(comparison["metric"])) if metrics_shown is None else list(metrics_shown)
    long = comparison[comparison["metric"].isin(shown)].melt(
        id_vars=["label", "metric"], value_vars=["published", "ours"], var_name="source",
        value_name="value").dropna(subset=["value"])
    labels = list(dict.fromkeys(comparison["label"]))
    fig, axes = plt.subplots(1, len(shown), figsize=(3.6 * len(shown), 0.45 * len(labels) + 1.6),
                             sharey=True, squeeze=False)
    for ax, metric in zip(axes[0], shown):
        sns.barplot(data=long[long["metric"] == metric], y="label", x="value", hue="source",
                    order=labels, hue_order=["published", "ours"], ax=ax, orient="h")
        ax.set_title(metric)
        ax.set_xlabel("")
        ax.set_ylabel("")
        handles, names = ax.get_legend_handles_labels()
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.tight_layout()
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    return fig


def plot_entropy_ecdfs(ecdf: pd.DataFrame, in_name: str = "MNIST test",
                       out_name: str = "outliers") -> plt.Figure:
    """HyperGAN-style ECDFs of the predictive entropy: rows in/out data, one column per n_nets.

    ``in_name`` and ``out_name`` title the rows of the test set and the outliers.

    Entropies are divided by log C so the axis runs from 0 (one-hot) to 1 (uniform). On the
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
                max_entropy = curve["entropy"].max()
                ax.plot(curve["entropy"] / max_entropy, curve["cdf"], color=palette[label],
                        label=label, drawstyle="steps-post")
            ax.set_title(f"{titles[data]}, {k} nets")
            ax.set_xlabel("entropy / log C" if row == 1 else "")
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
