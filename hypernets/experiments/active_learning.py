"""Active learning on MNIST (the ``active_learning`` chapter, Bayesian Hypernetworks' experiment).

Start from ``initial_per_class`` labelled images per class, drawn from the training set; the
rest is the pool. Each acquisition scores a random subset of ``pool_subset`` pool images with
``n_mc`` sampled nets, labels the ``queries`` best by the acquisition function
(:data:`ACQUISITIONS`), and trains again on all labelled images for ``epochs`` epochs, either
continuing from the current weights (*warm start*) or from a fresh initialisation. The test
accuracy after every training is the curve.

A trajectory (method, acquisition, warm or cold, repeat) is one entry of the run store
(:mod:`hypernets.store`) and of the run records (:mod:`hypernets.records`), keyed by
everything that decides it: it is computed once and loaded afterwards, and a stopped chapter
resumes at the first trajectory not yet stored, also on another machine from the committed
records.
"""

from __future__ import annotations

import time
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
from hypernets.data import ImageData
from hypernets.evaluation import ordering_verdict, ranking_prose, seed_summary, verdict_prose
from hypernets.likelihoods import Categorical
from hypernets.methods.registry import make_method, method_class, method_label
from hypernets.plots import figure_legend
from hypernets.seeding import seeded
from hypernets.records import RunRecords
from hypernets.store import RunStore, request_hash
from hypernets.targets import TargetNet, get_target
from hypernets.runs import machine_record, resolve_records, resolve_store
from hypernets.training import fit, predict, tensor_digest
from hypernets.validation import check_choice, check_int

#: Version of the trajectory's computation: a change that can change a stored result
#: increases it, so that stored trajectories of the old version are not returned.
TRAJECTORY_VERSION = 1


def _variation_ratio(probs: Tensor) -> Tensor:
    votes = torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).sum(0)  # [N, C]
    return 1.0 - votes.max(-1).values.to(probs.dtype) / probs.shape[0]


def _mean_std(probs: Tensor) -> Tensor:
    return probs.std(0, correction=0).mean(-1)


#: Acquisition functions: name -> score of pool images from sampled probabilities [S, N, C]
#: (higher: acquired first); ``random`` ignores the model.
ACQUISITIONS = {
    "bald": metrics.mutual_information,
    "max_entropy": metrics.predictive_entropy,
    "variation_ratio": _variation_ratio,
    "mean_std": _mean_std,
    "random": None,
}


def acquisition_scores(probs: Tensor, acquisition: str) -> Tensor:
    """The acquisition score of every image of ``probs`` [S, N, C] (not for ``random``)."""
    acquisition = check_choice("acquisition", acquisition, ACQUISITIONS)
    if ACQUISITIONS[acquisition] is None:
        raise ValueError("random acquisition scores nothing: it draws the queries")
    return ACQUISITIONS[acquisition](probs).to(torch.float64)


def initial_labels(labels: Tensor, per_class: int, *, seed: int = 0) -> Tensor:
    """Indices of ``per_class`` random images of every class (sorted), fixed by ``seed``."""
    per_class = check_int("initial_per_class", per_class, minimum=1)
    generator = torch.Generator().manual_seed(check_int("seed", seed, minimum=0))
    chosen = []
    for c in labels.unique().tolist():
        members = torch.nonzero(labels == c).flatten()
        if len(members) < per_class:
            raise ValueError(f"class {c} has {len(members)} images, fewer than initial_per_class={per_class}")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


@dataclass(frozen=True)
class Trajectory:
    """One active-learning run's settings (what decides its result)."""

    method: str
    acquisition: str
    warm_start: bool
    repeat: int
    n_acquisitions: int
    queries: int = 10
    pool_subset: int = 2000
    initial_per_class: int = 2
    epochs: int = 50
    batch_size: int = 128
    n_mc: int = 100
    n_test_nets: int = 10
    target: str = "mnist_al_cnn"
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        check_choice("acquisition", self.acquisition, ACQUISITIONS)
        for name in ("n_acquisitions", "queries", "pool_subset", "initial_per_class", "epochs",
                     "batch_size", "n_mc", "n_test_nets"):
            check_int(name, getattr(self, name), minimum=0 if name == "n_acquisitions" else 1)
        method_label(self.method)  # a registry method
        if self.acquisition != "random" and self.method == "map":
            raise ValueError(f"MAP has one net: its {self.acquisition} scores are constant; "
                             "give it random acquisition")

    @property
    def name(self) -> str:
        return f"{self.method} {self.acquisition} {'warm' if self.warm_start else 'cold'} #{self.repeat}"

    def document(self, train: ImageData, test: ImageData) -> dict[str, Any]:
        """The store's key document: the settings, the data, the computation's version and
        the method's training version (a change to how the method trains or predicts)."""
        return {"kind": "active_learning_trajectory", "version": TRAJECTORY_VERSION,
                "method_version": method_class(self.method).training_version,
                "settings": {k: (dict(v) if isinstance(v, Mapping) else v)
                             for k, v in self.__dict__.items()},
                "train_x": tensor_digest(train.x), "train_y": tensor_digest(train.y),
                "test_x": tensor_digest(test.x), "test_y": tensor_digest(test.y)}


def _new_method(trajectory: Trajectory, target: TargetNet, seed: int):
    options = {k: v for k, v in trajectory.options.items() if k != "lr"}
    return make_method(trajectory.method, target, Categorical(),
                       generator=torch.Generator().manual_seed(seed), **options)


def run_trajectory(trajectory: Trajectory, train: ImageData, test: ImageData, *,
                   device: str | torch.device = "cpu") -> pd.DataFrame:
    """Compute one trajectory: one row per training (``acquisition_step`` 0 is the initial
    set), with ``n_labels``, ``accuracy_pct`` on ``test`` and the labelled pool indices
    ``acquired`` at that step (a list, empty at 0)."""
    seed = 1000 * trajectory.repeat
    target = get_target(trajectory.target)
    labelled = initial_labels(train.y, trajectory.initial_per_class, seed=seed)
    in_pool = torch.ones(len(train), dtype=torch.bool)
    in_pool[labelled] = False
    rng = np.random.default_rng(seed)
    lr = trajectory.options.get("lr")
    method = _new_method(trajectory, target, seed)
    rows = []
    for step in range(trajectory.n_acquisitions + 1):
        if step > 0:
            pool = torch.nonzero(in_pool).flatten().numpy()
            subset = rng.choice(pool, size=min(trajectory.pool_subset, len(pool)), replace=False)
            if trajectory.acquisition == "random":
                picked = rng.choice(subset, size=trajectory.queries, replace=False)
            else:
                method.eval()
                with seeded(seed + step, method.device):
                    probs = predict(method, train.x[subset], trajectory.n_mc, batch_size=1000)
                scores = acquisition_scores(probs, trajectory.acquisition).numpy()
                picked = subset[np.argsort(-scores, kind="stable")[:trajectory.queries]]
            in_pool[picked] = False
            labelled = torch.cat([labelled, torch.as_tensor(picked)])
            if not trajectory.warm_start:
                method = _new_method(trajectory, target, seed + step)
        fit(method, train.x[labelled], train.y[labelled], epochs=trajectory.epochs,
            batch_size=trajectory.batch_size, lr=lr, device=device, seed=seed + step,
            progress=False)
        method.eval()
        with seeded(seed, method.device):
            probs = predict(method, test.x, method.n_distinct_nets(trajectory.n_test_nets),
                            batch_size=1000)
        rows.append({"acquisition_step": step, "n_labels": len(labelled),
                     "accuracy_pct": 100.0 * metrics.accuracy(probs, test.y),
                     "acquired": [] if step == 0 else [int(i) for i in picked]})
    return pd.DataFrame(rows)


def trajectories(settings: Sequence[Trajectory], train: ImageData, test: ImageData, *,
                 device: str | torch.device = "cpu",
                 store: RunStore | None | str = "default",
                 records: RunRecords | None | str = "default") -> pd.DataFrame:
    """Every trajectory of ``settings``, each computed once through the run records or store.

    A trajectory's result is its table, so its record (:mod:`hypernets.records`, where runs
    keep records) holds all of it: it is read from there, else from the store, else computed;
    it is then kept in both. Long format: ``method, label, acquisition, start`` (warm or cold),
    ``repeat`` and the rows of :func:`run_trajectory` (without the acquired indices).
    """
    store, records = resolve_store(store), resolve_records(records)
    tables = []
    for trajectory in settings:
        document = trajectory.document(train, test)
        key = request_hash(document)
        entry = records.load(key, document) if records is not None else None
        if entry is None and store is not None:
            entry = store.load(key, document)
        if entry is None:
            started = time.perf_counter()
            if store is None:
                table = run_trajectory(trajectory, train, test, device=device)
                entry = {"history": table.to_dict("records"),
                         "train_time_s": time.perf_counter() - started,
                         "trained_with": machine_record(torch.device(device))}
            else:
                with store.training(key, trajectory.name):
                    table = run_trajectory(trajectory, train, test, device=device)
                    store.save(key, document, method_state={}, history=table.to_dict("records"),
                               train_time_s=time.perf_counter() - started,
                               trained_with=machine_record(torch.device(device)))
                entry = store.load(key, document)
        if records is not None:
            records.save_run(key, document, history=entry["history"],
                             train_time_s=entry["train_time_s"], trained_with=entry["trained_with"])
        table = pd.DataFrame(entry["history"])
        tables.append(table.drop(columns="acquired").assign(
            method=trajectory.method, label=method_label(trajectory.method),
            acquisition=trajectory.acquisition,
            start="warm" if trajectory.warm_start else "cold", repeat=trajectory.repeat))
    columns = ["method", "label", "acquisition", "start", "repeat", "acquisition_step",
               "n_labels", "accuracy_pct"]
    return pd.concat(tables, ignore_index=True)[columns]


def plan_trajectories(methods: Sequence[str], acquisitions: Sequence[str], *,
                      cold_acquisitions: Sequence[str], repeats: Sequence[int],
                      options: Mapping[str, Mapping[str, Any]] | None = None,
                      **settings: Any) -> list[Trajectory]:
    """The chapter's trajectories: every method with every acquisition, warm-started, plus
    the cold-started runs of ``cold_acquisitions``; MAP only with random acquisition (its
    other scores are constant). ``settings`` are :class:`Trajectory`'s shared fields."""
    for name in (*acquisitions, *cold_acquisitions):
        check_choice("acquisition", name, ACQUISITIONS)
    planned = []
    for method in methods:
        usable = ["random"] if method == "map" else list(acquisitions)
        cold = ["random"] if method == "map" else [a for a in cold_acquisitions if a in usable]
        for acquisition, warm in [*((a, True) for a in usable), *((a, False) for a in cold)]:
            for repeat in repeats:
                planned.append(Trajectory(method, acquisition, warm, repeat,
                                          options=dict((options or {}).get(method, {})), **settings))
    return planned


def area_under_curve(curves: pd.DataFrame, *, part: tuple[float, float] = (0.0, 1.0)) -> pd.DataFrame:
    """Mean accuracy over the acquisitions in the fraction ``part`` of the run (0-1: all;
    the first third: (0, 1/3)), per trajectory: the number the claims compare. The initial
    training (step 0) is left out: every setting shares it."""
    low, high = part
    rows = []
    for keys, group in curves.groupby(["method", "label", "acquisition", "start", "repeat"],
                                      sort=False):
        steps = group["acquisition_step"]
        last = steps.max()
        window = group[(steps >= max(low * last, 1)) & (steps <= max(high * last, 1))]
        rows.append(dict(zip(["method", "label", "acquisition", "start", "repeat"], keys),
                         mean_accuracy=float(window["accuracy_pct"].mean())))
    return pd.DataFrame(rows)


def summary_table(curves: pd.DataFrame) -> pd.DataFrame:
    """Per trajectory kind (label, acquisition, start): the mean accuracy over the run
    (:func:`area_under_curve`) and the accuracy after the last acquisition, mean and sd over
    the repeats."""
    keys = ["label", "acquisition", "start"]
    last = curves[curves["acquisition_step"] == curves["acquisition_step"].max()]
    per_repeat = area_under_curve(curves).merge(
        last[[*keys, "repeat", "accuracy_pct"]].rename(columns={"accuracy_pct": "final_accuracy"}),
        on=[*keys, "repeat"])
    grouped = per_repeat.groupby(keys, sort=False)[["mean_accuracy", "final_accuracy"]]
    table = pd.concat([grouped.mean(), grouped.std(ddof=1).add_suffix("_sd")], axis=1)
    return table[["mean_accuracy", "mean_accuracy_sd", "final_accuracy", "final_accuracy_sd"]]


def _summary(table: pd.DataFrame, keep: Mapping[str, str]) -> pd.DataFrame:
    """:func:`seed_summary` over repeats of the trajectories ``keep`` selects, one row each."""
    part = table
    for column, value in keep.items():
        part = part[part[column] == value]
    runs = part.assign(method=part["acquisition"] + " " + part["start"], seed=part["repeat"])
    return seed_summary(runs, ["mean_accuracy"])


def claims(curves: pd.DataFrame, *, method: str = "bhn") -> pd.DataFrame:
    """The chapter's claims for ``method``, over repeats (:func:`ordering_verdict`):

    * BALD acquires better than random: a higher mean accuracy over the whole run (warm);
    * warm start hurts early: cold above warm over the first third of the acquisitions (BALD);
    * and wins later: warm above cold over the last third (BALD) — the paper's finding.
    """
    rows = []
    whole = area_under_curve(curves)
    own = whole[whole["method"] == method]
    pairs = set(zip(own["acquisition"], own["start"]))
    if {("bald", "warm"), ("random", "warm")} <= pairs:
        rows.append(ordering_verdict(_summary(own, {"start": "warm"}),
                                     f"{method}: BALD acquires better than random",
                                     "mean_accuracy", "bald warm", "random warm", lower=False))
    if {("bald", "warm"), ("bald", "cold")} <= pairs:
        for part, claim, a, b in (((0.0, 1 / 3), "warm start hurts early", "bald cold", "bald warm"),
                                  ((2 / 3, 1.0), "warm start wins later", "bald warm", "bald cold")):
            window = area_under_curve(curves[curves["method"] == method], part=part)
            rows.append(ordering_verdict(_summary(window, {"acquisition": "bald"}),
                                         f"{method}: {claim} (BALD)", "mean_accuracy", a, b,
                                         lower=False))
    return pd.DataFrame(rows, columns=["claim", "seen", "rule", "evidence"])


def _acquisition_name(acquisition: str) -> str:
    return "BALD" if acquisition == "bald" else acquisition.replace("_", " ")


def conclusion(curves: pd.DataFrame, verdicts: pd.DataFrame) -> str:
    """The page's conclusion as Markdown prose, computed from its tables: per method, its
    trajectories (acquisition and start) ranked by the mean accuracy over the run and by the
    accuracy after the last acquisition (:func:`summary_table`, mean ± sd over the repeats),
    then the :func:`claims` grouped by verdict."""
    table = summary_table(curves).reset_index()
    steps = curves["acquisition_step"]
    first = int(curves.loc[steps == steps.min(), "n_labels"].min())
    last = int(curves.loc[steps == steps.max(), "n_labels"].max())
    paragraphs = [f"*Schedule*: {curves['repeat'].nunique()} repeats of every trajectory, from "
                  f"{first} to {last} labelled images; mean ± sd over the repeats."]
    for label, part in table.groupby("label", sort=False):
        runs = part.assign(method=part["acquisition"] + " " + part["start"],
                           label=part["acquisition"].map(_acquisition_name) + " (" + part["start"] + ")")
        paragraphs.append(
            f"**{label}**: mean accuracy over the run, highest first: "
            f"{ranking_prose(runs, 'mean_accuracy', unit=' %', ascending=False)}; after {last} "
            f"labels: {ranking_prose(runs, 'final_accuracy', unit=' %', ascending=False)}.")
    paragraphs.append(f"The claims: {verdict_prose(verdicts)}.")
    return "\n\n".join(paragraphs)


def plot_curves(curves: pd.DataFrame) -> plt.Figure:
    """Test accuracy against the number of labels, mean ± sd over repeats: one panel per
    method, one line per acquisition (solid: warm start, dashed: cold)."""
    methods = list(dict.fromkeys(curves["label"]))
    acquisitions = list(dict.fromkeys(curves["acquisition"]))
    colors = dict(zip(acquisitions, sns.color_palette(n_colors=len(acquisitions))))
    fig, axes = plt.subplots(1, len(methods), figsize=(4.4 * len(methods) + 2.0, 3.6),
                             sharey=True, squeeze=False)
    for ax, label in zip(axes[0], methods):
        part = curves[curves["label"] == label]
        for (acquisition, start), group in part.groupby(["acquisition", "start"], sort=False):
            stats = group.groupby("n_labels")["accuracy_pct"]
            mean, sd = stats.mean(), stats.std(ddof=1).fillna(0.0)
            style = "-" if start == "warm" else "--"
            ax.plot(mean.index, mean, style, color=colors[acquisition],
                    label=f"{acquisition}, {start}")
            ax.fill_between(mean.index, mean - sd, mean + sd, color=colors[acquisition],
                            alpha=0.12, linewidth=0)
        ax.set_title(label)
        ax.set_xlabel("labelled images")
    axes[0][0].set_ylabel("test accuracy (%)")
    figure_legend(fig)
    fig.tight_layout()
    return fig


__all__ = ["ACQUISITIONS", "TRAJECTORY_VERSION", "Trajectory", "acquisition_scores",
           "area_under_curve", "claims", "conclusion", "initial_labels", "summary_table",
           "plan_trajectories", "plot_curves", "run_trajectory", "trajectories"]
