"""Bayes by Hypernet's robustness experiment: FGSM attacks on MNIST LeNets, per method.

The methods are trained with :func:`hypernets.runs.train_methods`; this module
attacks each trained method with :func:`hypernets.adversarial.attack_curve` (the gradient of the
NLL of the sample-averaged predictive, inputs clipped to valid pixels, one fixed set of sampled
nets for attack and evaluation) and draws the paper's three curves against the budget epsilon:
accuracy, mean predictive entropy and the entropy AUC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from hypernets.adversarial import attack_curve, fgsm_direction, fgsm_step
from hypernets.data import MNIST_PIXELS, PixelRange
from hypernets.plots import metric_panels
from hypernets.published import compare_with_published
from hypernets.runs import TrainedMethod
from hypernets.seeding import seeded

__all__ = [
    "PAPER_EPSILONS",
    "adversarial_curves",
    "adversarial_examples",
    "clean_error_comparison",
    "plot_adversarial_curves",
    "plot_adversarial_examples",
    "robustness_summary",
]

#: The paper's budgets: 9 values evenly spaced on [0, 0.4] (pixel units).
PAPER_EPSILONS: tuple[float, ...] = tuple(float(eps) for eps in np.linspace(0.0, 0.4, 9))

_CURVE_COLUMNS = {"accuracy": "accuracy", "entropy": "mean predictive entropy (nats)",
                  "entropy_auc": "entropy AUC"}


def adversarial_curves(trained: Mapping[str, TrainedMethod], x: Tensor, y: Tensor,
                       epsilons: Sequence[float] = PAPER_EPSILONS, *, n_samples: int,
                       pixel_range: PixelRange = MNIST_PIXELS, batch_size: int = 500,
                       seed: int = 0) -> pd.DataFrame:
    """FGSM curves of every trained method on the images ``x`` (normalised) with labels ``y``.

    Each method is attacked and scored with S sampled nets, S =
    ``method.n_distinct_nets(n_samples)`` (1 for MAP, the members of an ensemble). Returns one row per (method,
    epsilon): ``method, label, n_nets, epsilon, accuracy, entropy, entropy_auc``.
    """
    if not trained:
        raise ValueError("trained must hold at least one trained method")
    tables = []
    for name, run in trained.items():
        n_nets = run.method.n_distinct_nets(n_samples)
        curve = attack_curve(run.method, x, y, epsilons, n_samples=n_nets,
                             pixel_range=pixel_range, seed=seed, batch_size=batch_size)
        curve.insert(0, "n_nets", n_nets)
        curve.insert(0, "label", run.label)
        curve.insert(0, "method", name)
        tables.append(curve)
    return pd.concat(tables, ignore_index=True)


def _budgets_shown(curves: pd.DataFrame, epsilons_shown: Sequence[float] | None) -> list[float]:
    available = sorted(float(eps) for eps in curves["epsilon"].unique())
    if epsilons_shown is None:
        return list(dict.fromkeys([available[0], available[len(available) // 2], available[-1]]))
    for epsilon in epsilons_shown:
        if not np.isclose(available, epsilon, atol=1e-9, rtol=0).any():
            raise ValueError(f"epsilon {epsilon} is not among the budgets of curves {available}")
    return [float(epsilon) for epsilon in epsilons_shown]


def robustness_summary(curves: pd.DataFrame,
                       epsilons_shown: Sequence[float] | None = None) -> pd.DataFrame:
    """One row per method: accuracy at a few budgets, the mean accuracy over all budgets, entropies.

    ``epsilons_shown`` (default: the smallest, middle and largest budget of ``curves``) gives
    the columns ``accuracy_eps_<epsilon>``. ``mean_accuracy`` averages the accuracy over every
    budget of ``curves`` (the area under the accuracy curve over its width, for evenly spaced
    budgets): the single number behind the paper's claim that Bayes by Hypernet is the most
    robust. ``entropy_clean`` and ``entropy_max_eps`` are the mean predictive entropies at the
    smallest and the largest budget.
    """
    shown = _budgets_shown(curves, epsilons_shown)
    rows = []
    for (method, label), part in curves.groupby(["method", "label"], sort=False):
        part = part.sort_values("epsilon")
        row = {"method": method, "label": label}
        for epsilon in shown:
            match = part[np.isclose(part["epsilon"], epsilon, atol=1e-9, rtol=0)]
            row[f"accuracy_eps_{epsilon:g}"] = float(match["accuracy"].iloc[0])
        row["mean_accuracy"] = float(part["accuracy"].mean())
        row["entropy_clean"] = float(part["entropy"].iloc[0])
        row["entropy_max_eps"] = float(part["entropy"].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows)


def clean_error_comparison(curves: pd.DataFrame) -> pd.DataFrame:
    """Our error at epsilon = 0 beside the error of the paper's MNIST table (same LeNet, same methods).

    The robustness figure itself was published without numbers; its starting point, the clean
    test error, is in the paper's MNIST table. Returns the ``error_pct`` rows of
    :func:`hypernets.published.compare_with_published` for table ``mnist``; ``curves`` must hold
    the budget 0.
    """
    clean = curves[np.isclose(curves["epsilon"], 0.0, atol=1e-12, rtol=0)]
    if clean.empty:
        raise ValueError("curves hold no row with epsilon = 0, the clean evaluation")
    ours = pd.DataFrame({"method": clean["method"].to_numpy(),
                         "error_pct": 100.0 * (1.0 - clean["accuracy"].to_numpy())})
    comparison = compare_with_published(ours, "mnist")
    return comparison[comparison["metric"] == "error_pct"].reset_index(drop=True)


def plot_adversarial_curves(curves: pd.DataFrame) -> plt.Figure:
    """The paper's robustness figure: accuracy, mean entropy and entropy AUC against epsilon."""
    return metric_panels(curves, "epsilon", _CURVE_COLUMNS, "label", "FGSM budget ε (pixels)")


def adversarial_examples(run: TrainedMethod, x: Tensor, y: Tensor,
                         epsilons: Sequence[float] = PAPER_EPSILONS, *, n_samples: int,
                         pixel_range: PixelRange = MNIST_PIXELS, seed: int = 0) -> Tensor:
    """FGSM images of a few inputs against ``run``, in raw pixels: ``[len(epsilons), B, C, H, W]``.

    Uses the same S sampled nets (drawn with ``seed``) for every budget, as
    :func:`hypernets.adversarial.attack_curve` does.
    """
    method = run.method
    method.eval()
    device = method.device
    with seeded(seed, device), torch.no_grad():
        params = method.sample_params(method.n_distinct_nets(n_samples))
    xb, yb = x.to(device), y.to(device)
    direction = fgsm_direction(method.target, params, xb, yb)
    images = [pixel_range.to_pixels(fgsm_step(xb, direction, epsilon, pixel_range)).cpu()
              for epsilon in epsilons]
    return torch.stack(images)


def plot_adversarial_examples(images: Tensor, epsilons: Sequence[float]) -> plt.Figure:
    """A grid of :func:`adversarial_examples`: one column per budget, one row per input."""
    n_eps, n_images = images.shape[:2]
    if n_eps != len(epsilons):
        raise ValueError(f"images hold {n_eps} budgets but epsilons lists {len(epsilons)}")
    fig, axes = plt.subplots(n_images, n_eps, figsize=(1.1 * n_eps, 1.15 * n_images + 0.3),
                             squeeze=False)
    for col, epsilon in enumerate(epsilons):
        for row in range(n_images):
            ax = axes[row][col]
            picture = images[col, row].permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][col].set_title(f"ε = {epsilon:g}", fontsize="small")
    fig.tight_layout()
    return fig
