"""Tests of hypernets.metrics: hand-computed cases, agreement with scikit-learn/scipy, bad input."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    log_loss,
    roc_auc_score,
)

from hypernets import metrics


def random_probs(n_samples=5, batch=40, n_classes=4, seed=0, concentration=1.0, dtype=torch.float32):
    """Dirichlet-distributed probabilities [S, B, C]."""
    draws = np.random.default_rng(seed).dirichlet(np.full(n_classes, concentration), size=(n_samples, batch))
    return torch.from_numpy(draws).to(dtype)


def random_labels(batch=40, n_classes=4, seed=0):
    return torch.randint(0, n_classes, (batch,), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Logits and uncertainty scores
# ---------------------------------------------------------------------------------------------


def test_probs_from_logits_is_softmax_over_classes():
    logits = torch.tensor([[[0.0, math.log(3.0)], [2.0, 2.0]]])
    probs = metrics.probs_from_logits(logits)
    torch.testing.assert_close(probs, torch.tensor([[[0.25, 0.75], [0.5, 0.5]]]))


def test_uniform_predictions_have_maximal_entropy_and_no_mutual_information():
    n_classes = 5
    probs = torch.full((3, 7, n_classes), 1.0 / n_classes)
    expected = torch.full((7,), math.log(n_classes))
    torch.testing.assert_close(metrics.predictive_entropy(probs), expected)
    torch.testing.assert_close(metrics.expected_entropy(probs), expected)
    torch.testing.assert_close(metrics.mutual_information(probs), torch.zeros(7))
    torch.testing.assert_close(metrics.probability_variance(probs), torch.zeros(7))
    torch.testing.assert_close(metrics.max_probability(probs), torch.full((7,), 0.2))
    torch.testing.assert_close(metrics.one_minus_max_probability(probs), torch.full((7,), 0.8))


def test_identical_samples_have_no_epistemic_uncertainty_or_diversity():
    probs = random_probs(n_samples=1).expand(6, -1, -1)
    assert torch.all(metrics.mutual_information(probs) >= 0)
    torch.testing.assert_close(metrics.mutual_information(probs), torch.zeros(40), atol=1e-6, rtol=0)
    torch.testing.assert_close(metrics.probability_variance(probs), torch.zeros(40))
    assert metrics.pairwise_disagreement(probs) == 0.0
    weights = torch.randn(1, 3, 2).expand(6, -1, -1)
    assert metrics.weight_norm_diversity({"layer": weights}) == pytest.approx(0.0, abs=1e-12)


def test_disagreeing_one_hot_samples_by_hand():
    # Two nets, certain but opposite: predictive [0.5, 0.5], expected entropy 0, MI = log 2.
    probs = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    torch.testing.assert_close(metrics.predictive_entropy(probs), torch.tensor([math.log(2)]))
    torch.testing.assert_close(metrics.expected_entropy(probs), torch.tensor([0.0]))
    torch.testing.assert_close(metrics.mutual_information(probs), torch.tensor([math.log(2)]))
    # Population variance of {0, 1} is 0.25 for both classes.
    torch.testing.assert_close(metrics.probability_variance(probs), torch.tensor([0.25]))
    assert metrics.pairwise_disagreement(probs) == 1.0


def test_entropy_decomposition_properties():
    probs = random_probs(n_samples=8, batch=200, n_classes=6, seed=1, concentration=0.5, dtype=torch.float64)
    total = metrics.predictive_entropy(probs)
    aleatoric = metrics.expected_entropy(probs)
    information = metrics.mutual_information(probs)
    torch.testing.assert_close(aleatoric + information, total)
    assert torch.all(information <= total + 1e-12)
    assert torch.all((total >= 0) & (total <= math.log(6) + 1e-12))


def test_uncertainty_scores_point_towards_uncertainty():
    confident = torch.tensor([[[0.98, 0.01, 0.01]], [[0.97, 0.02, 0.01]]])
    uncertain = torch.tensor([[[0.4, 0.3, 0.3]], [[0.1, 0.3, 0.6]]])
    for name, score in metrics.UNCERTAINTY_SCORES.items():
        assert score(uncertain).item() > score(confident).item(), name


def test_per_input_scores_keep_float32_and_accept_numpy():
    probs = random_probs()
    assert metrics.predictive_entropy(probs).dtype == torch.float32
    from_numpy = metrics.mutual_information(probs.double().numpy())
    assert from_numpy.dtype == torch.float64
    torch.testing.assert_close(from_numpy.float(), metrics.mutual_information(probs))


# ---------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------


def test_classification_metrics_by_hand():
    # Mean predictive: input 0 -> [0.7, 0.2, 0.1] (label 0), input 1 -> [0.5, 0.4, 0.1] (label 1).
    probs = torch.tensor(
        [
            [[0.8, 0.1, 0.1], [0.6, 0.3, 0.1]],
            [[0.6, 0.3, 0.1], [0.4, 0.5, 0.1]],
        ]
    )
    labels = torch.tensor([0, 1])
    assert metrics.accuracy(probs, labels) == pytest.approx(0.5)
    assert metrics.nll(probs, labels) == pytest.approx(-(math.log(0.7) + math.log(0.4)) / 2)
    brier_0 = 0.3**2 + 0.2**2 + 0.1**2
    brier_1 = 0.5**2 + 0.6**2 + 0.1**2
    assert metrics.brier(probs, labels) == pytest.approx((brier_0 + brier_1) / 2)
    summary = metrics.classification_metrics(probs, labels)
    assert summary["accuracy"] == pytest.approx(0.5)
    assert set(summary) == {"accuracy", "nll", "brier", "ece"}


def test_single_sample_agrees_with_scikit_learn():
    probs = random_probs(n_samples=1, batch=100, n_classes=4, seed=2, dtype=torch.float64)
    labels = random_labels(batch=100, n_classes=4, seed=2)
    single, y = probs[0].numpy(), labels.numpy()
    assert metrics.accuracy(probs, labels) == pytest.approx(accuracy_score(y, single.argmax(1)))
    assert metrics.nll(probs, labels) == pytest.approx(log_loss(y, single, labels=[0, 1, 2, 3]))
    assert metrics.brier(probs, labels) == pytest.approx(
        brier_score_loss(y, single, labels=[0, 1, 2, 3], scale_by_half=False)
    )


def test_nll_of_zero_probability_is_large_but_finite():
    probs = torch.tensor([[[1.0, 0.0]]])
    value = metrics.nll(probs, torch.tensor([1]))
    assert value == pytest.approx(-math.log(np.finfo(np.float64).eps))


def test_two_bin_ece_by_hand():
    # Bins (0, 0.5] and (0.5, 1]. Top-label confidences 0.4 (wrong), 0.45 (right), 0.9 (right),
    # 0.7 (wrong). Low bin: conf 0.425, acc 0.5; high bin: conf 0.8, acc 0.5.
    probs = torch.tensor(
        [
            [
                [0.4, 0.2, 0.2, 0.2],
                [0.45, 0.25, 0.15, 0.15],
                [0.9, 0.05, 0.03, 0.02],
                [0.1, 0.7, 0.1, 0.1],
            ]
        ]
    )
    labels = torch.tensor([1, 0, 0, 0])
    expected = 0.5 * abs(0.5 - 0.425) + 0.5 * abs(0.5 - 0.8)
    assert metrics.ece(probs, labels, n_bins=2) == pytest.approx(expected)
    diagram = metrics.reliability_diagram(probs, labels, n_bins=2)
    assert list(diagram.columns) == ["bin_lower", "bin_upper", "count", "confidence", "accuracy"]
    np.testing.assert_allclose(diagram["bin_lower"], [0.0, 0.5])
    np.testing.assert_allclose(diagram["bin_upper"], [0.5, 1.0])
    np.testing.assert_array_equal(diagram["count"], [2, 2])
    np.testing.assert_allclose(diagram["confidence"], [0.425, 0.8], rtol=1e-6)
    np.testing.assert_allclose(diagram["accuracy"], [0.5, 0.5])


def test_ece_matches_a_loop_over_fifteen_bins_and_marks_empty_bins():
    probs = random_probs(n_samples=3, batch=300, n_classes=3, seed=3, concentration=0.3, dtype=torch.float64)
    labels = random_labels(batch=300, n_classes=3, seed=3)
    confidence, prediction = probs.mean(0).max(-1)
    correct = (prediction == labels).double()
    expected = 0.0
    for k in range(15):
        lower, upper = k / 15, (k + 1) / 15
        in_bin = (confidence > lower) & (confidence <= upper)
        if in_bin.any():
            expected += in_bin.double().mean() * abs(correct[in_bin].mean() - confidence[in_bin].mean())
    assert metrics.ece(probs, labels) == pytest.approx(float(expected))
    diagram = metrics.reliability_diagram(probs, labels)
    assert len(diagram) == 15 and diagram["count"].sum() == 300
    # Top-label confidence of 3 classes is at least 1/3, so the first bins are empty.
    assert diagram.loc[0, "count"] == 0 and np.isnan(diagram.loc[0, "accuracy"])


def test_confident_and_correct_predictions_are_calibrated():
    probs = torch.nn.functional.one_hot(torch.tensor([2, 0, 1]), 3).float()[None]
    assert metrics.ece(probs, torch.tensor([2, 0, 1])) == 0.0
    assert metrics.brier(probs, torch.tensor([2, 0, 1])) == 0.0


# ---------------------------------------------------------------------------------------------
# Out-of-distribution detection
# ---------------------------------------------------------------------------------------------


def test_perfectly_separated_scores():
    result = metrics.ood_metrics(torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.7, 0.8]))
    assert result == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}
    reversed_result = metrics.ood_metrics(torch.tensor([0.7, 0.8]), torch.tensor([0.1, 0.2, 0.3]))
    assert reversed_result["auroc"] == 0.0
    assert reversed_result["fpr95"] == 1.0


def test_ood_metrics_by_hand():
    # Ranking (high to low): 0.8 out, 0.4 in, 0.35 out, 0.1 in.
    result = metrics.ood_metrics(np.array([0.1, 0.4]), np.array([0.35, 0.8]))
    assert result["auroc"] == pytest.approx(3 / 4)
    assert result["aupr_out"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # In-distribution positive, ranked by -score: 0.1 in, 0.35 out, 0.4 in, 0.8 out.
    assert result["aupr_in"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # Both OOD inputs are caught only at threshold 0.35, which also flags the in-input 0.4.
    assert result["fpr95"] == pytest.approx(0.5)


def test_fpr95_takes_the_first_threshold_reaching_95_percent_tpr():
    score_in = torch.arange(10.0)
    score_out = torch.cat([torch.arange(100.0, 118.0), torch.tensor([5.5, -1.0])])
    # 19 of 20 OOD inputs (TPR 0.95) need threshold 5.5, which flags in-scores 6..9.
    assert metrics.ood_metrics(score_in, score_out)["fpr95"] == pytest.approx(0.4)


def test_ood_metrics_agree_with_scikit_learn():
    generator = torch.Generator().manual_seed(4)
    score_in = torch.randn(300, generator=generator)
    score_out = torch.randn(200, generator=generator) + 1.0
    result = metrics.ood_metrics(score_in, score_out)
    y = np.r_[np.zeros(300), np.ones(200)]
    s = np.r_[score_in.numpy(), score_out.numpy()]
    assert result["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert result["aupr_out"] == pytest.approx(average_precision_score(y, s))
    assert result["aupr_in"] == pytest.approx(average_precision_score(1 - y, -s))
    threshold = np.sort(score_out.numpy())[::-1][math.ceil(0.95 * 200) - 1]
    assert result["fpr95"] == pytest.approx(np.mean(score_in.numpy() >= threshold))
    assert 0.5 < result["auroc"] < 1.0


def test_ood_metrics_from_probs_uses_the_named_score():
    confident = torch.nn.functional.one_hot(torch.arange(6) % 3, 3).float()[None].expand(2, -1, -1)
    confident = 0.9 * confident + 0.1 / 3
    uniform = torch.full((2, 4, 3), 1 / 3)
    for score in ("entropy", "max_prob", "expected_entropy"):
        assert metrics.ood_metrics_from_probs(confident, uniform, score=score)["auroc"] == 1.0
    with pytest.raises(ValueError, match="score must be one of"):
        metrics.ood_metrics_from_probs(confident, uniform, score="margin")
    with pytest.raises(ValueError, match="same number of classes"):
        metrics.ood_metrics_from_probs(confident, torch.full((2, 4, 2), 0.5))


# ---------------------------------------------------------------------------------------------
# Entropy CDF
# ---------------------------------------------------------------------------------------------


def test_entropy_auc_extremes_and_ordering():
    one_hot = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 1]), 3).float()[None]
    uniform = torch.full((1, 4, 3), 1 / 3)
    assert metrics.entropy_auc(one_hot) == pytest.approx(1.0)
    assert metrics.entropy_auc(uniform) == pytest.approx(0.0, abs=1e-7)
    assert metrics.entropy_auc(random_probs(concentration=0.2)) > metrics.entropy_auc(
        random_probs(concentration=5.0)
    )


def test_entropy_auc_is_the_area_under_the_ecdf():
    probs = random_probs(n_samples=4, batch=60, n_classes=5, seed=5)
    grid, cdf = metrics.entropy_ecdf(probs, n_points=20001)
    area = torch.trapezoid(cdf, grid) / math.log(5)
    assert metrics.entropy_auc(probs) == pytest.approx(float(area), abs=1e-3)


def test_entropy_ecdf_by_hand():
    # Entropies 0 (one-hot) and log 2 (uniform over two classes) out of C = 4.
    probs = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.5, 0.5, 0.0, 0.0]]])
    grid, cdf = metrics.entropy_ecdf(probs, n_points=3)
    torch.testing.assert_close(grid, torch.tensor([0.0, math.log(4) / 2, math.log(4)], dtype=torch.float64))
    torch.testing.assert_close(cdf, torch.tensor([0.5, 1.0, 1.0], dtype=torch.float64))


# ---------------------------------------------------------------------------------------------
# Diversity
# ---------------------------------------------------------------------------------------------


def test_weight_norm_diversity_by_hand():
    # Layer a: norms 3 and 5 -> std 1 (ddof 0) / mean 4. Layer b: norms 1 and 1 -> 0.
    params = {
        "a": torch.tensor([[3.0, 0.0], [0.0, 5.0]]),
        "b": torch.tensor([[[1.0]], [[-1.0]]]),
    }
    per_tensor = metrics.weight_norm_diversity_by_tensor(params)
    pd.testing.assert_series_equal(
        per_tensor, pd.Series({"a": 0.25, "b": 0.0}, name="norm_std_over_mean"), check_exact=False
    )
    assert metrics.weight_norm_diversity(params) == pytest.approx(0.125)


def test_pairwise_disagreement_matches_brute_force():
    probs = random_probs(n_samples=6, batch=50, n_classes=3, seed=6)
    predictions = probs.argmax(-1)
    pairs = list(itertools.combinations(range(6), 2))
    expected = np.mean([(predictions[i] != predictions[j]).float().mean().item() for i, j in pairs])
    assert metrics.pairwise_disagreement(probs) == pytest.approx(expected)


def test_pairwise_disagreement_by_hand():
    # Three nets on one input predict classes 0, 0, 1: pairs (0,1) agree, (0,2) and (1,2) differ.
    probs = torch.nn.functional.one_hot(torch.tensor([[0], [0], [1]]), 2).float()
    assert metrics.pairwise_disagreement(probs) == pytest.approx(2 / 3)


def test_weight_correlations_known_correlation():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    y = torch.tensor([2.0, 1.0, 4.0, 3.0, 5.0])
    table = metrics.weight_correlations(torch.stack([x, y], dim=1), n_pairs=3, seed=0)
    assert list(table.columns) == ["first", "second", "r", "p_value"]
    assert set(map(frozenset, zip(table["first"], table["second"]))) == {frozenset({0, 1})}
    np.testing.assert_allclose(table["r"], 0.8)
    # Two-sided t test with n - 2 = 3 degrees of freedom.
    t = 0.8 * math.sqrt(3) / math.sqrt(1 - 0.8**2)
    np.testing.assert_allclose(table["p_value"], 2 * stats.t.sf(t, 3), rtol=1e-10)
    np.testing.assert_allclose(table["p_value"], stats.pearsonr(x.double().numpy(), y.double().numpy()).pvalue)


def test_weight_correlations_pairs_are_distinct_and_seeded():
    samples = torch.randn(20, 30, generator=torch.Generator().manual_seed(7))
    table = metrics.weight_correlations(samples, n_pairs=200, seed=3)
    assert len(table) == 200
    assert (table["first"] != table["second"]).all()
    assert table["first"].between(0, 29).all() and table["second"].between(0, 29).all()
    pd.testing.assert_frame_equal(table, metrics.weight_correlations(samples, n_pairs=200, seed=3))
    assert not table.equals(metrics.weight_correlations(samples, n_pairs=200, seed=4))
    first, second = int(table["first"].iloc[0]), int(table["second"].iloc[0])
    expected = stats.pearsonr(samples[:, first].double().numpy(), samples[:, second].double().numpy())
    assert table["r"].iloc[0] == pytest.approx(expected.statistic)
    assert table["p_value"].iloc[0] == pytest.approx(expected.pvalue)


# ---------------------------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------------------------


def test_regression_metrics_by_hand():
    # Two samples per input: means [0, 2], population stds [1, 0].
    samples = torch.tensor([[-1.0, 2.0], [1.0, 2.0]])
    targets = torch.tensor([1.0, 5.0])
    mean, std = metrics.predictive_mean_std(samples)
    torch.testing.assert_close(mean, torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(std, torch.tensor([1.0, 0.0]))
    _, noisy_std = metrics.predictive_mean_std(samples, noise_std=1.0)
    torch.testing.assert_close(noisy_std, torch.tensor([math.sqrt(2.0), 1.0]))
    assert metrics.rmse(samples, targets) == pytest.approx(math.sqrt((1 + 9) / 2))
    # Predictive N(0, 2) at 1 and N(2, 1) at 5.
    nll_0 = 0.5 * math.log(2 * math.pi * 2) + 1 / (2 * 2)
    nll_1 = 0.5 * math.log(2 * math.pi * 1) + 9 / 2
    assert metrics.gaussian_nll(samples, targets, noise_std=1.0) == pytest.approx((nll_0 + nll_1) / 2)


def test_regression_accepts_trailing_singleton_dimension():
    samples = torch.randn(10, 8, generator=torch.Generator().manual_seed(8))
    targets = torch.randn(8, generator=torch.Generator().manual_seed(9))
    assert metrics.rmse(samples[..., None], targets[:, None]) == metrics.rmse(samples, targets)
    assert metrics.gaussian_nll(samples[..., None], targets, 0.1) == metrics.gaussian_nll(samples, targets, 0.1)


def test_interval_coverage_by_hand():
    # Predictive N(0, 1) for every input; z(0.5) = 0.674, z(0.95) = 1.96.
    samples = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    targets = torch.tensor([0.5, 1.0, 2.0])
    coverage = metrics.interval_coverage(samples, targets, levels=(0.5, 0.95))
    assert coverage == pytest.approx({0.5: 1 / 3, 0.95: 2 / 3})
    # noise_std = 1 doubles the variance: z(0.95) * sqrt(2) = 2.77 covers all three.
    assert metrics.interval_coverage(samples, targets, levels=[0.95], noise_std=1.0) == {0.95: 1.0}


def test_interval_coverage_is_calibrated_for_gaussian_samples():
    generator = torch.Generator().manual_seed(10)
    samples = torch.randn(400, 2000, generator=generator)
    targets = torch.randn(2000, generator=generator)
    coverage = metrics.interval_coverage(samples, targets)
    for level, value in coverage.items():
        assert value == pytest.approx(level, abs=0.03)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------

GOOD_PROBS = torch.full((2, 3, 4), 0.25)
GOOD_LABELS = torch.tensor([0, 1, 3])
PROBS_AND_LABELS_FUNCTIONS = [metrics.accuracy, metrics.nll, metrics.brier, metrics.ece, metrics.reliability_diagram]
PROBS_FUNCTIONS = [
    *metrics.UNCERTAINTY_SCORES.values(),
    metrics.max_probability,
    metrics.entropy_auc,
    metrics.entropy_ecdf,
    metrics.pairwise_disagreement,
]


def _unnormalised():
    probs = GOOD_PROBS.clone()
    probs[1, 2, 0] = 0.3
    return probs


def _with_nan():
    probs = GOOD_PROBS.clone()
    probs[0, 0, 0] = float("nan")
    return probs


BAD_PROBS = [
    pytest.param(GOOD_PROBS[0], "shape \\[S, B, C\\]", id="2-d"),
    pytest.param(GOOD_PROBS[:, :0], "empty", id="empty-batch"),
    pytest.param(GOOD_PROBS[:0], "empty", id="empty-samples"),
    pytest.param(torch.ones(2, 3, 1), "at least 2 classes", id="one-class"),
    pytest.param(_unnormalised(), "sum to 1", id="not-normalised"),
    pytest.param(torch.full((2, 3, 2), 0.5) + torch.tensor([1.0, -1.0]), "in \\[0, 1\\]", id="logits"),
    pytest.param(_with_nan(), "NaN", id="nan"),
    pytest.param(torch.full((2, 3, 2), float("inf")), "NaN or infinite", id="inf"),
]


@pytest.mark.parametrize("function", PROBS_AND_LABELS_FUNCTIONS + PROBS_FUNCTIONS)
@pytest.mark.parametrize(("probs", "message"), BAD_PROBS)
def test_bad_probs_are_rejected(function, probs, message):
    args = (probs, GOOD_LABELS) if function in PROBS_AND_LABELS_FUNCTIONS else (probs,)
    with pytest.raises(ValueError, match=f"probs.*{message}|probs is {message}"):
        function(*args)


@pytest.mark.parametrize("function", PROBS_AND_LABELS_FUNCTIONS)
def test_bad_labels_are_rejected(function):
    with pytest.raises(ValueError, match=r"labels must have shape \[B\] = \[3\]"):
        function(GOOD_PROBS, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 3\]"):
        function(GOOD_PROBS, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match=r"labels must be class indices"):
        function(GOOD_PROBS, torch.tensor([0, -1, 2]))
    with pytest.raises(TypeError, match="labels must hold integer class indices"):
        function(GOOD_PROBS, torch.tensor([0.0, 1.0, 2.0]))


def test_wrong_types_and_parameters_are_rejected():
    with pytest.raises(TypeError, match="probs must be a torch.Tensor or numpy.ndarray; got list"):
        metrics.predictive_entropy([[[0.5, 0.5]]])
    with pytest.raises(TypeError, match="probs must hold real numbers"):
        metrics.predictive_entropy(np.array([[["a", "b"]]]))
    with pytest.raises(ValueError, match="n_bins must be an integer >= 1"):
        metrics.ece(GOOD_PROBS, GOOD_LABELS, n_bins=0)
    with pytest.raises(ValueError, match="n_points must be an integer >= 2"):
        metrics.entropy_ecdf(GOOD_PROBS, n_points=1)
    with pytest.raises(ValueError, match="logits must have shape"):
        metrics.probs_from_logits(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="logits contains 1 NaN"):
        metrics.probs_from_logits(torch.tensor([[[0.0, float("nan")]]]))
    with pytest.raises(ValueError, match="S >= 2"):
        metrics.pairwise_disagreement(GOOD_PROBS[:1])


@pytest.mark.parametrize(
    ("score_in", "score_out", "message"),
    [
        (torch.tensor([]), torch.tensor([1.0]), "score_in must be a non-empty 1-D"),
        (torch.tensor([1.0]), torch.zeros(2, 2), "score_out must be a non-empty 1-D"),
        (torch.tensor([float("nan")]), torch.tensor([1.0]), "score_in contains 1 NaN"),
    ],
)
def test_bad_ood_scores_are_rejected(score_in, score_out, message):
    with pytest.raises(ValueError, match=message):
        metrics.ood_metrics(score_in, score_out)


def test_bad_diversity_input_is_rejected():
    with pytest.raises(ValueError, match="non-empty mapping"):
        metrics.weight_norm_diversity({})
    with pytest.raises(ValueError, match="share the sample dimension S = 2"):
        metrics.weight_norm_diversity({"a": torch.ones(2, 3), "b": torch.ones(3, 3)})
    with pytest.raises(ValueError, match=r"params\['a'\] must have a leading sample dimension S >= 2"):
        metrics.weight_norm_diversity({"a": torch.ones(1, 3)})
    with pytest.raises(ValueError, match=r"params\['a'\] is zero in every sample"):
        metrics.weight_norm_diversity({"a": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match=r"params\['a'\] contains 1 NaN"):
        metrics.weight_norm_diversity({"a": torch.tensor([[1.0, float("nan")], [1.0, 2.0]])})
    with pytest.raises(ValueError, match=r"samples must have shape \[S, P\]"):
        metrics.weight_correlations(torch.ones(4, 3, 2))
    with pytest.raises(ValueError, match="S >= 3"):
        metrics.weight_correlations(torch.randn(2, 3))
    with pytest.raises(ValueError, match=r"samples\[:, 1\] is constant"):
        metrics.weight_correlations(torch.tensor([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]]), n_pairs=1)


@pytest.mark.parametrize(
    ("samples", "targets", "message"),
    [
        (torch.ones(3, 4), torch.ones(5), r"targets must have shape \[B\] or \[B, 1\] with B = 4"),
        (torch.ones(3, 4, 2), torch.ones(4), r"samples must have shape \[S, B\] or \[S, B, 1\]"),
        (torch.ones(0, 4), torch.ones(4), "samples is empty"),
        (torch.ones(3, 4), torch.tensor([1.0, float("nan"), 1.0, 1.0]), "targets contains 1 NaN"),
        (torch.full((3, 4), float("inf")), torch.ones(4), "samples contains 12 NaN or infinite"),
    ],
)
def test_bad_regression_input_is_rejected(samples, targets, message):
    for function in (metrics.rmse, metrics.interval_coverage):
        with pytest.raises(ValueError, match=message):
            function(samples, targets)
    with pytest.raises(ValueError, match=message):
        metrics.gaussian_nll(samples, targets, noise_std=0.1)


def test_bad_regression_parameters_are_rejected():
    samples, targets = torch.ones(3, 4), torch.ones(4)
    with pytest.raises(ValueError, match="predictive variance is 0"):
        metrics.gaussian_nll(samples, targets, noise_std=0.0)
    with pytest.raises(ValueError, match="noise_std must be a finite number >= 0"):
        metrics.predictive_mean_std(samples, noise_std=-1.0)
    with pytest.raises(ValueError, match=r"every entry of levels must be a finite number in \(0, 1\)"):
        metrics.interval_coverage(samples, targets, levels=(0.5, 1.0))
    with pytest.raises(ValueError, match="non-empty sequence"):
        metrics.interval_coverage(samples, targets, levels=())
