"""Figures of the book: sample grids of the image data sets and the toy regression problem."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from hypernets.data import CIFAR10_MEAN, CIFAR10_STD, MNIST_MEAN, MNIST_STD, ImageData, ToyRegression

# Per-channel statistics each data set is normalised with (notMNIST uses MNIST's: it is fed to
# MNIST models), to map normalised pixels back to [0, 1] for display.
_NORMALISATION = {
    "MNIST": ((MNIST_MEAN,), (MNIST_STD,)),
    "notMNIST": ((MNIST_MEAN,), (MNIST_STD,)),
    "CIFAR-10": (CIFAR10_MEAN, CIFAR10_STD),
    "CIFAR-5": (CIFAR10_MEAN, CIFAR10_STD),
    "CIFAR-5 outliers": (CIFAR10_MEAN, CIFAR10_STD),
}
_PAD = 2  # pixels of white between tiles


def display_pixels(data: ImageData, images: torch.Tensor) -> np.ndarray:
    """Images of ``data`` ([n, C, H, W]) as an array [n, H, W, C] in [0, 1], undoing normalisation."""
    if data.normalized:
        if data.name not in _NORMALISATION:
            raise ValueError(
                f"cannot undo the normalisation of data set {data.name!r}: known data sets are "
                f"{', '.join(_NORMALISATION)}; load it with normalize=False to plot it"
            )
        mean, std = _NORMALISATION[data.name]
        images = images * torch.tensor(std).view(1, -1, 1, 1) + torch.tensor(mean).view(1, -1, 1, 1)
    return images.clamp(0.0, 1.0).permute(0, 2, 3, 1).cpu().numpy()


def image_grid(data: ImageData, n_per_class: int, seed: int = 0, ax: plt.Axes | None = None) -> plt.Axes:
    """Show ``n_per_class`` random examples of every class present in ``data``, one row per class.

    The examples are drawn without replacement with a generator seeded by ``seed``; rows are
    labelled with the class names. Returns the axes.
    """
    if isinstance(n_per_class, bool) or not isinstance(n_per_class, int) or n_per_class < 1:
        raise ValueError(f"n_per_class must be an integer >= 1, got {n_per_class!r}")
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
    """One panel per metric column (``panels``: column -> title), one line per ``hue`` value."""
    order = list(dict.fromkeys(data[hue]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), sharex=True,
                             squeeze=False)
    axes = axes[0]
    for ax, (column, title) in zip(axes, panels.items()):
        sns.lineplot(data=data, x=x, y=column, hue=hue, hue_order=order, style=hue,
                     style_order=order, markers=True, dashes=False, ax=ax,
                     legend=ax is axes[-1])
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("")
    axes[-1].legend(fontsize="small", loc="best")
    fig.tight_layout()
    return fig
