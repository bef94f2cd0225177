"""The diversity chapter's library: HyperGAN ablation, HyperGAN-MI toy, tables, claims, figures."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from hypernets.data import toy_regression
from hypernets.experiments import diversity as dv
from hypernets.likelihoods import Categorical
from hypernets.methods.map import MAP
from hypernets.targets import Flatten, Linear, TargetNet, mlp
from hypernets.training import fit

# Narrow hypernetworks: the paper's widths cost seconds per step on a CPU.
TINY_HYPERGAN = dict(noise_dim=8, code_dim=4, hidden=16, beta=1.0)
TINY_MI = dict(noise_dim=8, n_categories=3, code_dim=4, hidden=16, stats_hidden=(16,))


def tiny_target():
    return TargetNet("tiny", [("flatten", Flatten()), ("fc", Linear(16, 3))], (1, 4, 4), 3)


def tiny_classification(n, seed):
    """Three classes separable by the sign pattern of two pixels."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=generator)
    y = (x[:, 0, 0, 0] > 0).long() + (x[:, 0, 0, 1] > 0).long()
    return x, y


@pytest.fixture(scope="module")
def ablation():
    x, y = tiny_classification(64, seed=0)
    x_test, y_test = tiny_classification(50, seed=1)
    return dv.run_ablation(x, y, x_test, y_test, epochs=2, batch_size=32, train_samples=2,
                           n_predict_samples=3, n_diversity_samples=10, target=tiny_target(),
                           hypergan_options=TINY_HYPERGAN, lr=1e-3, seed=0)


def test_ablation_scores_every_variant_before_and_after_each_epoch(ablation):
    assert list(dict.fromkeys(ablation["variant"])) == list(dv.ABLATION_VARIANTS)
    for _, part in ablation.groupby("variant"):
        assert part["epoch"].tolist() == [0, 1, 2]
        assert part["step"].tolist() == [0, 2, 4]
        assert math.isnan(part["loss"].iloc[0]) and part["loss"].iloc[1:].notna().all()
    assert ablation[["accuracy", "single_net_accuracy"]].stack().between(0, 1).all()
    assert (ablation["diversity"] > 0).all()
    # Without a mixer nothing adversarial is added: the loss is the NLL alone.
    trained = ablation[ablation["epoch"] > 0]
    no_d = trained[trained["variant"].isin(["no discriminator", "no mixer"])]
    assert np.allclose(no_d["loss"], no_d["nll"])
    full = trained[trained["variant"] == "full"]
    assert (full["loss"] > full["nll"]).all()


def test_diversity_per_tensor_averages_to_the_diversity(ablation):
    tensors = [f"{dv.TENSOR_PREFIX}fc.weight", f"{dv.TENSOR_PREFIX}fc.bias"]
    assert [c for c in ablation.columns if c.startswith(dv.TENSOR_PREFIX)] == tensors
    assert np.allclose(ablation[tensors].mean(axis=1), ablation["diversity"])
    table = dv.diversity_by_tensor(ablation)
    assert table.columns.tolist() == ["variant", "epoch", "fc.weight", "fc.bias"]
    assert table["variant"].tolist() == list(dv.ABLATION_VARIANTS)
    assert (table["epoch"] == 2).all()
    last = ablation[(ablation["variant"] == "no mixer") & (ablation["epoch"] == 2)]
    assert table.iloc[2]["fc.bias"] == last[tensors[1]].iloc[0]
    with pytest.raises(ValueError, match="per-tensor"):
        dv.diversity_by_tensor(ablation.drop(columns=tensors))


def test_ablation_is_deterministic(ablation):
    x, y = tiny_classification(64, seed=0)
    x_test, y_test = tiny_classification(50, seed=1)
    again = dv.run_ablation(x, y, x_test, y_test, variants=["full"], epochs=2, batch_size=32,
                            train_samples=2, n_predict_samples=3, n_diversity_samples=10,
                            target=tiny_target(), hypergan_options=TINY_HYPERGAN, lr=1e-3, seed=0)
    first = ablation[ablation["variant"] == "full"].drop(columns="time_total_s")
    first = first.reset_index(drop=True)
    pd.testing.assert_frame_equal(first, again.drop(columns="time_total_s"))


def test_evaluator_leaves_training_unchanged_and_scores_a_point_mass():
    x, y = tiny_classification(40, seed=0)
    runs = []
    for evaluate in (None, dv.AblationEvaluator(x, y, n_predict_samples=4, n_diversity_samples=5)):
        torch.manual_seed(0)
        method = MAP(tiny_target(), Categorical())
        history = fit(method, x, y, epochs=2, batch_size=20, progress=False, evaluate=evaluate)
        runs.append((history, [p.detach().clone() for p in method.parameters()]))
    for a, b in zip(runs[0][1], runs[1][1]):
        assert torch.equal(a, b)
    scores = runs[1][0][-1]
    # MAP's samples are one net repeated: no diversity, and the ensemble is that net.
    assert scores["diversity"] == 0.0
    assert scores["accuracy"] == scores["single_net_accuracy"]
    assert 0.0 <= scores["accuracy"] <= 1.0


def test_ablation_rejects_bad_variants_and_options():
    x, y = tiny_classification(8, seed=0)
    common = dict(epochs=1, target=tiny_target(), hypergan_options=TINY_HYPERGAN)
    with pytest.raises(ValueError, match="unknown ablation variant"):
        dv.run_ablation(x, y, x, y, variants=["no generator"], **common)
    with pytest.raises(ValueError, match="twice"):
        dv.run_ablation(x, y, x, y, variants=["full", "full"], **common)
    with pytest.raises(ValueError, match="must not set"):
        dv.run_ablation(x, y, x, y, epochs=1, target=tiny_target(),
                        hypergan_options={**TINY_HYPERGAN, "use_mixer": False})


def _history(diversity, accuracy, epochs=(0, 1, 2, 3)):
    """A made-up ablation history: per variant, diversities and accuracies over ``epochs``."""
    rows = []
    for name in dv.ABLATION_VARIANTS:
        for epoch, d, a in zip(epochs, diversity[name], accuracy[name]):
            rows.append({"variant": name, "epoch": epoch, "step": 10 * epoch, "accuracy": a,
                         "single_net_accuracy": a - 0.01, "diversity": d, "loss": 1.0,
                         "nll": 1.0, "time_total_s": 0.0})
    return pd.DataFrame(rows)


def _seeds(diversities, accuracies, n_seeds=3, epochs=(0, 1, 2, 3)):
    """ablation_summary tables of n_seeds seeds, each value shifted by 0.001 * seed."""
    return pd.concat([dv.ablation_summary(_history(
        {k: [v + 0.001 * s for v in vs] for k, vs in diversities.items()},
        {k: [v + 0.001 * s for v in vs] for k, vs in accuracies.items()}, epochs=epochs)).assign(seed=s)
        for s in range(n_seeds)], ignore_index=True)


def test_summary_takes_the_last_and_first_trained_epochs():
    history = _history({"full": [0.5, 0.4, 0.3, 0.2], "no discriminator": [0.5, 0.3, 0.2, 0.1],
                        "no mixer": [0.5, 0.1, 0.05, 0.04]},
                       {"full": [0.1, 0.9, 0.95, 0.97], "no discriminator": [0.1, 0.9, 0.95, 0.96],
                        "no mixer": [0.1, 0.9, 0.95, 0.975]})
    summary = dv.ablation_summary(history).set_index("variant")
    assert summary.loc["full", "epochs"] == 3
    assert summary.loc["full", "accuracy"] == 0.97
    assert summary.loc["full", "diversity"] == 0.2
    assert summary.loc["full", "diversity_init"] == 0.5
    assert summary.loc["full", "diversity_first"] == 0.4
    assert summary.loc["full", "diversity_change"] == pytest.approx(0.2 / 0.4 - 1)
    assert summary.loc["no mixer", "diversity_vs_init"] == pytest.approx(0.04 / 0.5)


SEEN_DIVERSITY = {"full": [0.5, 0.4, 0.3, 0.2], "no discriminator": [0.5, 0.3, 0.2, 0.1],
                  "no mixer": [0.5, 0.1, 0.05, 0.04]}
SEEN_ACCURACY = {"full": [0.1, 0.9, 0.95, 0.97], "no discriminator": [0.1, 0.9, 0.95, 0.96],
                 "no mixer": [0.1, 0.9, 0.95, 0.975]}


def test_claims_over_seeds_are_seen_beyond_the_spread():
    per_seed = _seeds(SEEN_DIVERSITY, SEEN_ACCURACY)
    claims = dv.ablation_claims(per_seed)
    assert claims["seen"].tolist() == [True, True, True, True]
    assert "3 seeds" in claims["evidence"][0] and "excludes 0" in claims["rule"][1]
    assert "at initialisation full 0.501" in claims["evidence"][3]
    summary = dv.ablation_over_seeds(per_seed).set_index("variant")
    assert summary.loc["full", "n_seeds"] == 3
    assert summary.loc["full", "diversity"] == pytest.approx(0.201)
    assert summary.loc["full", "diversity_sd"] == pytest.approx(0.001)
    # One seed: no spread, nothing decided.
    one = dv.ablation_claims(_seeds(SEEN_DIVERSITY, SEEN_ACCURACY, n_seeds=1))
    assert one["seen"].tolist() == [None, None, None, None]
    mi_toy_verdicts = pd.DataFrame({"claim": ["m1", "m2"], "seen": [True, None]})
    text = dv.conclusion(dv.ablation_over_seeds(per_seed), claims, mi_toy_verdicts, epochs=3)
    assert ("(HyperGAN on MNIST, 3 epochs, 3 training seeds; mean ± sd). Diversity of the sampled "
            "weights after training") in text
    assert ("highest first: full 0.201 ± 0.001, no discriminator 0.101 ± 0.001 and no mixer "
            "0.041 ± 0.001; before training:") in text
    assert "The paper's statements: seen: *diversity falls as training proceeds*, " in text
    assert text.endswith("**HyperGAN-MI on the toy**: seen: *m1*; undecided: *m2*.")


def test_claims_can_fail_and_a_head_start_at_initialisation_is_seen():
    # The no-mixer model starts ten times more diverse and loses most of it, yet ends above the
    # full model: claim 3 fails on the final diversity and on the accuracy it loses.
    per_seed = _seeds({"full": [0.05, 0.2, 0.3, 0.4], "no discriminator": [0.05, 0.5, 0.5, 0.5],
                       "no mixer": [0.5, 0.45, 0.45, 0.45]},
                      {"full": [0.1, 0.9, 0.95, 0.97], "no discriminator": [0.1, 0.9, 0.95, 0.96],
                       "no mixer": [0.1, 0.5, 0.6, 0.7]})
    claims = dv.ablation_claims(per_seed)
    assert claims["seen"].tolist() == [False, False, False, True]
    assert "ratio of the means no mixer / full 1.12" in claims["evidence"][2]
    one_epoch = _seeds({name: [0.5, 0.4] for name in dv.ABLATION_VARIANTS},
                       {name: [0.1, 0.9] for name in dv.ABLATION_VARIANTS}, epochs=(0, 1))
    assert dv.ablation_claims(one_epoch)["seen"][0] is None
    with pytest.raises(ValueError, match="lacks the variant"):
        dv.ablation_claims(per_seed[per_seed["variant"] != "no mixer"])
    with pytest.raises(ValueError, match="needs a seed column"):
        dv.ablation_claims(per_seed.drop(columns="seed"))


def test_claims_markdown_says_seen_not_seen_undecided():
    claims = pd.DataFrame({"claim": ["a", "b", "c"], "seen": [True, False, None],
                           "evidence": ["1 < 2", "3 > 2", "one epoch"]})
    assert dv.claims_markdown(claims).splitlines() == [
        "- a: **seen** (1 < 2)", "- b: **not seen** (3 > 2)", "- c: **undecided** (one epoch)"]


def test_mi_toy_claims_over_seeds():
    rows = []
    for seed, (div_mi, div_plain) in enumerate([(0.20, 0.10), (0.22, 0.11), (0.21, 0.12)]):
        for variant, diversity, ratio, mse in (("HyperGAN-MI", div_mi, 6.0 + seed, 10.0 + seed),
                                               ("no regulariser", div_plain, 6.5 - seed, 12.0 - seed)):
            rows.append({"variant": variant, "noise_std": 3.0, "seed": seed, "mi": 0.0,
                         "diversity": diversity, "rmse": 1.0, "band_inside": 1.0,
                         "band_outside": ratio, "band_ratio": ratio, "net_mse": mse,
                         "ensemble_mse": mse})
    claims = dv.mi_toy_claims(pd.DataFrame(rows)).set_index("claim")
    assert claims.loc["the MI regulariser increases weight diversity (σ = 3)", "seen"] is True
    assert claims.loc["the MI regulariser widens the band outside the data (σ = 3)", "seen"] is None
    assert "3 seeds" in claims.loc["the MI regulariser lowers the ensemble's test MSE (σ = 3)", "evidence"]
    assert (claims["noise_std"] == 3.0).all()
    with pytest.raises(ValueError, match="lacks the variant"):
        dv.mi_toy_claims(pd.DataFrame(rows[:1]))


def test_band_widths_of_known_spreads():
    x = torch.linspace(-6, 6, 13)
    # Samples +-1 around 0 inside [-4, 4] and +-3 outside: std 1 and 3, bands 4 and 12.
    scale = torch.where(x.abs() <= 4, 1.0, 3.0)
    samples = torch.stack([scale, -scale])
    widths = dv.band_widths(samples, x.abs() <= 4)
    assert widths == pytest.approx({"band_inside": 4.0, "band_outside": 12.0, "band_ratio": 3.0})
    with pytest.raises(ValueError, match="some points inside and some outside"):
        dv.band_widths(samples, x.abs() <= 10)
    with pytest.raises(ValueError, match="bool mask of the 5 points"):
        dv.band_widths(samples[:, :5], x.abs() <= 4)


@pytest.fixture(scope="module")
def mi_toy():
    toy = toy_regression(noise_std=3.0, seed=0)
    history, samples = dv.run_mi_toy(toy, beta=5.0, steps=6, train_samples=4, eval_every=3,
                                     n_samples=5, target=mlp([1, 8, 1], "relu"),
                                     mi_options=TINY_MI, lr=1e-3, seed=0)
    return toy, history, samples


def test_mi_toy_trains_both_variants(mi_toy):
    toy, history, samples = mi_toy
    assert history["variant"].tolist() == ["HyperGAN-MI"] * 2 + ["no regulariser"] * 2
    assert history["beta"].tolist() == [5.0, 5.0, 0.0, 0.0]
    assert history["step"].tolist() == [3, 6, 3, 6]
    assert (history["diversity"] > 0).all()
    assert history["mi"].abs().le(math.log(TINY_MI["n_categories"]) + 1.0).all()
    assert len(samples) == 2 * 5 * len(toy.x_grid)
    # Both variants start from the same seed: only beta separates their training.
    regularised = history[history["variant"] == "HyperGAN-MI"]["nll"].to_numpy()
    plain = history[history["variant"] == "no regulariser"]["nll"].to_numpy()
    assert not np.allclose(regularised, plain)


def test_mi_toy_summary_rows_and_bands(mi_toy):
    toy, history, samples = mi_toy
    summary = dv.mi_toy_summary(toy, history, samples).set_index("variant")
    assert list(summary.index) == ["HyperGAN-MI", "no regulariser"]
    assert summary.loc["no regulariser", "beta"] == 0.0
    assert (summary["steps"] == 6).all()
    assert (summary[["band_inside", "band_outside", "rmse", "diversity"]] > 0).all().all()
    assert np.allclose(summary["band_ratio"], summary["band_outside"] / summary["band_inside"])


def test_mi_toy_summary_rmse_of_a_known_function():
    toy = toy_regression(noise_std=3.0, seed=0)
    grid = toy.x_grid[:, 0]
    exact = toy.true_function(grid)
    samples = pd.DataFrame({"variant": "v", "sample": np.repeat([0, 1], len(grid)),
                            "x": np.tile(grid.numpy(), 2),
                            "y": torch.cat([exact - 1, exact + 1]).numpy()})
    history = pd.DataFrame([{"variant": "v", "beta": 1.0, "step": 1, "loss": 0.0, "nll": 0.0,
                             "mi": 0.0, "diversity": 0.1}])
    row = dv.mi_toy_summary(toy, history, samples).iloc[0]
    noise = toy.y[:, 0] - toy.true_function(toy.x[:, 0])
    # The mean sample is x^3 up to the linear interpolation between grid points.
    assert row["rmse"] == pytest.approx(float(noise.pow(2).mean().sqrt()), abs=0.1)
    assert row["band_inside"] == pytest.approx(4.0) and row["band_ratio"] == pytest.approx(1.0)


def test_mi_toy_rejects_a_zero_weight_for_the_regularised_variant():
    toy = toy_regression(noise_std=3.0, seed=0)
    with pytest.raises(ValueError, match="beta .*must be a finite number > 0"):
        dv.run_mi_toy(toy, beta=0.0, steps=1)
    with pytest.raises(ValueError, match="must not set"):
        dv.run_mi_toy(toy, beta=1.0, steps=1, mi_options={"beta": 2.0})


def test_figures(ablation, mi_toy):
    fig = dv.plot_ablation(ablation)
    assert len(fig.axes) == 3
    assert [t.get_text() for t in fig.legends[0].get_texts()] == list(dv.ABLATION_VARIANTS)
    plt.close(fig)
    fig = dv.plot_diversity_by_tensor(ablation)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["fc.weight", "fc.bias"]
    plt.close(fig)
    toy, _, samples = mi_toy
    fig = dv.plot_mi_toy_bands(toy, samples, n_curves=3)
    assert [ax.get_title() for ax in fig.axes] == ["HyperGAN-MI", "no regulariser"]
    plt.close(fig)


def test_mi_toy_study_and_its_losses():
    study = dv.run_mi_toy_study([3.0, 9.0], [0, 1], data_seed=0, beta=5.0, steps=4, train_samples=4,
                                eval_every=2, n_samples=5, loss_nets=(1, 3), target=mlp([1, 8, 1], "relu"),
                                mi_options=TINY_MI, lr=1e-3, store=None)
    assert sorted(study.toys) == [3.0, 9.0] and study.toys[9.0].noise_std == 9.0
    assert set(zip(study.history["noise_std"], study.history["seed"])) == {(3.0, 0), (3.0, 1), (9.0, 0), (9.0, 1)}
    losses = study.losses
    assert len(losses) == 2 * 2 * 2 * 2 and list(losses.columns) == ["variant", "n_nets", "net_mse",
                                                                     "ensemble_mse", "noise_std", "seed"]
    # One net: its ensemble is itself. Jensen: the ensemble's MSE never exceeds its nets' mean.
    one = losses[losses["n_nets"] == 1]
    assert np.allclose(one["net_mse"], one["ensemble_mse"])
    assert (losses["ensemble_mse"] <= losses["net_mse"] + 1e-9).all()
    per_seed = dv.mi_toy_over_seeds(study)
    assert len(per_seed) == 2 * 2 * 2
    row = per_seed[(per_seed["noise_std"] == 9.0) & (per_seed["seed"] == 1)].set_index("variant")
    most = losses[(losses["noise_std"] == 9.0) & (losses["seed"] == 1) & (losses["n_nets"] == 3)]
    assert row.loc["HyperGAN-MI", "ensemble_mse"] == pytest.approx(
        most.set_index("variant").loc["HyperGAN-MI", "ensemble_mse"])
    claims = dv.mi_toy_claims(per_seed)
    assert list(claims["noise_std"]) == [3.0] * 3 + [9.0] * 3
    fig = dv.plot_mi_toy_losses(losses)
    assert [ax.get_title() for ax in fig.axes] == ["σ = 3", "σ = 9"]
    assert fig.axes[0].get_xscale() == "log"
    plt.close(fig)
    x, y = dv.toy_test_set(study.toys[3.0])
    assert x.shape == (1000, 1) and float(x.min()) == -4.0 and torch.equal(y, x**3)
    with pytest.raises(ValueError, match="at least one value"):
        dv.mi_toy_groups([], [0], data_seed=0, beta=1.0, steps=1)
