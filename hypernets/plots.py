"""Figures shared by the chapters: data-set samples, the toy problem, metric panels, published vs ours."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from hypernets.data import ImageData, ToyRegression
from hypernets.validation import check_positive_int

_PAD = 2  # pixels of white between tiles


def display_pixels(data: ImageData, images: torch.Tensor) -> np.ndarray:
    """Images of ``data`` ([n, C, H, W]) as an array [n, H, W, C] in [0, 1], undoing normalisation."""
    if data.pixel_range is not None:
        images = data.pixel_range.to_pixels(images)
    return images.clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(data: ImageData, n_per_class: int, seed: int = 0, ax: plt.Axes | None = None) -> plt.Axes:
    """Show ``n_per_class`` random examples of every class present in ``data``, one row per class.

    The examples are drawn without replacement with a generator seeded by ``seed``; rows are
    labelled with the class names. Returns the axes.
    """
    check_positive_int("n_per_class", n_per_class)
    labels = data.y.unique().tolist()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for label in labels:
        members = torch.nonzero(data.y == label).flatten()
        if len(members) < n_per_class:
            raise ValueError(
                f"class {data.classes[label]!r} of {data.name} ({data.split}) has {len(members)} "
                f"examples, fewer than n_per_class={n_per_class}"
            )
        chosen = members[torch.randperm(len(members), generator=generator)[:n_per_class]]
        rows.append(display_pixels(data, data.x[chosen]))

    height, width, channels = rows[0].shape[1:]
    mosaic = np.ones(
        (len(rows) * (height + _PAD) - _PAD, n_per_class * (width + _PAD) - _PAD, channels), dtype=np.float32
    )
    for row, tiles in enumerate(rows):
        for column, tile in enumerate(tiles):
            top, left = row * (height + _PAD), column * (width + _PAD)
            mosaic[top : top + height, left : left + width] = tile

    if ax is None:
        _, ax = plt.subplots(figsize=(0.55 * n_per_class + 1.5, 0.55 * len(rows) + 0.6))
    if channels == 1:
        ax.imshow(mosaic[..., 0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(mosaic)
    ax.set_yticks([row * (height + _PAD) + height / 2 for row in range(len(rows))])
    ax.set_yticklabels([data.classes[label] for label in labels])
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(f"{data.name} ({data.split})")
    return ax


def plot_toy_data(toy: ToyRegression, ax: plt.Axes | None = None) -> plt.Axes:
    """The toy regression's training points and its true function on the evaluation grid."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3.5))
    palette = sns.color_palette()
    grid = toy.x_grid.flatten()
    ax.plot(grid.numpy(), toy.true_function(grid).numpy(), color=palette[0], label="true function $x^3$")
    ax.scatter(
        toy.x.flatten().numpy(), toy.y.flatten().numpy(), color=palette[3], s=18, zorder=3,
        label=f"{len(toy.x)} noisy points",
    )
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"$y = x^3 + \\varepsilon$, $\\varepsilon \\sim N(0, {toy.noise_std:g}^2)$")
    ax.legend(loc="upper left", frameon=False)
    return ax


def metric_panels(data: pd.DataFrame, x: str, panels: dict[str, str], hue: str,
                  xlabel: str) -> plt.Figure:
    """One panel per metric column (``panels``: column -> title), one line per ``hue`` value.

    Several rows per (``x``, ``hue``), e.g. seeds, draw their mean and a band of +- one
    standard deviation (deterministic, unlike seaborn's default bootstrap interval).
    """
    order = list(dict.fromkeys(data[hue]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), sharex=True,
                             squeeze=False)
    axes = axes[0]
    for ax, (column, title) in zip(axes, panels.items()):
        sns.lineplot(data=data, x=x, y=column, hue=hue, hue_order=order, style=hue,
                     style_order=order, markers=True, dashes=False, ax=ax, errorbar="sd",
                     legend=ax is axes[-1])
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("")
    # Right of the panels, not over them: with many runs an in-panel legend covers lines.
    legend = axes[-1].get_legend()
    handles, names = legend.legend_handles, [text.get_text() for text in legend.get_texts()]
    legend.remove()
    fig.tight_layout()
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    return fig


def plot_training_curves(curves: pd.DataFrame) -> plt.Figure:
    """Test error (log scale) and training loss against epoch, one line per run (a
    :func:`hypernets.evaluation.training_curves` table): how far from converged each run is."""
    panels = {"test_error_pct": "test error (%)", "loss": "training loss per data point"}
    panels = {column: title for column, title in panels.items() if column in curves}
    fig = metric_panels(curves, "epoch", panels, "label", "epoch")
    for ax, column in zip(fig.axes, panels):
        if (curves[column].dropna() > 0).all():  # the methods' losses differ by decades
            ax.set_yscale("log")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


#: Metrics whose comparison panels use a log axis: errors span decades between methods.
LOG_SCALE_METRICS = frozenset({"error_pct", "train_time_s"})


def plot_comparison(comparison: pd.DataFrame, metrics_shown: Sequence[str] | None = None) -> plt.Figure:
    """Published and our values side by side, one panel per metric (a :func:`hypernets.published.compare_with_published` table).

    Errors and times are drawn on a log axis (where every value is positive), so that
    published errors below 1 % stay readable beside larger ones."""
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
        values = long.loc[long["metric"] == metric, "value"]
        if metric in LOG_SCALE_METRICS and (values > 0).all():
            ax.set_xscale("log")  # published errors below 1 % beside ours of several
            ax.set_title(f"{metric} (log scale)")
        ax.set_xlabel("")
        ax.set_ylabel("")
        handles, names = ax.get_legend_handles_labels()
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    fig.tight_layout()
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
    return fig


def plot_reliability(bins: pd.DataFrame, n_cols: int = 4) -> plt.Figure:
    """Reliability diagrams, one panel per run (a :func:`hypernets.evaluation.reliability_table`).

    Bars: the accuracy in each confidence bin; the diagonal is perfect calibration; the
    number in the corner is the share of test points in the fullest bin (most sit in the top
    one for an accurate classifier). Empty bins are left out.
    """
    labels = list(dict.fromkeys(bins["label"]))
    n_cols = min(check_positive_int("n_cols", n_cols), len(labels))
    n_rows = -(-len(labels) // n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(3.0 * n_cols, 3.0 * n_rows),
                             sharex=True, sharey=True, squeeze=False)
    for ax, label in zip(axes.flat, labels):
        part = bins[(bins["label"] == label) & (bins["count"] > 0)]
        widths = part["bin_upper"] - part["bin_lower"]
        ax.bar(part["bin_lower"], part["accuracy"], width=widths, align="edge",
               edgecolor="black", linewidth=0.5, label="accuracy")
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
        ax.plot(part["confidence"], part["confidence"], "o", color="black", markersize=2.5,
                label="mean confidence")
        share = part["count"].max() / part["count"].sum()
        ax.text(0.04, 0.92, f"fullest bin: {share:.0%}", fontsize="x-small", transform=ax.transAxes)
        ax.set_title(label, fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    for ax in axes.flat[len(labels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("confidence")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=3, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))  # room for the legend below the panels
    return fig


#: The panels of :func:`plot_attack_curves`. The entropy AUC of Bayes by Hypernet's third panel
#: is left out: it moves opposite to the mean entropy and adds nothing to read.
ATTACK_CURVE_COLUMNS = {"accuracy": "accuracy",
                  "retained_accuracy": "accuracy above chance, relative to clean",
                  "entropy": "mean predictive entropy (nats)"}


def plot_attack_curves(curves: pd.DataFrame) -> plt.Figure:
    """Accuracy, accuracy retained above chance and mean entropy against epsilon
    (:func:`hypernets.adversarial.adversarial_curves`; mean and standard deviation over seeds
    where ``curves`` has several)."""
    return metric_panels(curves, "epsilon", ATTACK_CURVE_COLUMNS, "label", "FGSM budget ε (pixels)")


def figure_legend(fig: plt.Figure) -> None:
    """One legend right of ``fig`` with every label of its panels once, in first-seen order
    (panels may each hold only some of the lines)."""
    handles, names = [], []
    for ax in fig.axes:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            if name not in names:
                handles.append(handle)
                names.append(name)
    fig.legend(handles, names, loc="upper left", bbox_to_anchor=(1.0, 0.95), frameon=False)
