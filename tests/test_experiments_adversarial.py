"""The robustness chapter's library: FGSM curves per trained method, summaries, figures."""

import functools
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")

from hypernets import evaluation, metrics, runs  # noqa: E402
from hypernets.data import MNIST_PIXELS, load_mnist_splits  # noqa: E402
from hypernets.experiments import adversarial  # noqa: E402
from hypernets.targets import Flatten, TargetNet, mlp  # noqa: E402

EPSILONS = (0.0, 0.1, 0.2)


def small_mnist_target() -> TargetNet:
    """784-32-10: trains in a second on a few hundred digits."""
    net = mlp([28 * 28, 32, 10], "relu", dropout=True)
    return TargetNet("small", [("flatten", Flatten())] + net.layers, (1, 28, 28), 10)


@functools.lru_cache(maxsize=1)
def trained_runs():
    data = load_mnist_splits(n_train=600, n_test=120, seed=0)
    trained = runs.train_methods(["map", "ensemble", "bbb"], small_mnist_target(), data.train.x,
                                  data.train.y, epochs=3, batch_size=50, seed=0,
                                  options={"ensemble": {"n_members": 2}})
    return trained, data.test.x, data.test.y


@functools.lru_cache(maxsize=1)
def curves():
    trained, x, y = trained_runs()
    return adversarial.adversarial_curves(trained, x, y, EPSILONS, n_samples=4, batch_size=50)


def test_curves_have_one_row_per_method_and_budget():
    table = curves()
    assert list(table.columns) == ["method", "label", "n_nets", "epsilon", "accuracy", "entropy",
                                   "entropy_auc", "retained_accuracy"]
    assert list(table["method"]) == [m for m in ("map", "ensemble", "bbb") for _ in EPSILONS]
    assert table.groupby("method", sort=False)["n_nets"].first().to_dict() == {
        "map": 1, "ensemble": 2, "bbb": 4}
    assert table["entropy"].between(0, math.log(10)).all()
    assert table["entropy_auc"].between(0, 1).all()


def test_retained_accuracy_is_the_accuracy_above_chance_relative_to_clean():
    table = curves()
    for _, part in table.groupby("method"):
        clean = part.loc[part["epsilon"] == 0.0, "accuracy"].item()
        expected = (part["accuracy"] - 0.1) / (clean - 0.1)
        np.testing.assert_allclose(part["retained_accuracy"], expected)
        assert part.loc[part["epsilon"] == 0.0, "retained_accuracy"].item() == pytest.approx(1.0)
    trained, x, y = trained_runs()
    with pytest.raises(ValueError, match="epsilons must include 0"):
        adversarial.adversarial_curves(trained, x, y, (0.1, 0.2), n_samples=2)


def test_the_robustness_claim_needs_comparable_clean_accuracy_and_seeds():
    def summary_row(method, seed, clean_error, retained):
        return {"method": method, "label": method, "seed": seed, "clean_error_pct": clean_error,
                "mean_retained_accuracy": retained}
    rows = [summary_row("map", s, 1.0 + 0.1 * s, 0.50 + 0.01 * s) for s in range(3)]
    rows += [summary_row("bbh", s, 1.1 + 0.1 * s, 0.70 + 0.01 * s) for s in range(3)]
    # A collapsed net keeps "everything" of nothing: its clean error rules it out.
    rows += [summary_row("hypergan", s, 88.0 + s, 0.99) for s in range(3)]
    summary = evaluation.seed_summary(pd.DataFrame(rows), ["clean_error_pct",
                                                           "mean_retained_accuracy"])
    claims = adversarial.robustness_claims(summary).set_index("claim")
    assert claims.loc["keeps more accuracy than map under attack", "seen"] == True  # noqa: E712
    against_collapsed = claims.loc["keeps more accuracy than hypergan under attack"]
    assert against_collapsed["seen"] == False and "not comparable" in against_collapsed["evidence"]  # noqa: E712
    with pytest.raises(ValueError, match="at least one other method"):
        adversarial.robustness_claims(summary[summary["method"] == "bbh"])

    detection_verdicts = pd.DataFrame({"claim": ["d1", "d2", "d3", "d4"],
                                       "seen": [False, True, False, False]})
    text = adversarial.conclusion(summary, claims.reset_index(), detection_verdicts)
    assert "highest first: hypergan 0.99 ± 0.00, bbh 0.71 ± 0.01 and map 0.51 ± 0.01." in text
    assert "Clean error, lowest first: map 1.10 ± 0.10 %, bbh 1.20 ± 0.10 % and hypergan 89.00 ± 1.00 %" in text
    assert ("most robust: seen: *keeps more accuracy than map under attack*; not seen: *keeps more "
            "accuracy than hypergan under attack*. Against hypergan it is not seen because") in text
    # The largest group of detection verdicts is counted, the others listed.
    assert "Of the 4 comparisons (attack, budget, baseline) of its claim: seen: *d2*; not seen: 3 claims." in text


def test_attack_seeds_and_their_summaries_carry_the_seed():
    trained, x, y = trained_runs()
    both = adversarial.attack_seeds({0: {"map": trained["map"]}, 5: {"map": trained["map"]}},
                                    x, y, EPSILONS, n_samples=1, batch_size=50)
    assert list(both["seed"].unique()) == [0, 5]
    per_seed = adversarial.robustness_over_seeds(both)
    assert list(per_seed["seed"]) == [0, 5]
    assert per_seed["clean_error_pct"].nunique() == 1  # the same run twice
    comparison = adversarial.clean_error_comparison(both)
    assert comparison.set_index("method").loc["map", "ours"] == pytest.approx(
        per_seed["clean_error_pct"].iloc[0])


def test_clean_point_equals_the_chapter_evaluation_with_the_same_nets():
    trained, x, y = trained_runs()
    table = curves()
    for name, run in trained.items():
        probs = evaluation.predict_probs(run, x, 4, seed=0)
        clean = table[(table["method"] == name) & (table["epsilon"] == 0.0)]
        assert clean["accuracy"].item() == metrics.accuracy(probs, y)
        assert clean["entropy_auc"].item() == pytest.approx(metrics.entropy_auc(probs), abs=1e-6)


def test_attacks_lower_the_accuracy_of_trained_classifiers():
    table = curves()
    for name, part in table.groupby("method"):
        accuracy = part.sort_values("epsilon")["accuracy"].to_numpy()
        assert accuracy[0] > 0.75, name
        assert accuracy[0] > accuracy[1] > accuracy[2], name
        assert accuracy[2] < 0.4, name


def test_robustness_summary_reads_the_curves():
    table = curves()
    summary = adversarial.robustness_summary(table)
    assert list(summary["method"]) == ["map", "ensemble", "bbb"]
    assert [c for c in summary.columns if c.startswith("accuracy_eps")] == [
        "accuracy_eps_0", "accuracy_eps_0.1", "accuracy_eps_0.2"]
    for _, row in summary.iterrows():
        part = table[table["method"] == row["method"]]
        assert row["mean_accuracy"] == pytest.approx(part["accuracy"].mean())
        assert row["accuracy_eps_0.2"] == part[part["epsilon"] == 0.2]["accuracy"].item()
        assert row["entropy_max_eps"] == part[part["epsilon"] == 0.2]["entropy"].item()
    chosen = adversarial.robustness_summary(table, epsilons_shown=[0.2])
    assert [c for c in chosen.columns if c.startswith("accuracy_eps")] == ["accuracy_eps_0.2"]
    with pytest.raises(ValueError, match="not among the budgets"):
        adversarial.robustness_summary(table, epsilons_shown=[0.3])


def test_clean_error_comparison_puts_the_paper_beside_epsilon_zero():
    table = curves()
    comparison = adversarial.clean_error_comparison(table)
    assert set(comparison["metric"]) == {"error_pct"}
    assert list(comparison["method"]) == ["map", "ensemble", "bbb", "mc_dropout", "mnf", "bbh"]
    by_method = comparison.set_index("method")
    clean_map = table[(table["method"] == "map") & (table["epsilon"] == 0.0)]["accuracy"].item()
    assert by_method.loc["map", "ours"] == pytest.approx(100 * (1 - clean_map))
    assert by_method.loc["map", "published"] == 0.8
    assert by_method.loc["map", "difference"] == pytest.approx(100 * (1 - clean_map) - 0.8)
    assert np.isnan(by_method.loc["mnf", "ours"])
    with pytest.raises(ValueError, match="epsilon = 0"):
        adversarial.clean_error_comparison(table[table["epsilon"] > 0])


def test_adversarial_examples_respect_budget_and_pixel_range():
    trained, x, y = trained_runs()
    images = adversarial.adversarial_examples(trained["bbb"], x[:3], y[:3], EPSILONS, n_samples=4)
    assert images.shape == (len(EPSILONS), 3, 1, 28, 28)
    assert images.min() >= -1e-6 and images.max() <= 1 + 1e-6
    assert torch.equal(images * 255, (images * 255).round())  # 8 bits per pixel
    clean = MNIST_PIXELS.to_pixels(x[:3])
    half_level = 0.5 / 255 + 1e-6
    torch.testing.assert_close(images[0], clean, atol=half_level, rtol=0)
    for k, epsilon in enumerate(EPSILONS):
        assert (images[k] - clean).abs().max() <= epsilon + half_level
    assert (images[2] - clean).abs().max() > 0.19


def test_figures():
    table = curves()
    fig = adversarial.plot_adversarial_curves(table)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == [
        "accuracy", "accuracy above chance, relative to clean", "mean predictive entropy (nats)"]
    trained, x, y = trained_runs()
    images = adversarial.adversarial_examples(trained["map"], x[:2], y[:2], EPSILONS, n_samples=1)
    fig = adversarial.plot_adversarial_examples(images, EPSILONS)
    assert len(fig.axes) == 2 * len(EPSILONS)
    with pytest.raises(ValueError, match="budgets"):
        adversarial.plot_adversarial_examples(images, EPSILONS[:2])


def test_paper_budgets():
    assert len(adversarial.PAPER_EPSILONS) == 9
    assert adversarial.PAPER_EPSILONS[0] == 0.0 and adversarial.PAPER_EPSILONS[-1] == 0.4
    assert np.allclose(np.diff(adversarial.PAPER_EPSILONS), 0.05)


def test_curves_need_trained_methods():
    _, x, y = trained_runs()
    with pytest.raises(ValueError, match="at least one"):
        adversarial.adversarial_curves({}, x, y, EPSILONS, n_samples=2)


@functools.lru_cache(maxsize=1)
def detection():
    trained, x, y = trained_runs()
    # bbb plays HyperGAN and the ensemble its ensemble: the claims need those names.
    runs_by_name = {"hypergan": trained["bbb"], "ensemble": trained["ensemble"], "map": trained["map"]}
    return adversarial.adversarial_detection(runs_by_name, x[:60], y[:60], epsilons=(0.0, 0.1, 0.3),
                                             n_nets=(2, 3), n_resamples=100, batch_size=25)


def test_detection_table_scores_clean_against_attacked_images():
    results = detection()
    table = results.table
    # Per run: two nets counts x two attacks x two budgets above 0 (0 is left out).
    assert len(table) == 3 * 2 * 2 * 2 and set(table["epsilon"]) == {0.1, 0.3}
    assert list(table.columns) == ["method", "label", "attack", "n_nets", "n_nets_used", "epsilon",
                                   "accuracy", "entropy_clean", "entropy_adversarial", "auroc",
                                   "auroc_low", "auroc_high"]
    assert set(table.loc[table["method"] == "ensemble", "n_nets_used"]) == {2}
    assert set(table.loc[table["method"] == "map", "n_nets_used"]) == {1}
    rows = table.set_index(["method", "attack", "n_nets", "epsilon"])
    # The ensemble has 2 members: asking for 3 gives the numbers of 2.
    assert rows.loc[("ensemble", "bim", 3, 0.3), "auroc"] == rows.loc[("ensemble", "bim", 2, 0.3), "auroc"]
    clean, attacked = results.scores[("map", "fgsm", 2, 0.3)]
    assert rows.loc[("map", "fgsm", 2, 0.3), "auroc"] == pytest.approx(
        metrics.ood_metrics(clean, attacked)["auroc"])
    # Stronger attacks hurt more: BIM at least as much as FGSM, the larger budget more.
    assert (rows.loc[("map", "bim", 2, 0.3), "accuracy"]
            <= rows.loc[("map", "fgsm", 2, 0.3), "accuracy"] + 1e-9)
    assert rows.loc[("map", "fgsm", 2, 0.3), "accuracy"] < rows.loc[("map", "fgsm", 2, 0.1), "accuracy"]
    assert ((table["auroc_low"] <= table["auroc"]) & (table["auroc"] <= table["auroc_high"])).all()
    with pytest.raises(ValueError, match="attacks must name some of"):
        adversarial.adversarial_detection({"map": trained_runs()[0]["map"]}, *trained_runs()[1:],
                                          epsilons=(0.1,), attacks=("pgd",))
    with pytest.raises(ValueError, match="a budget above 0"):
        adversarial.adversarial_detection({"map": trained_runs()[0]["map"]}, *trained_runs()[1:],
                                          epsilons=(0.0,))


def test_large_ensembles_attack_fewer_images_at_a_time_with_the_same_numbers(monkeypatch):
    whole = detection()
    monkeypatch.setattr(adversarial, "ATTACK_NET_IMAGES", 7)  # 3 images of 2 nets, 2 of 3
    sizes = []
    for name, attack in adversarial.ATTACKS.items():
        monkeypatch.setitem(adversarial.ATTACKS, name, lambda target, params, x, *args, attack=attack:
                            sizes.append((len(next(iter(params.values()))), len(x))) or attack(target, params, x, *args))
    chunked = detection.__wrapped__()
    assert {nets: max(size for n, size in sizes if n == nets) for nets, _ in sizes} == {1: 7, 2: 3, 3: 2}
    pd.testing.assert_frame_equal(chunked.table, whole.table, rtol=1e-5, atol=1e-6)
    for key, (clean, attacked) in whole.scores.items():
        np.testing.assert_allclose(chunked.scores[key][0], clean, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(chunked.scores[key][1], attacked, rtol=1e-5, atol=1e-6)


def test_detection_claims_and_figure():
    results = detection()
    claims = adversarial.detection_claims(results, n_resamples=100)
    assert len(claims) == 2 * 2  # per attack and budget: against the ensemble (no MC dropout here)
    assert claims["claim"].iloc[0] == "HyperGAN detects FGSM images at ε = 0.1 better than ensemble (2 nets each)"
    assert set(claims["seen"]) <= {True, False, None}
    fig = adversarial.plot_detection_curves(results.table)
    assert [ax.get_title() for ax in fig.axes] == ["FGSM, 2 nets", "FGSM, 3 nets", "BIM, 2 nets", "BIM, 3 nets"]
    plt = matplotlib.pyplot
    plt.close(fig)
