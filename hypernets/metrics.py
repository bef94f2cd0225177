"""Metrics for sampled predictions, independent of the method that produced them.

Shapes and conventions
----------------------
* Classification predictions are probabilities ``probs`` of shape ``[S, B, C]``: ``S`` sampled
  networks, ``B`` inputs, ``C >= 2`` classes. Logits are never guessed: turn them into
  probabilities with :func:`probs_from_logits` first. Every metric that needs a single prediction
  per input uses the *mean predictive* ``probs.mean(0)`` (the Bayesian model average).
* Regression predictions are ``samples`` of shape ``[S, B]`` or ``[S, B, 1]`` with targets of
  shape ``[B]`` or ``[B, 1]``. The predictive distribution is the Gaussian with the sample mean
  and variance ``sample variance (ddof=0) + noise_std**2`` (see :func:`predictive_mean_std`).
* Inputs are torch tensors; numpy arrays are accepted too. Scalar metrics return Python floats;
  per-input scores return CPU tensors of shape ``[B]`` in the input's floating dtype (float64 is
  used internally). Entropies are in nats.
* Uncertainty scores follow one direction: HIGHER = MORE UNCERTAIN (:data:`UNCERTAINTY_SCORES`).
* Out-of-distribution (OOD) detection follows torch-uncertainty: the OOD set is the positive
  class, and a higher score must mean "more likely OOD" (:func:`ood_metrics`).
* Calibration follows torch-uncertainty too: top-label ECE with 15 equal-width bins.

Bad input raises ``TypeError``/``ValueError`` naming the argument and the expected shape or
condition; nothing is silently repaired beyond clamping probabilities that passed the 1e-4
tolerance check into ``[0, 1]``.

Library use: ROC/PR metrics come from scikit-learn, accuracy and RMSE from scikit-learn, the
empirical CDF and Pearson tests from scipy.stats, Gaussian log densities from
``torch.distributions``. Entropy, mutual information, ECE, Brier, NLL of the mean predictive and
the diversity measures are written here; each docstring says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    roc_auc_score,
    roc_curve,
    root_mean_squared_error,
)

from hypernets.validation import check_int, check_real

__all__ = [
    "PROBABILITY_TOLERANCE",
    "UNCERTAINTY_SCORES",
    "accuracy",
    "auroc_difference_interval",
    "auroc_interval",
    "bootstrap_aurocs",
    "brier",
    "classification_metrics",
    "ece",
    "entropy_auc",
    "entropy_ecdf",
    "expected_entropy",
    "gaussian_nll",
    "interval_coverage",
    "max_probability",
    "mutual_information",
    "nll",
    "one_minus_max_probability",
    "ood_metrics",
    "ood_metrics_from_probs",
    "pairwise_disagreement",
    "predictive_entropy",
    "predictive_mean_std",
    "proportion_interval",
    "std_inside_outside",
    "probability_variance",
    "probs_from_logits",
    "reliability_diagram",
    "rmse",
    "weight_correlations",
    "weight_norm_diversity",
    "weight_norm_diversity_by_tensor",
]

#: Largest accepted deviation of probabilities from [0, 1] and of their class sums from 1.
PROBABILITY_TOLERANCE = 1e-4

_TPR_LEVEL = 0.95


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------


def _real_tensor(value, name: str) -> torch.Tensor:
    """Return ``value`` as a detached CPU tensor of real numbers, or raise naming ``name``."""
    if isinstance(value, np.ndarray):
        if not np.issubdtype(value.dtype, np.number) or np.iscomplexobj(value):
            raise TypeError(f"{name} must hold real numbers; got numpy dtype {value.dtype}")
        value = torch.as_tensor(value)
    elif not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy.ndarray; got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers; got dtype {value.dtype}")
    return value.detach().cpu()


def _require_finite(tensor: torch.Tensor, name: str) -> None:
    if tensor.is_floating_point() and not torch.isfinite(tensor).all():
        n_bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} contains {n_bad} NaN or infinite value(s)")


def _floating_dtype(tensor: torch.Tensor) -> torch.dtype:
    return tensor.dtype if tensor.is_floating_point() else torch.get_default_dtype()


def _validate_probs(probs, name: str = "probs") -> tuple[torch.Tensor, torch.dtype]:
    """Check ``probs`` is ``[S, B, C]`` probabilities; return it as float64 plus the output dtype."""
    tensor = _real_tensor(probs, name)
    if tensor.ndim != 3:
        raise ValueError(
            f"{name} must have shape [S, B, C] (samples, inputs, classes); got shape "
            f"{tuple(tensor.shape)}. For a single network, add the sample dimension: {name}[None]"
        )
    n_samples, batch, n_classes = tensor.shape
    if n_samples == 0 or batch == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}); need S >= 1 and B >= 1")
    if n_classes < 2:
        raise ValueError(f"{name} needs at least 2 classes in its last dimension; got C = {n_classes}")
    _require_finite(tensor, name)
    out_dtype = _floating_dtype(tensor)
    tensor = tensor.to(torch.float64)
    low, high = float(tensor.min()), float(tensor.max())
    if low < -PROBABILITY_TOLERANCE or high > 1 + PROBABILITY_TOLERANCE:
        raise ValueError(
            f"{name} must be probabilities in [0, 1]; found values in [{low:.4g}, {high:.4g}]. "
            "Convert logits with probs_from_logits first"
        )
    deviation = float((tensor.sum(-1) - 1).abs().max())
    if deviation > PROBABILITY_TOLERANCE:
        raise ValueError(
            f"{name} must sum to 1 over the class dimension (tolerance {PROBABILITY_TOLERANCE}); "
            f"largest deviation is {deviation:.4g}. Convert logits with probs_from_logits first"
        )
    return tensor.clamp(0.0, 1.0), out_dtype


def _validate_labels(labels, batch: int, n_classes: int, name: str = "labels") -> torch.Tensor:
    tensor = _real_tensor(labels, name)
    if tensor.is_floating_point():
        raise TypeError(f"{name} must hold integer class indices; got dtype {tensor.dtype}")
    if tensor.shape != (batch,):
        raise ValueError(
            f"{name} must have shape [B] = [{batch}] to match probs; got shape {tuple(tensor.shape)}"
        )
    low, high = int(tensor.min()), int(tensor.max())
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"{name} must be class indices in [0, {n_classes - 1}]; found values in [{low}, {high}]"
        )
    return tensor.to(torch.int64)


def _validate_noise_std(noise_std) -> float:
    return check_real("noise_std", noise_std, minimum=0.0)


def _validate_scores(scores, name: str) -> np.ndarray:
    tensor = _real_tensor(scores, name)
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor [N]; got shape {tuple(tensor.shape)}")
    _require_finite(tensor, name)
    return tensor.to(torch.float64).numpy()


def _validate_regression_samples(samples) -> tuple[torch.Tensor, torch.dtype]:
    """Return ``samples`` as float64 ``[S, B]`` plus the output dtype."""
    tensor = _real_tensor(samples, "samples")
    if tensor.ndim == 3 and tensor.shape[-1] == 1:
        tensor = tensor[..., 0]
    if tensor.ndim != 2:
        raise ValueError(f"samples must have shape [S, B] or [S, B, 1]; got shape {tuple(tensor.shape)}")
    if tensor.numel() == 0:
        raise ValueError(f"samples is empty (shape {tuple(tensor.shape)}); need S >= 1 and B >= 1")
    _require_finite(tensor, "samples")
    return tensor.to(torch.float64), _floating_dtype(tensor)


def _validate_regression(samples, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``samples`` as float64 ``[S, B]`` and ``targets`` as float64 ``[B]``."""
    sample_tensor, _ = _validate_regression_samples(samples)
    target_tensor = _real_tensor(targets, "targets")
    if target_tensor.ndim == 2 and target_tensor.shape[-1] == 1:
        target_tensor = target_tensor[:, 0]
    batch = sample_tensor.shape[1]
    if target_tensor.shape != (batch,):
        raise ValueError(
            f"targets must have shape [B] or [B, 1] with B = {batch} to match samples; "
            f"got shape {tuple(target_tensor.shape)}"
        )
    _require_finite(target_tensor, "targets")
    return sample_tensor, target_tensor.to(torch.float64)


# ---------------------------------------------------------------------------------------------
# Logits and uncertainty scores
# ---------------------------------------------------------------------------------------------


def probs_from_logits(logits) -> torch.Tensor:
    """Softmax over the class dimension of ``logits`` ``[S, B, C]``, giving probabilities ``[S, B, C]``.

    The metrics never guess whether they were given logits; call this explicitly.
    """
    tensor = _real_tensor(logits, "logits")
    if tensor.ndim != 3:
        raise ValueError(
            f"logits must have shape [S, B, C] (samples, inputs, classes); got shape {tuple(tensor.shape)}"
        )
    if tensor.numel() == 0:
        raise ValueError(f"logits is empty (shape {tuple(tensor.shape)})")
    _require_finite(tensor, "logits")
    return torch.softmax(tensor.to(_floating_dtype(tensor)), dim=-1)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    # xlogy gives 0 * log 0 = 0, so one-hot rows have entropy exactly 0.
    return -torch.special.xlogy(probs, probs).sum(-1)


def _predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    return _entropy(probs.mean(0))


def _expected_entropy(probs: torch.Tensor) -> torch.Tensor:
    return _entropy(probs).mean(0)


def predictive_entropy(probs) -> torch.Tensor:
    """Entropy (nats) of the mean predictive, per input: ``H[mean_s p_s]``, shape ``[B]``.

    Total uncertainty; lies in ``[0, log C]``. Written by hand: a one-line formula that no
    installed library provides for a sample dimension.
    """
    tensor, dtype = _validate_probs(probs)
    return _predictive_entropy(tensor).to(dtype)


def expected_entropy(probs) -> torch.Tensor:
    """Mean over samples of each sampled network's predictive entropy, per input: ``mean_s H[p_s]``.

    The aleatoric part of :func:`predictive_entropy`. Shape ``[B]``, nats.
    """
    tensor, dtype = _validate_probs(probs)
    return _expected_entropy(tensor).to(dtype)


def mutual_information(probs) -> torch.Tensor:
    """BALD score: mutual information between the label and the weights, per input, shape ``[B]``.

    ``MI = H[mean_s p_s] - mean_s H[p_s]`` (predictive minus expected entropy), which is ``>= 0``
    by concavity of the entropy; rounding can make it slightly negative, so it is clamped at 0.
    Zero when all samples agree exactly. Written by hand (no library computes it).
    """
    tensor, dtype = _validate_probs(probs)
    information = _predictive_entropy(tensor) - _expected_entropy(tensor)
    return information.clamp_min(0.0).to(dtype)


def probability_variance(probs) -> torch.Tensor:
    """Variance across samples of the class probabilities, averaged over the C classes; ``[B]``.

    Uses the population variance (ddof = 0, divide by S), so a single sample gives 0 instead of NaN.
    """
    tensor, dtype = _validate_probs(probs)
    return tensor.var(dim=0, correction=0).mean(-1).to(dtype)


def max_probability(probs) -> torch.Tensor:
    """Largest class probability of the mean predictive, per input, ``[B]``.

    This is a confidence (higher = more certain); :func:`one_minus_max_probability` is the
    matching uncertainty score.
    """
    tensor, dtype = _validate_probs(probs)
    return tensor.mean(0).amax(-1).to(dtype)


def one_minus_max_probability(probs) -> torch.Tensor:
    """``1 - max_c mean_s p_s[c]`` per input, ``[B]``: max probability turned into an uncertainty."""
    tensor, dtype = _validate_probs(probs)
    return (1.0 - tensor.mean(0).amax(-1)).to(dtype)


#: Per-input uncertainty scores, each mapping ``probs [S, B, C]`` to ``[B]`` with
#: HIGHER = MORE UNCERTAIN. "max_prob" is therefore ``1 - max probability``.
UNCERTAINTY_SCORES: dict[str, Callable[..., torch.Tensor]] = {
    "entropy": predictive_entropy,
    "expected_entropy": expected_entropy,
    "bald": mutual_information,
    "variance": probability_variance,
    "max_prob": one_minus_max_probability,
}


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def accuracy(probs, labels) -> float:
    """Fraction of inputs whose mean predictive's argmax equals the label (scikit-learn).

    Ties go to the lowest class index (``torch.argmax``).
    """
    tensor, _ = _validate_probs(probs)
    targets = _validate_labels(labels, tensor.shape[1], tensor.shape[2])
    predictions = tensor.mean(0).argmax(-1)
    return float(accuracy_score(targets.numpy(), predictions.numpy()))


def nll(probs, labels) -> float:
    """Mean over inputs of ``-log`` of the mean predictive's probability of the true label.

    The probability is clamped below at float64 machine epsilon (as scikit-learn's ``log_loss``
    does) so a zero probability gives a large finite loss. Written by hand because it must act on
    the mean over the sample dimension and because ``log_loss`` re-validates and renames its
    arguments across scikit-learn versions; tests check it equals ``log_loss`` for S = 1.
    """
    tensor, _ = _validate_probs(probs)
    targets = _validate_labels(labels, tensor.shape[1], tensor.shape[2])
    true_class_prob = tensor.mean(0).gather(-1, targets[:, None])[:, 0]
    eps = torch.finfo(torch.float64).eps
    return float(-true_class_prob.clamp_min(eps).log().mean())


def brier(probs, labels) -> float:
    """Multiclass Brier score of the mean predictive: mean over inputs of ``sum_c (p_c - y_c)^2``.

    Ranges over ``[0, 2]`` (not halved). Written by hand because scikit-learn only scores
    multiclass Brier from version 1.7 on (this package allows 1.4); tests check it equals
    ``brier_score_loss(..., scale_by_half=False)``.
    """
    tensor, _ = _validate_probs(probs)
    targets = _validate_labels(labels, tensor.shape[1], tensor.shape[2])
    one_hot = torch.nn.functional.one_hot(targets, tensor.shape[2]).to(torch.float64)
    return float(((tensor.mean(0) - one_hot) ** 2).sum(-1).mean())


def _calibration_bins(
    probs: torch.Tensor, labels: torch.Tensor, n_bins: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bin edges, counts, and per-bin sums of confidence and correctness of the top label."""
    confidence, prediction = probs.mean(0).max(-1)
    correct = (prediction == labels).to(torch.float64)
    edges = torch.linspace(0.0, 1.0, n_bins + 1, dtype=torch.float64)
    # Bins are (lower, upper], the first one also holding 0 (bucketize with right=False).
    bin_index = torch.bucketize(confidence, edges[1:-1])
    counts = torch.bincount(bin_index, minlength=n_bins)
    confidence_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bin_index, confidence)
    correct_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, bin_index, correct)
    return edges, counts, confidence_sum, correct_sum


def reliability_diagram(probs, labels, n_bins: int = 15) -> pd.DataFrame:
    """Data of a reliability diagram of the mean predictive's top label, one row per bin.

    Columns: ``bin_lower``, ``bin_upper`` (equal-width bins ``(lower, upper]`` on [0, 1]; the
    first bin also holds 0), ``count``, ``confidence`` (mean top-label probability in the bin) and
    ``accuracy`` (fraction correct in the bin). Empty bins keep count 0 and NaN means.
    """
    tensor, _ = _validate_probs(probs)
    targets = _validate_labels(labels, tensor.shape[1], tensor.shape[2])
    n_bins = check_int("n_bins", n_bins, minimum=1)
    edges, counts, confidence_sum, correct_sum = _calibration_bins(tensor, targets, n_bins)
    denominator = counts.to(torch.float64)
    return pd.DataFrame(
        {
            "bin_lower": edges[:-1].numpy(),
            "bin_upper": edges[1:].numpy(),
            "count": counts.numpy(),
            "confidence": (confidence_sum / denominator).numpy(),
            "accuracy": (correct_sum / denominator).numpy(),
        }
    )


def ece(probs, labels, n_bins: int = 15) -> float:
    """Expected calibration error of the mean predictive's top label, equal-width bins.

    ``ECE = sum_b (n_b / B) * |accuracy_b - confidence_b|`` over the bins of
    :func:`reliability_diagram` (15 bins by default, as torch-uncertainty). Written by hand:
    scikit-learn has no multiclass top-label ECE (``calibration_curve`` is binary and drops empty
    bins) and torchmetrics is not a dependency.
    """
    tensor, _ = _validate_probs(probs)
    targets = _validate_labels(labels, tensor.shape[1], tensor.shape[2])
    n_bins = check_int("n_bins", n_bins, minimum=1)
    _, _, confidence_sum, correct_sum = _calibration_bins(tensor, targets, n_bins)
    # n_b/B * |acc_b - conf_b| = |sum of correct - sum of confidence| / B; empty bins add 0.
    return float((correct_sum - confidence_sum).abs().sum() / tensor.shape[1])


def classification_metrics(probs, labels, n_bins: int = 15) -> dict[str, float]:
    """Accuracy, NLL, Brier and ECE of the mean predictive in one dict."""
    return {
        "accuracy": accuracy(probs, labels),
        "nll": nll(probs, labels),
        "brier": brier(probs, labels),
        "ece": ece(probs, labels, n_bins=n_bins),
    }


# ---------------------------------------------------------------------------------------------
# Out-of-distribution detection
# ---------------------------------------------------------------------------------------------


def ood_metrics(score_in, score_out) -> dict[str, float]:
    """Detection of the out-of-distribution set from an uncertainty score.

    Convention (torch-uncertainty): the OUT-of-distribution inputs are the POSITIVE class and a
    HIGHER score means MORE uncertain, i.e. more likely OOD. ``score_in`` ``[N_in]`` and
    ``score_out`` ``[N_out]`` are per-input scores, e.g. from :data:`UNCERTAINTY_SCORES`.

    Returns a dict of floats:

    * ``auroc``: ``roc_auc_score`` (0.5 = chance, 1 = every OOD input scores above every
      in-distribution input).
    * ``aupr_out``: ``average_precision_score`` with OOD positive.
    * ``aupr_in``: ``average_precision_score`` with the in-distribution set positive and the
      negated score. Both AUPRs are scikit-learn's average precision (a step-wise sum, not a
      trapezoidal area).
    * ``fpr95``: false-positive rate (fraction of in-distribution inputs flagged) at the first
      threshold, scanning from the highest score down, whose true-positive rate reaches 0.95.
      Taken from ``roc_curve(..., drop_intermediate=False)`` without interpolation, so it is the
      FPR of an achievable operating point; dropping intermediate points could skip that point.
    """
    inside = _validate_scores(score_in, "score_in")
    outside = _validate_scores(score_out, "score_out")
    is_ood = np.concatenate([np.zeros(inside.size, dtype=int), np.ones(outside.size, dtype=int)])
    scores = np.concatenate([inside, outside])
    false_positive_rate, true_positive_rate, _ = roc_curve(is_ood, scores, drop_intermediate=False)
    first_reaching = int(np.argmax(true_positive_rate >= _TPR_LEVEL))
    return {
        "auroc": float(roc_auc_score(is_ood, scores)),
        "aupr_in": float(average_precision_score(1 - is_ood, -scores)),
        "aupr_out": float(average_precision_score(is_ood, scores)),
        "fpr95": float(false_positive_rate[first_reaching]),
    }


def _resample_counts(n: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each of ``n`` items is drawn in each of ``n_resamples`` bootstrap resamples."""
    draws = rng.integers(0, n, size=(n_resamples, n)) + n * np.arange(n_resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=n_resamples * n).reshape(n_resamples, n)


def _weighted_aurocs(inside: np.ndarray, outside: np.ndarray, count_in: np.ndarray,
                     count_out: np.ndarray) -> np.ndarray:
    """AUROC (ties count one half) of every resample given by the rows of the draw counts."""
    scores = np.concatenate([inside, outside])
    order = np.argsort(scores, kind="stable")
    ranked = scores[order]
    last_of_tie = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))
    zeros_in = np.zeros((count_in.shape[0], outside.size))
    zeros_out = np.zeros((count_out.shape[0], inside.size))

    def per_tie(counts: np.ndarray) -> np.ndarray:
        cumulative = np.cumsum(counts[:, order], axis=1)[:, last_of_tie]
        return np.diff(cumulative, axis=1, prepend=0.0)

    in_tie = per_tie(np.concatenate([count_in, zeros_in], axis=1))
    out_tie = per_tie(np.concatenate([zeros_out, count_out], axis=1))
    in_below = np.cumsum(in_tie, axis=1) - in_tie
    return (out_tie * (in_below + 0.5 * in_tie)).sum(axis=1) / (inside.size * outside.size)


def bootstrap_aurocs(score_in, score_out, *, n_resamples: int = 1000, seed: int = 0,
                     paired_with: tuple | None = None) -> np.ndarray:
    """AUROCs (:func:`ood_metrics`' convention) of stratified bootstrap resamples.

    The in-distribution and the outlier scores are resampled separately, each with replacement
    to its own size. ``paired_with=(score_in_b, score_out_b)``, scores of a second method on the
    same inputs, returns the differences AUROC(a) - AUROC(b) of the same resamples: the
    paired bootstrap of comparing two methods. Written here because ``scipy.stats.bootstrap``
    re-ranks every resample (about 15 s for 1,000 resamples of 2 x 10,000 scores on this CPU);
    a resample as draw counts over one sort is the same statistic, 1,000 resamples in about a
    second.
    """
    inside = _validate_scores(score_in, "score_in")
    outside = _validate_scores(score_out, "score_out")
    n_resamples = check_int("n_resamples", n_resamples, minimum=1)
    rng = np.random.default_rng(check_int("seed", seed, minimum=0))
    if paired_with is not None:
        if len(paired_with) != 2:
            raise ValueError("paired_with must be (score_in_b, score_out_b)")
        inside_b = _validate_scores(paired_with[0], "paired_with[0] (score_in_b)")
        outside_b = _validate_scores(paired_with[1], "paired_with[1] (score_out_b)")
        if inside_b.size != inside.size or outside_b.size != outside.size:
            raise ValueError(
                f"paired scores must score the same inputs: score_in/score_out have "
                f"{inside.size}/{outside.size}, paired_with {inside_b.size}/{outside_b.size}")
    values = []
    for start in range(0, n_resamples, 100):  # 100 resamples at a time bound the memory
        size = min(100, n_resamples - start)
        count_in = _resample_counts(inside.size, size, rng)
        count_out = _resample_counts(outside.size, size, rng)
        value = _weighted_aurocs(inside, outside, count_in, count_out)
        if paired_with is not None:
            value = value - _weighted_aurocs(inside_b, outside_b, count_in, count_out)
        values.append(value)
    return np.concatenate(values)


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    confidence = check_real("confidence", confidence, minimum=0.0, maximum=1.0,
                            exclusive_minimum=True, exclusive_maximum=True)
    tail = 50.0 * (1.0 - confidence)
    low, high = np.percentile(values, [tail, 100.0 - tail])
    return float(low), float(high)


def auroc_interval(score_in, score_out, *, confidence: float = 0.95, n_resamples: int = 1000,
                   seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the AUROC from :func:`bootstrap_aurocs` (stratified resamples)."""
    return _percentile_interval(bootstrap_aurocs(score_in, score_out, n_resamples=n_resamples,
                                                 seed=seed), confidence)


def auroc_difference_interval(scores_a: tuple, scores_b: tuple, *, confidence: float = 0.95,
                              n_resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of AUROC(a) - AUROC(b), two methods' ``(score_in, score_out)`` on
    the same inputs, from the paired bootstrap of :func:`bootstrap_aurocs`."""
    if len(scores_a) != 2:
        raise ValueError("scores_a must be (score_in, score_out)")
    differences = bootstrap_aurocs(*scores_a, n_resamples=n_resamples, seed=seed,
                                   paired_with=scores_b)
    return _percentile_interval(differences, confidence)


def proportion_interval(successes: int, trials: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (``scipy.stats.binomtest``)."""
    trials = check_int("trials", trials, minimum=1)
    successes = check_int("successes", successes, minimum=0, maximum=trials)
    confidence = check_real("confidence", confidence, minimum=0.0, maximum=1.0,
                            exclusive_minimum=True, exclusive_maximum=True)
    interval = stats.binomtest(successes, trials).proportion_ci(confidence_level=confidence,
                                                                method="wilson")
    return float(interval.low), float(interval.high)


def ood_metrics_from_probs(probs_in, probs_out, score: str = "entropy") -> dict[str, float]:
    """:func:`ood_metrics` of the named score of :data:`UNCERTAINTY_SCORES` on two prediction sets.

    ``probs_in`` and ``probs_out`` are ``[S, B_in, C]`` and ``[S', B_out, C]``.
    """
    if score not in UNCERTAINTY_SCORES:
        raise ValueError(f"score must be one of {sorted(UNCERTAINTY_SCORES)}; got {score!r}")
    tensor_in, _ = _validate_probs(probs_in, "probs_in")
    tensor_out, _ = _validate_probs(probs_out, "probs_out")
    if tensor_in.shape[2] != tensor_out.shape[2]:
        raise ValueError(
            f"probs_in and probs_out must have the same number of classes C; "
            f"got {tensor_in.shape[2]} and {tensor_out.shape[2]}"
        )
    score_function = UNCERTAINTY_SCORES[score]
    return ood_metrics(score_function(tensor_in), score_function(tensor_out))


# ---------------------------------------------------------------------------------------------
# Entropy CDF (Bayes by Hypernet, HyperGAN)
# ---------------------------------------------------------------------------------------------


def entropy_auc(probs) -> float:
    """Bayes by Hypernet's "AUC": area under the empirical CDF of the predictive entropy.

    NOT a ROC AUC. The empirical CDF ``F`` of the per-input predictive entropies ``h_i`` is
    integrated over ``[0, log C]`` and divided by ``log C``, so the value lies in [0, 1]: 1 when
    every prediction is one-hot (all entropies 0), 0 when every prediction is uniform. High is good
    on in-distribution data, low is good on outliers. For a step-function ECDF the integral is
    exact in closed form, ``int_0^{log C} F = mean_i (log C - h_i)``, hence
    ``1 - mean(h) / log C``; written by hand since no library integrates an ECDF.
    """
    tensor, _ = _validate_probs(probs)
    max_entropy = math.log(tensor.shape[2])
    entropies = _predictive_entropy(tensor).clamp(0.0, max_entropy)
    return float(1.0 - entropies.mean() / max_entropy)


def entropy_ecdf(probs, n_points: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Empirical CDF of the predictive entropy on a grid, for HyperGAN-style plots.

    Returns ``(grid, cdf)``, two float64 tensors ``[n_points]``: ``grid`` is evenly spaced on
    ``[0, log C]`` and ``cdf[k]`` is the fraction of inputs with entropy ``<= grid[k]``
    (``scipy.stats.ecdf``).
    """
    tensor, _ = _validate_probs(probs)
    n_points = check_int("n_points", n_points, minimum=2)
    grid = torch.linspace(0.0, math.log(tensor.shape[2]), n_points, dtype=torch.float64)
    entropies = _predictive_entropy(tensor).numpy()
    cdf = stats.ecdf(entropies).cdf.evaluate(grid.numpy())
    return grid, torch.as_tensor(cdf, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# Diversity of the sampled networks
# ---------------------------------------------------------------------------------------------


def weight_norm_diversity_by_tensor(params: Mapping[str, torch.Tensor]) -> pd.Series:
    """HyperGAN's diversity per weight tensor: std / mean of the L2 norms of the S samples.

    ``params`` maps names to tensors ``[S, ...]`` (one weight tensor per layer, sample dimension
    first, the same S for all). For each tensor the L2 (Frobenius) norm of every sample is taken;
    the value is their standard deviation over the mean. The standard deviation is the
    population one (ddof = 0). Needs S >= 2. Returns a float Series indexed by name. Written by
    hand (a few tensor operations no library packages).
    """
    if not isinstance(params, Mapping) or len(params) == 0:
        raise ValueError("params must be a non-empty mapping from names to tensors [S, ...]")
    ratios = {}
    n_samples = None
    for name, value in params.items():
        label = f"params[{name!r}]"
        tensor = _real_tensor(value, label)
        if tensor.ndim < 1 or tensor.shape[0] < 2:
            raise ValueError(
                f"{label} must have a leading sample dimension S >= 2; got shape {tuple(tensor.shape)}"
            )
        if n_samples is not None and tensor.shape[0] != n_samples:
            raise ValueError(
                f"all params must share the sample dimension S = {n_samples}; "
                f"{label} has shape {tuple(tensor.shape)}"
            )
        n_samples = tensor.shape[0]
        if tensor[0].numel() == 0:
            raise ValueError(f"{label} is empty (shape {tuple(tensor.shape)})")
        _require_finite(tensor, label)
        norms = tensor.to(torch.float64).reshape(n_samples, -1).norm(dim=1)
        mean_norm = float(norms.mean())
        if mean_norm == 0.0:
            raise ValueError(f"{label} is zero in every sample; std / mean of its norms is undefined")
        ratios[name] = float(norms.std(correction=0)) / mean_norm
    return pd.Series(ratios, dtype=float, name="norm_std_over_mean")


def weight_norm_diversity(params: Mapping[str, torch.Tensor]) -> float:
    """Mean over weight tensors of :func:`weight_norm_diversity_by_tensor` (0 for identical samples)."""
    return float(weight_norm_diversity_by_tensor(params).mean())


def pairwise_disagreement(probs) -> float:
    """Mean over pairs of sampled networks of the fraction of inputs where their argmax differ.

    Averages over all ``S (S - 1) / 2`` unordered pairs; needs S >= 2. Computed from per-input
    class counts ``n_c`` (agreeing pairs are ``sum_c n_c (n_c - 1) / 2``) instead of looping over
    pairs. Written by hand; no library provides it.
    """
    tensor, _ = _validate_probs(probs)
    n_samples, _, n_classes = tensor.shape
    if n_samples < 2:
        raise ValueError(f"probs needs S >= 2 samples to compare pairs; got S = {n_samples}")
    predictions = tensor.argmax(-1)  # [S, B]
    counts = torch.nn.functional.one_hot(predictions, n_classes).sum(0).to(torch.float64)  # [B, C]
    agreeing_fraction = (counts * (counts - 1)).sum(-1) / (n_samples * (n_samples - 1))
    return float((1.0 - agreeing_fraction).mean())


def weight_correlations(samples, n_pairs: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Bayesian Hypernetworks' check: Pearson correlations between random pairs of scalar weights.

    ``samples`` is ``[S, P]``: S samples of the P scalar weights (flattened). ``n_pairs`` pairs of
    distinct indices are drawn uniformly with replacement by ``numpy.random.default_rng(seed)``;
    each gets ``scipy.stats.pearsonr`` across the S samples. Returns a DataFrame with columns
    ``first``, ``second`` (weight indices), ``r`` and ``p_value`` (two-sided, null of no
    correlation). Needs S >= 3 and P >= 2; a weight that is constant across samples has no
    correlation and raises.
    """
    tensor = _real_tensor(samples, "samples")
    if tensor.ndim != 2:
        raise ValueError(f"samples must have shape [S, P] (samples, weights); got shape {tuple(tensor.shape)}")
    n_samples, n_weights = tensor.shape
    if n_samples < 3 or n_weights < 2:
        raise ValueError(f"samples needs S >= 3 samples of P >= 2 weights; got shape {tuple(tensor.shape)}")
    _require_finite(tensor, "samples")
    n_pairs = check_int("n_pairs", n_pairs, minimum=1)
    seed = check_int("seed", seed, minimum=0)
    values = tensor.to(torch.float64).numpy()
    rng = np.random.default_rng(seed)
    first = rng.integers(n_weights, size=n_pairs)
    second = rng.integers(n_weights - 1, size=n_pairs)
    second = second + (second >= first)  # skip the first index so the pair is distinct
    constant = np.ptp(values, axis=0) == 0
    used_constant = np.flatnonzero(constant[first] | constant[second])
    if used_constant.size:
        pair = used_constant[0]
        index = first[pair] if constant[first[pair]] else second[pair]
        raise ValueError(f"samples[:, {index}] is constant across the S samples; its correlation is undefined")
    results = [stats.pearsonr(values[:, i], values[:, j]) for i, j in zip(first, second)]
    return pd.DataFrame(
        {
            "first": first,
            "second": second,
            "r": [float(result.statistic) for result in results],
            "p_value": [float(result.pvalue) for result in results],
        }
    )


# ---------------------------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------------------------


def _mean_and_std(samples: torch.Tensor, noise_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    variance = samples.var(dim=0, correction=0) + noise_std**2
    return samples.mean(0), variance.sqrt()


def predictive_mean_std(samples, noise_std: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictive mean and standard deviation per input (e.g. along a 1-D grid), each ``[B]``.

    ``std = sqrt(var_s + noise_std**2)`` with the population variance over the S samples
    (ddof = 0): the variance of the predictive that mixes the sampled functions with Gaussian
    observation noise.
    """
    tensor, dtype = _validate_regression_samples(samples)
    mean, std = _mean_and_std(tensor, _validate_noise_std(noise_std))
    return mean.to(dtype), std.to(dtype)


def std_inside_outside(samples, inside) -> tuple[float, float]:
    """Mean predictive std of sampled functions over the points inside and outside a region.

    ``samples`` is ``[S, G]`` (S functions on G points), ``inside`` a bool mask ``[G]`` of the
    points inside (e.g. :meth:`hypernets.data.ToyRegression.inside` of the grid). The std is
    the spread of the samples alone (:func:`predictive_mean_std` without noise). Both parts
    must hold points.
    """
    _, std = predictive_mean_std(samples)
    mask = torch.as_tensor(inside).reshape(-1)
    if mask.dtype != torch.bool or mask.shape != std.shape:
        raise ValueError(f"inside must be a bool mask of the {std.shape[0]} points, got "
                         f"{mask.dtype} of shape {tuple(mask.shape)}")
    if mask.all() or not mask.any():
        raise ValueError("inside must mark some points inside and some outside the region")
    return float(std[mask].mean()), float(std[~mask].mean())


def rmse(samples, targets) -> float:
    """Root mean squared error of the predictive mean (scikit-learn's ``root_mean_squared_error``)."""
    tensor, target = _validate_regression(samples, targets)
    return float(root_mean_squared_error(target.numpy(), tensor.mean(0).numpy()))


def gaussian_nll(samples, targets, noise_std: float) -> float:
    """Mean negative log-likelihood of the targets under a Gaussian predictive (nats).

    The predictive of each input is ``N(mean_s f_s, var_s + noise_std**2)`` (population sample
    variance, see :func:`predictive_mean_std`), i.e. the sample mixture matched by its first two
    moments. Log densities come from ``torch.distributions.Normal``. Raises if the predictive
    variance is 0 for some input (identical samples with ``noise_std = 0``).
    """
    tensor, target = _validate_regression(samples, targets)
    mean, std = _mean_and_std(tensor, _validate_noise_std(noise_std))
    if not (std > 0).all():
        raise ValueError(
            "the predictive variance is 0 for some inputs (identical samples and noise_std = 0); "
            "pass noise_std > 0"
        )
    return float(-torch.distributions.Normal(mean, std).log_prob(target).mean())


def interval_coverage(
    samples, targets, levels: Sequence[float] = (0.5, 0.9, 0.95), noise_std: float = 0.0
) -> dict[float, float]:
    """Empirical coverage of central predictive intervals: ``{level: fraction of targets inside}``.

    The interval at level ``l`` is ``mean +- z * std`` with ``z`` the ``(1 + l) / 2`` standard
    normal quantile and the Gaussian predictive of :func:`gaussian_nll` (so ``noise_std`` widens
    it). A calibrated predictive covers about ``l`` of the targets. Bounds count as inside.
    """
    tensor, target = _validate_regression(samples, targets)
    mean, std = _mean_and_std(tensor, _validate_noise_std(noise_std))
    if isinstance(levels, (str, bytes)) or not isinstance(levels, (Sequence, np.ndarray)) or len(levels) == 0:
        raise ValueError(f"levels must be a non-empty sequence of numbers in (0, 1); got {levels!r}")
    coverage = {}
    for level in levels:
        level = check_real("every entry of levels", level, minimum=0.0, maximum=1.0,
                           exclusive_minimum=True, exclusive_maximum=True)
        z = float(stats.norm.ppf((1 + level) / 2))
        inside = (target - mean).abs() <= z * std
        coverage[float(level)] = float(inside.to(torch.float64).mean())
    return coverage
