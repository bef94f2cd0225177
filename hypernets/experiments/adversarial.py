"""Bayes by Hypernet's robustness experiment: FGSM attacks on MNIST LeNets, per method; and
HyperGAN's: detecting FGSM and BIM examples by the predictive entropy of sampled nets.

The methods are trained with :func:`hypernets.runs.train_methods`; this module
attacks each trained method with :func:`hypernets.adversarial.attack_curve` (the gradient of the
NLL of the sample-averaged predictive, inputs clipped to valid pixels, one fixed set of sampled
nets for attack and evaluation) and draws the paper's three curves against the budget epsilon:
accuracy, mean predictive entropy and the entropy AUC.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from torch import Tensor

from hypernets import metrics
from hypernets.adversarial import (ATTACKS, adversarial_curves, attack_seeds, fgsm_direction,
                                  fgsm_step)
from hypernets.data import MNIST_PIXELS, PixelRange
from hypernets.evaluation import (
    equivalence_verdict,
    ordering_verdict,
    paired_auroc_verdict,
    prose_list,
    ranking_prose,
    verdict_of,
    verdict_prose,
)
from hypernets.plots import figure_legend, plot_attack_curves as plot_adversarial_curves
from hypernets.published import compare_with_published
from hypernets.runs import TrainedMethod
from hypernets.seeding import seeded
from hypernets.training import tensor_digest
from hypernets.validation import check_int, check_int_list

__all__ = [
    "PAPER_EPSILONS",
    "DetectionResults",
    "adversarial_curves",
    "adversarial_detection",
    "adversarial_examples",
    "attack_seeds",
    "clean_error_comparison",
    "conclusion",
    "detection_claims",
    "plot_adversarial_curves",
    "plot_adversarial_examples",
    "plot_detection_curves",
    "robustness_claims",
    "robustness_over_seeds",
    "robustness_summary",
]

#: The paper's budgets: 9 values evenly spaced on [0, 0.4] (pixel units).
PAPER_EPSILONS: tuple[float, ...] = tuple(float(eps) for eps in np.linspace(0.0, 0.4, 9))

def robustness_over_seeds(curves: pd.DataFrame,
                          epsilons_shown: Sequence[float] | None = None) -> pd.DataFrame:
    """:func:`robustness_summary` of each seed of :func:`attack_seeds` curves, with ``seed``."""
    return pd.concat([robustness_summary(part, epsilons_shown).assign(seed=s)
                      for s, part in curves.groupby("seed", sort=False)], ignore_index=True)


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
    budgets). ``clean_error_pct`` is the error without attack and ``mean_retained_accuracy``
    the mean ``retained_accuracy`` over the budgets above 0: the number behind the paper's
    claim that Bayes by Hypernet is the most robust (see :func:`robustness_claims`).
    ``entropy_clean`` and ``entropy_max_eps`` are the mean predictive entropies at the
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
        row["clean_error_pct"] = 100.0 * (1.0 - float(part["accuracy"].iloc[0]))
        row["mean_retained_accuracy"] = float(part.loc[part["epsilon"] > 0, "retained_accuracy"].mean())
        row["entropy_clean"] = float(part["entropy"].iloc[0])
        row["entropy_max_eps"] = float(part["entropy"].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows)


#: "Comparable clean accuracy": the tolerance, in percentage points of clean test error.
CLEAN_ERROR_TOLERANCE_PP = 0.5
#: The summary columns a table over seeds averages.
SUMMARY_METRICS = ("clean_error_pct", "mean_accuracy", "mean_retained_accuracy",
                   "entropy_clean", "entropy_max_eps")


def robustness_claims(summary: pd.DataFrame, *, method: str = "bbh",
                      clean_tolerance: float = CLEAN_ERROR_TOLERANCE_PP) -> pd.DataFrame:
    """"``method`` is the most robust", against each other method of a seed summary.

    ``summary`` is a :func:`~hypernets.evaluation.seed_summary` of :func:`robustness_summary`
    tables (a ``seed`` column added). Against each other method: seen if ``method`` keeps more
    of its accuracy (a higher ``mean_retained_accuracy``, beyond the seeds' spread, see
    :func:`~hypernets.evaluation.ordering_verdict`) at a clean error within
    ``clean_tolerance`` percentage points (:func:`~hypernets.evaluation.equivalence_verdict`);
    where the clean errors are not comparable the claim is not seen.
    """
    others = [m for m in summary["method"] if m != method]
    if method not in set(summary["method"]) or not others:
        raise ValueError(f"summary must hold {method!r} and at least one other method, got "
                         f"{list(summary['method'])}")
    rows = []
    for other in others:
        row = ordering_verdict(summary, f"keeps more accuracy than {other} under attack",
                               "mean_retained_accuracy", method, other, lower=False)
        clean = equivalence_verdict(summary, "", "clean_error_pct", method, other,
                                    tolerance=clean_tolerance)
        row["evidence"] += f"; clean error {clean['evidence']}"
        if clean["seen"] is False:
            row["seen"] = False
            row["evidence"] += " (not comparable)"
        rows.append(row)
    return pd.DataFrame(rows)


def conclusion(summary: pd.DataFrame, claims: pd.DataFrame, detection_verdicts: pd.DataFrame, *,
               method: str = "bbh", clean_tolerance: float = CLEAN_ERROR_TOLERANCE_PP) -> str:
    """The page's conclusion as Markdown prose, computed from its tables.

    ``summary`` is the seed summary of :func:`robustness_over_seeds`, ``claims`` its
    :func:`robustness_claims` (for ``method``, with ``clean_tolerance``) and
    ``detection_verdicts`` the :func:`detection_claims`. The methods are ranked by the retained
    accuracy and the clean error; the robustness verdicts name the methods whose clean error is
    not comparable; the detection verdicts give the largest group as a count.
    """
    not_comparable = [
        other for other in summary["method"] if other != method
        and equivalence_verdict(summary, "", "clean_error_pct", method, other,
                                tolerance=clean_tolerance)["seen"] is False]
    labels = summary.set_index("method")["label"]
    robustness = (
        "**Robustness.** Accuracy retained above chance (relative to the clean accuracy, mean over "
        f"the budgets above 0), highest first: {ranking_prose(summary, 'mean_retained_accuracy', ascending=False)}. "
        f"Clean error, lowest first: {ranking_prose(summary, 'clean_error_pct', unit=' %')}. The paper's "
        f"claim that {labels[method]} is the most robust: {verdict_prose(claims)}.")
    if not_comparable:
        robustness += (f" Against {prose_list([labels[m] for m in not_comparable])} it is not seen "
                       f"because the clean errors are not within ± {clean_tolerance:g} percentage "
                       "points of each other, whichever keeps more of its accuracy.")
    paragraphs = [robustness]
    if len(detection_verdicts):
        groups = pd.Series([verdict_of(seen) for seen in detection_verdicts["seen"]]).value_counts()
        paragraphs.append(
            f"**Detection (HyperGAN).** Of the {len(detection_verdicts)} comparisons (attack, budget, "
            f"baseline) of its claim: {verdict_prose(detection_verdicts, counted=[groups.index[0]])}.")
    return "\n\n".join(paragraphs)


def clean_error_comparison(curves: pd.DataFrame) -> pd.DataFrame:
    """Our error at epsilon = 0 beside the error of the paper's MNIST table (same LeNet, same methods).

    The robustness figure itself was published without numbers; its starting point, the clean
    test error, is in the paper's MNIST table. Returns the ``error_pct`` rows of
    :func:`hypernets.published.compare_with_published` for table ``mnist`` (ours: the mean over
    the seeds of :func:`attack_seeds` curves); ``curves`` must hold the budget 0.
    """
    clean = curves[np.isclose(curves["epsilon"], 0.0, atol=1e-12, rtol=0)]
    if clean.empty:
        raise ValueError("curves hold no row with epsilon = 0, the clean evaluation")
    # One row per method: the mean over seeds where the curves have several.
    accuracy = clean.groupby("method", sort=False)["accuracy"].mean()
    ours = pd.DataFrame({"method": accuracy.index.to_numpy(),
                         "error_pct": 100.0 * (1.0 - accuracy.to_numpy())})
    comparison = compare_with_published(ours, "mnist")
    return comparison[comparison["metric"] == "error_pct"].reset_index(drop=True)


def example_method(methods: Sequence[str]) -> str:
    """The run whose adversarial images the page shows: Bayes by Hypernet's (as its paper),
    else the last of ``methods``."""
    return "bbh" if "bbh" in methods else methods[-1]


def adversarial_examples(run: TrainedMethod, x: Tensor, y: Tensor,
                         epsilons: Sequence[float] = PAPER_EPSILONS, *, n_samples: int,
                         pixel_range: PixelRange = MNIST_PIXELS, seed: int = 0) -> Tensor:
    """FGSM images of a few inputs against ``run``, in raw pixels: ``[len(epsilons), B, C, H, W]``,
    at 8 bits per pixel (as a picture shows them, and small enough for a run's record).

    Uses the same S sampled nets (drawn with ``seed``) for every budget, as
    :func:`hypernets.adversarial.attack_curve` does.
    """
    def compute() -> list:
        method = run.method
        method.eval()
        device = method.device
        with seeded(seed, device), torch.no_grad():
            params = method.sample_params(method.n_distinct_nets(n_samples))
        xb, yb = x.to(device), y.to(device)
        direction = fgsm_direction(method.target, params, xb, yb)
        images = torch.stack([pixel_range.to_pixels(fgsm_step(xb, direction, epsilon,
                                                              pixel_range)).cpu()
                              for epsilon in epsilons])
        return (images.clamp(0, 1) * 255).round().to(torch.uint8).tolist()

    arguments = {"x": tensor_digest(x)["sha256"], "y": tensor_digest(y)["sha256"],
                 "epsilons": [float(eps) for eps in epsilons], "n_samples": n_samples,
                 "pixel_range": [list(pixel_range.mean), list(pixel_range.std)], "seed": seed}
    kept = run.evaluated("fgsm_examples", arguments, EVALUATION_VERSIONS["fgsm_examples"],
                         compute)
    return torch.tensor(kept, dtype=torch.float32) / 255


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


# ---------------------------------------------------------------------------------------------
# Detecting adversarial examples (HyperGAN)
# ---------------------------------------------------------------------------------------------


#: Versions of the evaluations here that a run's record keeps (see
#: :meth:`~hypernets.runs.TrainedMethod.evaluated`; ``tests/test_records.py`` pins the code).
EVALUATION_VERSIONS = {"fgsm_examples": 1, "entropy_detection": 1}

#: Most nets times images in one attack batch of :func:`adversarial_detection`: BIM keeps every
#: net's activations for its backward pass (those of 100 LeNets on 1,000 images exhausted a
#: 24 GB machine), so the largest ensembles attack fewer images at a time. Images are attacked
#: independently, so this changes memory, not what is computed.
ATTACK_NET_IMAGES = 25_000


@dataclass(frozen=True)
class DetectionResults:
    """Detection of adversarial images by the predictive entropy, per method, attack, nets, budget.

    ``table``: method, label, attack, n_nets (asked), n_nets_used, epsilon, accuracy (on the
    adversarial images), entropy_clean, entropy_adversarial (means, nats), auroc, auroc_low,
    auroc_high (adversarial images positive, their clean originals negative; the 95% stratified
    bootstrap interval). ``scores``: ``(method, attack, n_nets, epsilon)`` -> (clean entropies,
    adversarial entropies), for the claims.
    """

    table: pd.DataFrame
    scores: dict[tuple[str, str, int, float], tuple[np.ndarray, np.ndarray]] = field(repr=False)
    n_nets: tuple[int, ...]


def _entropies(method, params, x: Tensor, n_nets: int) -> tuple[np.ndarray, Tensor]:
    with torch.no_grad():
        probs = method.predict(x, n_nets, params=params).float().cpu()
    return metrics.predictive_entropy(probs).to(torch.float64).numpy(), probs


def adversarial_detection(trained: Mapping[str, TrainedMethod], x: Tensor, y: Tensor, *,
                          epsilons: Sequence[float], n_nets: Sequence[int] = (10, 100),
                          attacks: Sequence[str] = ("fgsm", "bim"),
                          pixel_range: PixelRange = MNIST_PIXELS, batch_size: int = 500,
                          n_resamples: int = 1000, seed: int = 0) -> DetectionResults:
    """Can the predictive entropy of k sampled nets tell adversarial images from clean ones?

    For every run and every k of ``n_nets`` (at most what the run offers, see
    :meth:`~hypernets.methods.base.Method.n_distinct_nets`), the first k of one seeded draw of
    nets craft white-box attacks on their mean predictive (:data:`hypernets.adversarial.ATTACKS`)
    at every budget of ``epsilons`` above 0, and score the clean and the attacked images.
    """
    if not trained:
        raise ValueError("trained must hold at least one trained method")
    n_nets = sorted(set(check_int_list("n_nets", n_nets, minimum=1)))
    unknown = sorted(set(attacks) - set(ATTACKS))
    if unknown or not attacks:
        raise ValueError(f"attacks must name some of {sorted(ATTACKS)}, got {list(attacks)}")
    budgets = [float(eps) for eps in epsilons if float(eps) > 0]
    if not budgets:
        raise ValueError(f"epsilons must hold a budget above 0, got {list(epsilons)}")
    if y.shape != (len(x),):
        raise ValueError(f"y must have shape [N] = [{len(x)}] to match x; got {tuple(y.shape)}")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    arguments = {"x": tensor_digest(x)["sha256"], "y": tensor_digest(y)["sha256"],
                 "budgets": budgets, "n_nets": n_nets, "attacks": list(attacks),
                 "pixel_range": [list(pixel_range.mean), list(pixel_range.std)],
                 "batch_size": batch_size, "n_resamples": n_resamples, "seed": seed}
    rows, scores = [], {}
    for name, run in trained.items():
        kept = run.evaluated(
            "entropy_detection", arguments, EVALUATION_VERSIONS["entropy_detection"],
            lambda run=run: _detect(run.method, x, y, budgets=budgets, n_nets=n_nets,
                                    attacks=attacks, pixel_range=pixel_range,
                                    batch_size=batch_size, n_resamples=n_resamples, seed=seed))
        rows += [{"method": name, "label": run.label, **row} for row in kept["rows"]]
        for attack, k, eps, clean, attacked in kept["scores"]:
            scores[(name, attack, k, eps)] = (np.asarray(clean), np.asarray(attacked))
    return DetectionResults(pd.DataFrame(rows), scores, tuple(n_nets))


def _detect(method, x: Tensor, y: Tensor, *, budgets: list[float], n_nets: list[int],
            attacks: Sequence[str], pixel_range: PixelRange, batch_size: int, n_resamples: int,
            seed: int) -> dict[str, list]:
    """One run's part of :func:`adversarial_detection`: its rows (without method and label)
    and its entropies, ``[attack, k, epsilon, clean, adversarial]`` per attack, k and budget."""
    method.eval()
    drawn = method.n_distinct_nets(n_nets[-1])
    with seeded(seed, method.device), torch.no_grad():
        all_params = method.sample_params(drawn)
    rows, scores = [], []
    done: dict[int, list[tuple[dict, list]]] = {}
    for k in n_nets:
        used = min(k, drawn)
        if used in done:  # as many nets as a smaller k: the same numbers
            for row, entropies in done[used]:
                rows.append({**row, "n_nets": k})
                scores.append([row["attack"], k, row["epsilon"], *entropies])
            continue
        params = {p: value[:used] for p, value in all_params.items()}
        clean, adversarial = [], {(a, eps): [] for a in attacks for eps in budgets}
        chunk = max(1, min(batch_size, ATTACK_NET_IMAGES // used))
        for start in range(0, len(x), chunk):
            xb = x[start:start + chunk].to(method.device)
            yb = y[start:start + chunk].to(method.device)
            clean.append(_entropies(method, params, xb, used))
            for attack in attacks:
                for eps in budgets:
                    images = ATTACKS[attack](method.target, params, xb, yb, eps, pixel_range)
                    adversarial[(attack, eps)].append(_entropies(method, params, images, used))
        clean_scores = np.concatenate([part[0] for part in clean])
        done[used] = []
        for (attack, eps), parts in adversarial.items():
            attacked = np.concatenate([part[0] for part in parts])
            probs = torch.cat([part[1] for part in parts], dim=1)
            low, high = metrics.auroc_interval(clean_scores, attacked,
                                               n_resamples=n_resamples, seed=seed)
            row = {"attack": attack, "n_nets": k, "n_nets_used": used, "epsilon": eps,
                   "accuracy": metrics.accuracy(probs, y.cpu()),
                   "entropy_clean": float(clean_scores.mean()),
                   "entropy_adversarial": float(attacked.mean()),
                   "auroc": metrics.ood_metrics(clean_scores, attacked)["auroc"],
                   "auroc_low": low, "auroc_high": high}
            entropies = [clean_scores.tolist(), attacked.tolist()]
            rows.append(row)
            scores.append([attack, k, eps, *entropies])
            done[used].append((row, entropies))
    return {"rows": rows, "scores": scores}


def detection_claims(results: DetectionResults, *, n_resamples: int = 1000,
                     seed: int = 0) -> pd.DataFrame:
    """HyperGAN's claim per attack and budget, for the runs present: its sampled nets detect
    adversarial images better than a deep ensemble of as many nets (the largest k of
    ``results.n_nets`` the ensemble has members for) and than MC dropout with the most nets.
    Paired bootstrap of the AUROC difference (the same attacked test images for both,
    :func:`~hypernets.evaluation.paired_auroc_verdict`)."""
    table = results.table
    runs = set(table["method"])
    comparisons = []
    if {"hypergan", "ensemble"} <= runs:
        members = int(table.loc[table["method"] == "ensemble", "n_nets_used"].max())
        comparisons.append(("ensemble", max([k for k in results.n_nets if k <= members],
                                            default=results.n_nets[0])))
    if {"hypergan", "mc_dropout"} <= runs:
        comparisons.append(("mc_dropout", results.n_nets[-1]))
    rows = []
    for attack in dict.fromkeys(table["attack"]):
        for eps in sorted(set(table.loc[table["attack"] == attack, "epsilon"])):
            for other, k in comparisons:
                verdict = paired_auroc_verdict(
                    f"HyperGAN detects {attack.upper()} images at ε = {eps:g} better than "
                    f"{other} ({k} nets each)", results.scores[("hypergan", attack, k, eps)],
                    results.scores[(other, attack, k, eps)], names=("hypergan", other),
                    what=f"entropy, {attack.upper()} ε = {eps:g}", n_resamples=n_resamples,
                    seed=seed)
                rows.append({"attack": attack, "epsilon": eps, **verdict})
    return pd.DataFrame(rows, columns=["attack", "epsilon", "claim", "seen", "rule", "evidence"])


def plot_detection_curves(table: pd.DataFrame) -> plt.Figure:
    """AUROC of detecting the attacked images against ε: one panel per attack and number of
    nets, one line per method with its 95% bootstrap band; chance (0.5) dashed."""
    attacks = list(dict.fromkeys(table["attack"]))
    panels = [(attack, k) for attack in attacks for k in sorted(set(table["n_nets"]))]
    labels = list(dict.fromkeys(table["label"]))
    colors = dict(zip(labels, sns.color_palette(n_colors=len(labels))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels) + 1.8, 3.4),
                             sharey=True, squeeze=False)
    for ax, (attack, k) in zip(axes[0], panels):
        part = table[(table["attack"] == attack) & (table["n_nets"] == k)]
        for label in labels:
            line = part[part["label"] == label].sort_values("epsilon")
            if line.empty:
                continue
            ax.plot(line["epsilon"], line["auroc"], marker="o", color=colors[label], label=label)
            ax.fill_between(line["epsilon"], line["auroc_low"], line["auroc_high"],
                            color=colors[label], alpha=0.15, linewidth=0)
        ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
        ax.set_title(f"{attack.upper()}, {k} nets")
        ax.set_xlabel("budget ε (pixels)")
    axes[0][0].set_ylabel("AUROC, entropy (adversarial positive)")
    figure_legend(fig)
    fig.tight_layout()
    return fig
