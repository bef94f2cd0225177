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

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

from hypernets import metrics
from hypernets.data import CIFAR10_PIXELS, ImageSplits, PixelRange
from hypernets.evaluation import (
    accuracy_and_outlier_claims,
    classification_row,
    entropy_ecdf_table,
    predict_probs,
    ranking_prose,
    seed_summary,
    table_paragraphs,
)
from hypernets.published import published
from hypernets.runs import TrainedMethod
from hypernets.targets import TargetNet, cifar_resnet, get_target
from hypernets.training import tensor_digest
from hypernets.validation import check_int, check_positive_int

__all__ = [
    "CROP_SIZE",
    "PADDING",
    "RandomCropFlip",
    "centre_crop",
    "conclusion",
    "data_note",
    "evaluate_cifar5",
    "evaluate_seeds",
    "make_target",
    "plot_entropy_cdfs",
    "table_claims",
]

#: Side of the square crops the ResNet sees, in training and at test time.
CROP_SIZE = 24
#: Black pixels added on each side before random crops (32 -> 36, as the reference code).
PADDING = 2

_DEFAULT_UNITS_PER_STAGE = 5


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def data_note(data: ImageSplits) -> str:
    """One markdown sentence on where the CIFAR-10 pixels come from, flagged as a deviation if lossy."""
    if data.lossy:
        return (f"**Deviation from the paper:** the CIFAR-10 images come from a {data.source}. "
                "The pixels differ slightly from the official batches the paper used, so the "
                "numbers cannot match a run on the official files exactly.")
    return f"The CIFAR-10 images come from the {data.source}, as in the paper."


class RandomCropFlip:
    """The training augmentation: pad with black, random ``size`` crops, random left-right flips.

    Called by :func:`hypernets.training.fit` on each mini-batch ``[B, C, H, W]`` (normalised,
    on any device) with fit's generator; every image gets its own crop offset and flip. The
    padding is the normalised value of a black pixel per channel, ``pixel_range`` giving the
    normalisation (CIFAR-10's by default). Offsets and flips are drawn on the CPU from the
    generator, so a seed fixes them on every device.
    """

    def __init__(self, size: int = CROP_SIZE, padding: int = PADDING, flip: bool = True,
                 pixel_range: PixelRange = CIFAR10_PIXELS):
        self.size = check_positive_int("size", size)
        self.padding = check_int("padding", padding, minimum=0)
        self.flip = bool(flip)
        self.pixel_range = pixel_range

    def __repr__(self) -> str:
        return f"RandomCropFlip(size={self.size}, padding={self.padding}, flip={self.flip})"

    def store_key(self) -> dict:
        """What decides the augmentation, for the run store's key."""
        return {"kind": "random_crop_flip", "size": self.size, "padding": self.padding,
                "flip": self.flip, "mean": list(self.pixel_range.mean),
                "std": list(self.pixel_range.std)}

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
    if check_positive_int("units_per_stage", units_per_stage) == _DEFAULT_UNITS_PER_STAGE:
        return get_target("cifar_resnet")
    return cifar_resnet(units_per_stage=units_per_stage, input_size=CROP_SIZE)


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


#: Versions of the evaluations here that a run's record keeps (see
#: :meth:`~hypernets.runs.TrainedMethod.evaluated`; ``tests/test_records.py`` pins the code).
EVALUATION_VERSIONS = {"cifar5.classification": 1}


def evaluate_cifar5(trained: Mapping[str, TrainedMethod], data: ImageSplits, *, n_samples: int,
                    batch_size: int = 1000, seed: int = 0,
                    n_points: int = 200) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The CIFAR-5 table and the entropy ECDFs of every trained method, from one prediction each.

    Test images and outliers are centre-cropped to :data:`CROP_SIZE`. Each method predicts with
    S sampled nets (:func:`hypernets.evaluation.predict_probs`: 1 for MAP, the members of an
    ensemble).

    Returns ``(table, ecdf)``. ``table`` has one row per method: ``method, label, n_nets``,
    ``error_pct, entropy_auc_in, entropy_auc_out, nll, ece, brier``
    (:func:`~hypernets.evaluation.classification_row`), ``ood_auroc`` (outliers
    detected by predictive entropy, outliers positive) and ``train_time_s``. ``ecdf`` has the
    empirical CDFs of the predictive entropy on ``n_points`` entropies in [0, log 5]: ``method,
    label, data`` (``in``/``out``), ``entropy, cdf``.
    """
    if not trained:
        raise ValueError("trained must hold at least one trained method")
    x_in, x_out = centre_crop(data.test.x), centre_crop(data.outliers.x)
    arguments = {"x_test": tensor_digest(x_in)["sha256"],
                 "y_test": tensor_digest(data.test.y)["sha256"],
                 "x_ood": tensor_digest(x_out)["sha256"], "n_samples": n_samples,
                 "batch_size": batch_size, "seed": seed, "n_points": n_points}
    rows, curves = [], []
    for name, run in trained.items():
        def compute(run=run) -> dict:
            probs = {"in": predict_probs(run, x_in, n_samples, batch_size=batch_size, seed=seed),
                     "out": predict_probs(run, x_out, n_samples, batch_size=batch_size, seed=seed)}
            detection = metrics.ood_metrics_from_probs(probs["in"], probs["out"], score="entropy")
            return {"row": {"n_nets": probs["in"].shape[0],
                            **classification_row(probs["in"], data.test.y, probs["out"]),
                            "ood_auroc": detection["auroc"]},
                    "ecdf": entropy_ecdf_table(probs, n_points=n_points).to_dict("records")}

        kept = run.evaluated("cifar5.classification", arguments,
                             EVALUATION_VERSIONS["cifar5.classification"], compute)
        rows.append({"method": name, "label": run.label, **kept["row"],
                     "train_time_s": run.train_time_s})
        curves.append(pd.DataFrame(kept["ecdf"]).assign(method=name, label=run.label)
                      [["method", "label", "data", "entropy", "cdf"]])
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


#: The columns of :func:`evaluate_cifar5` that a table over seeds averages.
TABLE_METRICS = ("error_pct", "entropy_auc_in", "entropy_auc_out", "nll", "ece", "brier",
                 "ood_auroc", "train_time_s")
#: The baselines of the paper's CIFAR-5 claim: Bayes by Hypernet matches MAP's error with lower
#: AUCs; the ensemble is the most accurate (MC dropout, far less accurate, is not a claim's
#: yardstick).
BASELINES = ("map", "ensemble")
#: "As accurate": the tolerance, in percentage points of test error (errors here are about 14 %).
ERROR_TOLERANCE_PP = 1.0


def evaluate_seeds(trained: Mapping[int, Mapping[str, TrainedMethod]], data: ImageSplits, *,
                   n_samples: int, batch_size: int = 1000,
                   seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`evaluate_cifar5` for the runs of every training seed: (table, ecdf), each with a
    ``seed`` column. ``trained`` maps a training seed to its runs."""
    if not trained:
        raise ValueError("trained must hold the runs of at least one seed")
    tables, curves = [], []
    for s, runs in trained.items():
        table, ecdf = evaluate_cifar5(runs, data, n_samples=n_samples, batch_size=batch_size,
                                      seed=seed)
        tables.append(table.assign(seed=s))
        curves.append(ecdf.assign(seed=s))
    return pd.concat(tables, ignore_index=True), pd.concat(curves, ignore_index=True)


def table_claims(summary: pd.DataFrame, *,
                 error_tolerance: float = ERROR_TOLERANCE_PP) -> pd.DataFrame:
    """The paper's CIFAR-5 claims on a :func:`~hypernets.evaluation.seed_summary`: Bayes by
    Hypernet as accurate as each of :data:`BASELINES` and less confident on the outliers
    (:func:`~hypernets.evaluation.accuracy_and_outlier_claims`)."""
    return accuracy_and_outlier_claims(summary, "bbh", BASELINES,
                                       error_tolerance=error_tolerance,
                                       outliers="the outlier classes")


#: The published runs' epochs (pawni/BayesByHypernet's CIFAR run scripts).
PAPER_EPOCHS = 200


def conclusion(table: pd.DataFrame, claims: pd.DataFrame, attack: pd.DataFrame, *,
               epochs: int) -> str:
    """The page's conclusion as Markdown prose, computed from its tables.

    ``table`` is the :func:`~hypernets.evaluation.seed_summary` of :func:`evaluate_seeds`,
    ``claims`` its :func:`table_claims`, ``attack`` the FGSM curves of every seed
    (:func:`hypernets.adversarial.attack_seeds`); ``epochs`` the runs' epochs. The methods are
    ranked by error, outlier entropy AUC and accuracy retained under attack.
    """
    paragraphs = table_paragraphs(table, claims, published("cifar5"), epochs=epochs,
                                  paper_epochs=PAPER_EPOCHS, outliers="the outlier classes")
    attacked = attack[attack["epsilon"] > 0]
    if len(attacked):
        retained = (attacked.groupby(["method", "label", "seed"], sort=False)["retained_accuracy"]
                    .mean().reset_index())
        paragraphs.append(
            "**FGSM** (not in the paper's CIFAR-5 table). Accuracy retained above chance, relative "
            "to the clean accuracy and averaged over the budgets above 0, highest first: "
            + ranking_prose(seed_summary(retained, ["retained_accuracy"]), "retained_accuracy",
                            ascending=False) + ".")
    return "\n\n".join(paragraphs)


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
