"""Bayes by Hypernet's CIFAR-5 experiment: a ResNet on CIFAR-10's classes 0-4, classes 5-9 as outliers.

Following the reference code, training images are zero-padded from 32x32 to 36x36 (black
pixels), randomly cropped to 24x24 and flipped left-right with probability 1/2; test images
(CIFAR-5 and outliers) are the central 24x24 crops. The reference also drew a random brightness
and contrast change, but then standardised every image by its own mean and standard
deviation, which undoes both; here images are standardised per channel with the CIFAR-10
statistics instead (:mod:`hypernets.data`), so the jitter is left out too.

Evaluation per method: error of the mean predictive on the CIFAR-5 test set, the entropy AUC
(:func:`hypernets.metrics.entropy_auc`) on that test set (high is good) and on the test images of
classes 5-9 (low is good), NLL, ECE, Brier, the AUROC of detecting the outliers by predictive
entropy, and the training time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

from hypernets import metrics
from hypernets.adversarial import PixelRange
from hypernets.data import CIFAR10_MEAN, CIFAR10_STD, ImageData, load_cifar5
from hypernets.experiments.mnist import TrainedMethod, classification_row, predict_probs
from hypernets.targets import TargetNet, cifar_resnet, get_target

__all__ = [
    "CROP_SIZE",
    "PADDING",
    "Cifar5Data",
    "RandomCropFlip",
    "centre_crop",
    "data_note",
    "evaluate_cifar5",
    "load_data",
    "make_target",
    "plot_entropy_cdfs",
]

#: Side of the square crops the ResNet sees, in training and at test time.
CROP_SIZE = 24
#: Black pixels added on each side before random crops (32 -> 36, as the reference code).
PADDING = 2

_DEFAULT_UNITS_PER_STAGE = 5
_CIFAR_PIXELS = PixelRange(CIFAR10_MEAN, CIFAR10_STD)


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cifar5Data:
    """CIFAR-5 training and test images (classes 0-4) and the test images of classes 5-9."""

    train: ImageData
    test: ImageData
    outliers: ImageData

    @property
    def source(self) -> str:
        """Where the CIFAR-10 pixels come from (official batches or the lossy JPEG copy)."""
        return self.train.source

    @property
    def lossy(self) -> bool:
        """True when the images come from the lossy JPEG copy of CIFAR-10."""
        return self.train.lossy


def data_note(data: Cifar5Data) -> str:
    """One markdown sentence on where the CIFAR-10 pixels come from, flagged as a deviation if lossy."""
    if data.lossy:
        return (f"**Deviation from the paper:** the CIFAR-10 images come from a {data.source}. "
                "The pixels differ slightly from the official batches the paper used, so the "
                "numbers cannot match a run on the official files exactly.")
    return f"The CIFAR-10 images come from the {data.source}, as in the paper."


def load_data(n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Cifar5Data:
    """CIFAR-5 train/test and the outliers; ``n_train``/``n_test`` draw subsets (None: everything).

    ``n_test`` applies to the CIFAR-5 test set and to the outliers alike (5,000 images each).
    Subsets are drawn without replacement with ``seed`` (:meth:`ImageData.subset`).
    """
    train, test = load_cifar5("train"), load_cifar5("test")
    outliers = load_cifar5("test", outliers=True)
    if n_train is not None:
        train = train.subset(n_train, seed=seed)
    if n_test is not None:
        test, outliers = test.subset(n_test, seed=seed), outliers.subset(n_test, seed=seed)
    return Cifar5Data(train, test, outliers)


class RandomCropFlip:
    """The training augmentation: pad with black, random ``size`` crops, random left-right flips.

    Called by :func:`hypernets.training.fit` on each mini-batch ``[B, C, H, W]`` (normalised,
    on any device) with fit's generator; every image gets its own crop offset and flip. The
    padding is the normalised value of a black pixel per channel, ``pixel_range`` giving the
    normalisation (CIFAR-10's by default). Offsets and flips are drawn on the CPU from the
    generator, so a seed fixes them on every device.
    """

    def __init__(self, size: int = CROP_SIZE, padding: int = PADDING, flip: bool = True,
                 pixel_range: PixelRange = _CIFAR_PIXELS):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be an integer >= 1, got {size!r}")
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be an integer >= 0, got {padding!r}")
        self.size = size
        self.padding = padding
        self.flip = bool(flip)
        self.pixel_range = pixel_range

    def __repr__(self) -> str:
        return f"RandomCropFlip(size={self.size}, padding={self.padding}, flip={self.flip})"

    def __call__(self, x: Tensor, generator: torch.Generator) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.pixel_range.n_channels:
            raise ValueError(f"x must be images [B, {self.pixel_range.n_channels}, H, W], got "
                             f"shape {tuple(x.shape)}")
        batch, channels, height, width = x.shape
        pad = self.padding
        span_h, span_w = height + 2 * pad - self.size, width + 2 * pad - self.size
        if span_h < 0 or span_w < 0:
            raise ValueError(f"crops of {self.size} pixels do not fit images of {height}x{width} "
                             f"padded by {pad}")
        black, _ = self.pixel_range.bounds(x)
        padded = black.expand(batch, channels, height + 2 * pad, width + 2 * pad).clone()
        padded[..., pad:pad + height, pad:pad + width] = x
        top = torch.randint(0, span_h + 1, (batch,), generator=generator)
        left = torch.randint(0, span_w + 1, (batch,), generator=generator)
        steps = torch.arange(self.size)
        rows = (top[:, None] + steps).to(x.device)  # [B, size]
        cols = (left[:, None] + steps).to(x.device)
        if self.flip:
            flipped = torch.rand(batch, generator=generator) < 0.5
            # A flip reverses the column order of the crop.
            cols = torch.where(flipped[:, None].to(x.device), cols.flip(1), cols)
        index = torch.arange(batch, device=x.device)[:, None, None]
        # Advanced indices on dims 0, 2, 3 around a slice: the result is [B, size, size, C].
        crops = padded[index, :, rows[:, :, None], cols[:, None, :]]
        return crops.permute(0, 3, 1, 2).contiguous()


def centre_crop(x: Tensor, size: int = CROP_SIZE) -> Tensor:
    """The central ``size`` x ``size`` pixels of images ``[N, C, H, W]`` (the test-time input)."""
    height, width = x.shape[-2:]
    if size > height or size > width:
        raise ValueError(f"a centre crop of {size} pixels does not fit images of {height}x{width}")
    top, left = (height - size) // 2, (width - size) // 2
    return x[..., top:top + size, left:left + size].contiguous()


def make_target(units_per_stage: int = _DEFAULT_UNITS_PER_STAGE) -> TargetNet:
    """The paper's CIFAR-5 ResNet (``get_target("cifar_resnet")``, 5 units per stage), or a shallower one.

    Fewer units per stage give a small ResNet of the same design for quick runs.
    """
    if isinstance(units_per_stage, bool) or not isinstance(units_per_stage, int) or units_per_stage < 1:
        raise ValueError(f"units_per_stage must be an integer >= 1, got {units_per_stage!r}")
    if units_per_stage == _DEFAULT_UNITS_PER_STAGE:
        return get_target("cifar_resnet")
    return cifar_resnet(units_per_stage=units_per_stage, input_size=CROP_SIZE)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


def evaluate_cifar5(trained: Mapping[str, TrainedMethod], data: Cifar5Data, *, n_samples: int,
                    batch_size: int = 1000, seed: int = 0,
                    n_points: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The CIFAR-5 table and the entropy ECDFs of every trained method, from one prediction each.

    Test images and outliers are centre-cropped to :data:`CROP_SIZE`. Each method predicts with
    S sampled nets (:func:`hypernets.experiments.mnist.predict_probs`: 1 for MAP, the members of
    an ensemble).

    Returns ``(table, ecdf)``. ``table`` has one row per method: ``method, label, n_nets``,
    ``error_pct, entropy_auc_in, entropy_auc_out, nll, ece, brier``
    (:func:`~hypernets.experiments.mnist.classification_row`), ``ood_auroc`` (outliers
    detected by predictive entropy, outliers positive) and ``train_time_s``. ``ecdf`` has the
    empirical CDFs of the predictive entropy on ``n_points`` entropies in [0, log 5]: ``method,
    label, data`` (``in``/``out``), ``entropy, cdf``.
    """
    if not trained:
        raise ValueError("trained must hold at least one trained method")
    x_in, x_out = centre_crop(data.test.x), centre_crop(data.outliers.x)
    rows, curves = [], []
    for name, run in trained.items():
        probs = {"in": predict_probs(run, x_in, n_samples, batch_size=batch_size, seed=seed),
                 "out": predict_probs(run, x_out, n_samples, batch_size=batch_size, seed=seed)}
        detection = metrics.ood_metrics_from_probs(probs["in"], probs["out"], score="entropy")
        rows.append({"method": name, "label": run.label, "n_nets": probs["in"].shape[0],
                     **classification_row(probs["in"], data.test.y, probs["out"]),
                     "ood_auroc": detection["auroc"], "train_time_s": run.train_time_s})
        for part, p in probs.items():
            grid, cdf = metrics.entropy_ecdf(p, n_points=n_points)
            curves.append(pd.DataFrame({"method": name, "label": run.label, "data": part,
                                        "entropy": grid.numpy(), "cdf": cdf.numpy()}))
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def plot_entropy_cdfs(ecdf: pd.DataFrame) -> plt.Figure:
    """ECDFs of the predictive entropy on the CIFAR-5 test set and on the outliers, per method.

    The entropy AUC of the table is the area under each curve divided by log 5: on the test
    set a curve that rises early (confident) is good, on the outliers one that stays low
    (uncertain) is.
    """
    labels = list(dict.fromkeys(ecdf["label"]))
    palette = dict(zip(labels, sns.color_palette(n_colors=len(labels))))
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), sharey=True)
    titles = {"in": "CIFAR-5 test (classes 0-4)", "out": "outliers (classes 5-9)"}
    for ax, (part, title) in zip(axes, titles.items()):
        for label in labels:
            curve = ecdf[(ecdf["data"] == part) & (ecdf["label"] == label)]
            ax.plot(curve["entropy"], curve["cdf"], color=palette[label], label=label,
                    drawstyle="steps-post")
        ax.set_title(title)
        ax.set_xlabel("predictive entropy (nats)")
    axes[0].set_ylabel("fraction of images")
    axes[1].legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    return fig
