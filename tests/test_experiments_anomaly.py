"""The anomaly-detection chapter on small real subsets: outlier sets, detection tables with
bootstrap intervals, misclassification detection, the claims, the held-out digit, figures."""

import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

from hypernets import evaluation, metrics, runs, targets
from hypernets.data import load_mnist_splits, noise_images
from hypernets.experiments import anomaly

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


@pytest.fixture(scope="module")
def data():
    return load_mnist_splits(n_train=400, n_test=150, seed=0)


@pytest.fixture(scope="module")
def trained(data):
    """MAP, MC dropout and a 3-member ensemble after 4 epochs on 400 images."""
    return runs.train_methods(["map", "mc_dropout", "ensemble"], targets.mnist_mlp(10, hidden=(32,)),
                              data.train.x, data.train.y, epochs=4, batch_size=50, seed=0,
                              options={"ensemble": {"n_members": 3}})


@pytest.fixture(scope="module")
def results(trained, data):
    outliers = {name: d.x[:60] for name, d in anomaly.outlier_sets(data, seed=1).items()}
    return anomaly.anomaly_detection(trained, data.test.x[:60], outliers, y_in=data.test.y[:60],
                                     n_nets=(4, 2), n_points=50, n_resamples=200, seed=5)


def test_noise_images_follow_the_reference_and_the_normalisation(data):
    uniform = noise_images(data.test, "uniform", seed=3)
    gaussian = noise_images(data.test, "gaussian", seed=3)
    assert uniform.x.shape == gaussian.x.shape == data.test.x.shape
    assert uniform.name == "uniform noise" and gaussian.name == "Gaussian noise"
    pixels = data.test.pixel_range.to_pixels(uniform.x)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6 and abs(pixels.mean() - 0.5) < 0.01
    raw = data.test.pixel_range.to_pixels(gaussian.x)  # N(0, 1) pixels, not clipped
    assert abs(raw.mean()) < 0.01 and abs(raw.std() - 1) < 0.01 and raw.min() < -3
    assert torch.equal(uniform.x, noise_images(data.test, "uniform", seed=3).x)
    assert not torch.equal(uniform.x, noise_images(data.test, "uniform", seed=4).x)
    with pytest.raises(ValueError, match="kind \\(of noise\\) must be one of"):
        noise_images(data.test, "salt")


def test_outlier_sets_are_notmnist_and_the_two_noises(data):
    sets = anomaly.outlier_sets(data)
    assert list(sets) == ["notMNIST", "uniform noise", "Gaussian noise"]
    assert all(len(d) == len(data.test) for d in sets.values())


def test_detection_tables(results, trained, data):
    assert results.n_nets == (2, 4) and results.ecdf_outliers == "notMNIST"
    auc = results.entropy_auc
    assert len(auc) == 3 * 2 * 4  # methods x n_nets x (test set and three outlier sets)
    assert list(auc.loc[auc["data"] == "in", "n_nets_used"]) == [1, 1, 2, 4, 2, 3]
    # The curves and AUCs for k nets use the first k of the drawn nets.
    probs = evaluation.predict_probs(trained["mc_dropout"], data.outliers.x[:60], 4, seed=5)
    row = auc.set_index(["method", "n_nets", "data"]).loc[("mc_dropout", 2, "notMNIST")]
    assert row["entropy_auc"] == pytest.approx(metrics.entropy_auc(probs[:2]))
    assert set(results.ecdf["data"]) == {"in", "out"} and len(results.ecdf) == 3 * 2 * 2 * 50
    assert results.ecdf.groupby(["method", "data", "n_nets"])["cdf"].apply(
        lambda cdf: cdf.is_monotonic_increasing and cdf.iloc[-1] == 1.0).all()
    assert math.isclose(results.ecdf["entropy"].max(), math.log(10))

    ood = results.ood
    assert len(ood) == 3 * 3 * 4 and results.outlier_names == ["notMNIST", "uniform noise",
                                                               "Gaussian noise"]
    assert list(ood.columns) == ["method", "label", "outliers", "n_nets_used", "score",
                                 *anomaly.DETECTION_COLUMNS]
    assert ((ood["auroc_low"] <= ood["auroc"]) & (ood["auroc"] <= ood["auroc_high"])).all()
    rows = ood.set_index(["method", "outliers", "score"])
    assert rows.loc[("map", "notMNIST", "bald"), "auroc"] == 0.5  # one net: no disagreement
    assert rows.loc[("map", "notMNIST", "entropy"), "auroc"] > 0.7
    scores_in = metrics.predictive_entropy(evaluation.predict_probs(trained["ensemble"],
                                                                    data.test.x[:60], 4, seed=5))
    scores_out = metrics.predictive_entropy(probs_out := evaluation.predict_probs(
        trained["ensemble"], data.outliers.x[:60], 4, seed=5))
    assert probs_out.shape[0] == 3
    assert rows.loc[("ensemble", "notMNIST", "entropy"), "auroc"] == pytest.approx(
        metrics.ood_metrics(scores_in, scores_out)["auroc"])


def test_misclassification_detection_scores_the_errors(results, trained, data):
    table = results.misclassification
    assert len(table) == 3 * 4
    probs = evaluation.predict_probs(trained["map"], data.test.x[:60], 4, seed=5)
    wrong = probs.mean(0).argmax(-1) != data.test.y[:60]
    row = table[(table["method"] == "map") & (table["score"] == "max_prob")].iloc[0]
    assert row["n_errors"] == int(wrong.sum()) > 0
    assert row["error_pct"] == pytest.approx(100 * wrong.float().mean().item())
    score = metrics.one_minus_max_probability(probs)
    assert row["auroc"] == pytest.approx(metrics.ood_metrics(score[~wrong], score[wrong])["auroc"])
    assert row["auroc"] > 0.6  # a trained net is less sure of its mistakes


def test_misclassification_without_errors_is_nan_not_an_error(trained, data):
    x = data.test.x[:5]
    labels = evaluation.predict_probs(trained["map"], x, 1).mean(0).argmax(-1)
    results = anomaly.anomaly_detection({"map": trained["map"]}, x, {"notMNIST": data.outliers.x[:5]},
                                        y_in=labels, n_nets=(1,), n_resamples=10)
    assert (results.misclassification["n_errors"] == 0).all()
    assert results.misclassification["auroc"].isna().all()


def test_bootstrap_aurocs_are_resampled_aurocs():
    rng = np.random.default_rng(0)
    inside, outside = np.round(rng.normal(size=300), 1), np.round(rng.normal(1, 1, size=200), 1)
    draws = metrics.bootstrap_aurocs(inside, outside, n_resamples=300, seed=1)
    point = metrics.ood_metrics(inside, outside)["auroc"]
    assert draws.shape == (300,) and abs(draws.mean() - point) < 0.01
    low, high = metrics.auroc_interval(inside, outside, n_resamples=300, seed=1)
    assert low < point < high and high - low < 0.15
    # Each resample is the AUROC of the resampled scores (scikit-learn with draw counts as weights).
    from sklearn.metrics import roc_auc_score

    counts_rng = np.random.default_rng(7)
    count_in = metrics._resample_counts(300, 1, counts_rng)
    count_out = metrics._resample_counts(200, 1, counts_rng)
    expected = roc_auc_score(np.r_[np.zeros(300), np.ones(200)], np.r_[inside, outside],
                             sample_weight=np.r_[count_in[0], count_out[0]])
    assert metrics._weighted_aurocs(inside, outside, count_in, count_out)[0] == pytest.approx(expected)
    # Paired: a method against itself differs by exactly 0 in every resample.
    same = metrics.bootstrap_aurocs(inside, outside, n_resamples=50, paired_with=(inside, outside))
    assert (same == 0).all()
    better = metrics.auroc_difference_interval((inside, outside + 1), (inside, outside))
    assert better[0] > 0
    with pytest.raises(ValueError, match="same inputs"):
        metrics.bootstrap_aurocs(inside, outside, paired_with=(inside[:10], outside))
    with pytest.raises(ValueError, match="confidence"):
        metrics.auroc_interval(inside, outside, confidence=1.0)


def test_detection_claims_are_paired_bootstrap_verdicts(results):
    fake = anomaly.AnomalyResults(
        results.ecdf, results.entropy_auc, results.ood.replace({"method": {"mc_dropout": "hypergan"}}),
        results.misclassification,
        {(("hypergan" if key[0] == "mc_dropout" else key[0]), *key[1:]): value
         for key, value in results.scores.items()}, results.n_nets, results.ecdf_outliers)
    claims = anomaly.detection_claims(fake, n_resamples=100)
    # Per outlier set: against the ensemble (at 2 nets: the largest n_nets within its 3
    # members) and 4 nets against 2.
    assert len(claims) == 2 * 3
    assert claims["claim"].iloc[0] == "HyperGAN detects notMNIST better than the deep ensemble (2 nets each)"
    assert claims["claim"].iloc[1] == "HyperGAN detects notMNIST better with 4 nets than with 2"
    assert set(claims["seen"]) <= {True, False, None}
    assert claims["evidence"].str.contains("95% interval").all()
    verdict = anomaly.auroc_comparison(results, "self", "map", "map", "notMNIST", n_nets=2,
                                       n_nets_b=4, n_resamples=50)
    assert verdict["seen"] is None and "+0.000" in verdict["evidence"]  # MAP has one net
    with pytest.raises(ValueError, match="no entropy scores of 'bhn'"):
        anomaly.auroc_comparison(results, "x", "bhn", "map", "notMNIST", n_nets=2)


def test_interval_verdict_margins():
    assert evaluation.interval_verdict("c", 0.01, 0.02, rule="r", evidence="e")["seen"] is True
    assert evaluation.interval_verdict("c", -0.03, -0.01, rule="r", evidence="e")["seen"] is False
    assert evaluation.interval_verdict("c", -0.03, -0.01, rule="r", evidence="e",
                                       margin=0.05)["seen"] is True
    assert evaluation.interval_verdict("c", -0.01, 0.01, rule="r", evidence="e")["seen"] is None
    assert evaluation.interval_verdict("c", math.nan, math.nan, rule="r", evidence="e")["seen"] is None


def test_held_out_split_renumbers_the_labels(data):
    x, y, outliers = anomaly.held_out_split(data.test, 3)
    assert len(x) + len(outliers) == len(data.test)
    assert len(outliers) == int((data.test.y == 3).sum())
    assert sorted(y.unique().tolist()) == list(range(9))
    assert torch.equal(y, data.test.y[data.test.y != 3] - (data.test.y[data.test.y != 3] > 3).long())
    with pytest.raises(ValueError, match=r"held_out \(a class index\) must be an integer in \[0, 9\]"):
        anomaly.held_out_split(data.test, 10)


def test_held_out_class_experiment_and_claims(data):
    requests = anomaly.held_out_class_runs(["map", "mc_dropout"], data.train, held_out_classes=[0, 7],
                                           epochs=2, batch_size=50, hidden=(32,), seed=0)
    assert sorted(requests) == [0, 7]
    for request in requests[7]:  # trained on the nine other classes, their labels renumbered
        assert request.target.n_outputs == 9 and len(request.x) == int((data.train.y != 7).sum())
        assert set(request.y.unique().tolist()) <= set(range(9))
    trained = {k: runs.train_runs(group, store=None) for k, group in requests.items()}
    results = anomaly.held_out_class_experiment(trained, data.test, n_samples=3, seed=0)
    assert len(results) == 2 * 2 * 4
    assert list(results.columns) == ["held_out", "method", "label", "error_pct", "score",
                                     *evaluation.OOD_METRICS]
    assert (results["error_pct"] < 60).all()
    mean = anomaly.mean_over_held_out(results)
    assert len(mean) == 2 * 4 and (mean["n_held_out"] == 2).all()
    entropy = results[(results["method"] == "map") & (results["score"] == "entropy")]
    row = mean[(mean["method"] == "map") & (mean["score"] == "entropy")].iloc[0]
    assert row["auroc"] == pytest.approx(entropy["auroc"].mean())
    assert row["auroc_sd"] == pytest.approx(entropy["auroc"].std(ddof=1))
    # The claims compare the Bayesian hypernetwork; call MC dropout that to check the rule.
    claims = anomaly.held_out_claims(results.replace({"method": {"mc_dropout": "bhn"}}))
    assert list(claims["claim"]) == ["the Bayesian hypernetwork is better than map on a held-out digit"]
    per_digit = results[results["score"] == "entropy"].pivot(index="held_out", columns="method",
                                                             values="auroc")
    d = per_digit["mc_dropout"] - per_digit["map"]
    assert f"{d.mean():+.3f} ± {2 * d.std(ddof=1) / 2 ** 0.5:.3f} (2 digits)" in claims["evidence"][0]
    one = anomaly.held_out_claims(results[results["held_out"] == 0].replace(
        {"method": {"mc_dropout": "bhn"}}))
    assert one["seen"].iloc[0] is None and "one digit" in one["evidence"].iloc[0]
    with pytest.raises(ValueError, match="held_out_classes must be a list of integers"):
        anomaly.held_out_class_runs(["map"], data.train, held_out_classes=3, epochs=1, batch_size=50)
    with pytest.raises(ValueError, match="at least one class"):
        anomaly.held_out_class_experiment({}, data.test, n_samples=1)
    fig = anomaly.plot_held_out(results)
    assert fig.axes[0].get_xlabel() == "auroc (mean ± sd over the held-out digits)"
    plt.close(fig)
    with pytest.raises(ValueError, match="metric must be one of"):
        anomaly.plot_held_out(results, "accuracy")


def test_anomaly_detection_refuses_bad_input(trained, data):
    x, out = data.test.x[:10], {"notMNIST": data.outliers.x[:10]}
    with pytest.raises(ValueError, match="every entry of n_nets must be an integer >= 1"):
        anomaly.anomaly_detection(trained, x, out, n_nets=(0, 3))
    with pytest.raises(ValueError, match="ecdf_outliers must be one of"):
        anomaly.anomaly_detection(trained, x, out, ecdf_outliers="letters")
    with pytest.raises(ValueError, match="at least one outlier set"):
        anomaly.anomaly_detection(trained, x, {})
    with pytest.raises(ValueError, match="y_in has 3 labels for 10 test images"):
        anomaly.anomaly_detection(trained, x, out, y_in=data.test.y[:3])


def test_figures(results):
    fig = anomaly.plot_entropy_ecdfs(results.ecdf, out_name="notMNIST")
    assert len(fig.axes) == 2 * 2
    assert [ax.get_title() for ax in fig.axes[::2]] == ["MNIST test, 2 nets", "notMNIST, 2 nets"]
    assert len(fig.axes[0].get_lines()) == 3  # one curve per method
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["MAP", "MC dropout", "Deep ensemble"]
    plt.close(fig)
    fig = anomaly.plot_detection(results.ood)
    assert [ax.get_title() for ax in fig.axes] == results.outlier_names
    assert [t.get_text() for t in fig.axes[-1].get_legend().get_texts()] == list(evaluation.OOD_SCORES)
    plt.close(fig)
    fig = anomaly.plot_detection(results.misclassification, panel=None)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 3 * 4
    plt.close(fig)
    text = anomaly.auroc_table(results.ood)
    assert list(text.columns) == results.outlier_names and len(text) == 3 * 4
    row = results.ood.iloc[0]
    assert text.iloc[0, 0] == f"{row.auroc:.3f} [{row.auroc_low:.3f}, {row.auroc_high:.3f}]"
    single = anomaly.auroc_table(results.misclassification, columns=None)
    assert list(single.columns) == ["auroc"] and isinstance(single, pd.DataFrame)
