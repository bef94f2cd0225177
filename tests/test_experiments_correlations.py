"""The weight-correlation chapter's library: p-values of weight pairs, the product network, branches."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hypernets import metrics  # noqa: E402
from hypernets.experiments import correlations as corr  # noqa: E402
from hypernets.likelihoods import Categorical  # noqa: E402
from hypernets.methods.registry import make_method  # noqa: E402
from hypernets.runs import TrainedMethod  # noqa: E402
from hypernets.targets import mlp  # noqa: E402

TINY_NUTS = {"num_chains": 4, "warmup_steps": 30, "num_samples": 30, "max_tree_depth": 4}


def untrained(name, target, **options):
    torch.manual_seed(0)
    return TrainedMethod(name, name, make_method(name, target, Categorical(), **options), 0.0, [])


# ---------------------------------------------------------------------------------------------
# (a) weight correlations
# ---------------------------------------------------------------------------------------------


def test_mean_field_pvalues_are_uniform_and_hypernet_pvalues_pile_up_at_zero():
    target = mlp([6, 8, 3])
    trained = {
        "bbb": untrained("bbb", target, init_std=0.1),
        # One noise dimension drives every weight: all pairs are strongly dependent.
        "bbh": untrained("bbh", target, noise_dim=1, hidden=(16,)),
    }
    pvalues = corr.correlation_pvalues(trained, n_samples=40, n_pairs=1500, seed=0)
    summary = corr.pvalue_summary(pvalues)
    assert list(summary.index) == ["Bayes by Backprop", "Bayes by Hypernet"]
    assert summary.loc["Bayes by Backprop", "p < 0.05"] == pytest.approx(0.05, abs=0.02)
    assert summary.loc["Bayes by Backprop", "KS vs uniform"] < 0.05
    assert summary.loc["Bayes by Hypernet", "p < 0.05"] > 0.5
    assert (summary["pairs"] == 1500).all()
    assert (summary["fixed weights"] == 0).all()


def test_pairs_are_drawn_among_weights_that_vary():
    # MC dropout keeps the first layer, the biases and undropped columns fixed across samples.
    target = mlp([5, 6, 4], dropout=True)
    trained = {"mc_dropout": untrained("mc_dropout", target)}
    pvalues = corr.correlation_pvalues(trained, n_samples=30, n_pairs=200, seed=0)
    fixed = pvalues["n_fixed"].iloc[0]
    assert fixed >= 5 * 6 + 6 + 4  # fc1.weight, fc1.bias, fc2.bias never vary
    torch.manual_seed(0)
    samples = corr.weight_samples(trained["mc_dropout"].method, 30)
    varying = (samples.amax(0) > samples.amin(0)).numpy()
    assert fixed == int((~varying).sum())
    assert varying[pvalues["first"].to_numpy()].all() and varying[pvalues["second"].to_numpy()].all()
    assert (pvalues["first"] != pvalues["second"]).all()


def test_methods_without_enough_distinct_nets_are_refused():
    trained = {"ensemble": untrained("ensemble", mlp([3, 2]), n_members=4)}
    with pytest.raises(ValueError, match="at most 4 distinct nets"):
        corr.correlation_pvalues(trained, n_samples=10, n_pairs=5)
    with pytest.raises(ValueError, match="n_samples"):
        corr.weight_samples(trained["ensemble"].method, 2)


def test_pvalue_histograms_have_a_panel_per_method():
    pvalues = pd.DataFrame({"method": ["A"] * 50 + ["B"] * 50, "p_value": torch.rand(100).numpy(),
                            "r": 0.0, "n_fixed": 0})
    fig = corr.plot_pvalue_histograms(pvalues)
    assert [ax.get_title().split("\n")[0] for ax in fig.axes] == ["A", "B"]
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# (b) the product network
# ---------------------------------------------------------------------------------------------


def test_product_network_computes_abx_and_acx_batched_and_single():
    target = corr.product_network()
    assert target.param_shapes == {"fc1.weight": (1, 1), "fc2.weight": (2, 1)}
    params = {"fc1.weight": torch.tensor([[[2.0]], [[-1.0]]]), "fc2.weight": torch.tensor([[[3.0], [0.1]], [[0.5], [4.0]]])}
    assert torch.equal(corr.abc_samples(params), torch.tensor([[2.0, 3.0, 0.1], [-1.0, 0.5, 4.0]]))
    x = torch.tensor([[1.0], [-2.0], [0.5]])
    out = target(params, x)
    assert out.shape == (2, 3, 2)
    assert torch.allclose(out[0, :, 0], 6.0 * x[:, 0]) and torch.allclose(out[1, :, 1], -4.0 * x[:, 0])
    assert torch.allclose(out[0, :, 1], 0.2 * x[:, 0]) and torch.allclose(out[1, :, 0], -0.5 * x[:, 0])
    a = corr.abc_samples(target.init(1000, torch.Generator().manual_seed(0)))[:, 0]
    assert a.abs().max() <= 1 and (a > 0).float().mean().item() == pytest.approx(0.5, abs=0.05)


def test_heteroscedastic_likelihood_is_the_gaussian_log_density():
    likelihood = corr.HeteroscedasticGaussian()
    outputs = torch.tensor([[[0.5, 0.2], [-1.0, -0.7]]])
    y = torch.tensor([[0.0], [1.0]])
    expected = -torch.distributions.Normal(outputs[..., 0], torch.exp(0.5 * outputs[..., 1])).log_prob(y[:, 0])
    assert torch.allclose(likelihood.nll(outputs, y), expected)
    assert torch.equal(likelihood.predictive(outputs), outputs[..., :1])
    with pytest.raises(ValueError, match="2 values"):
        likelihood.nll(outputs[..., :1], y)
    with pytest.raises(ValueError, match="targets y"):
        likelihood.nll(outputs, y[:, 0])


def test_product_data_is_seeded_and_follows_the_line():
    data = corr.product_data(500, noise_std=0.1, x_range=2.0, seed=3)
    again = corr.product_data(500, noise_std=0.1, x_range=2.0, seed=3)
    assert torch.equal(data.x, again.x) and torch.equal(data.y, again.y)
    assert data.x.abs().max() <= 2.0 and data.x.shape == data.y.shape == (500, 1)
    assert (data.y - data.x).std().item() == pytest.approx(0.1, rel=0.15)
    with pytest.raises(ValueError, match="n_points"):
        corr.product_data(0)


def test_branch_table_counts_each_quadrant():
    samples = {"m": torch.tensor([[1.0, 1.0, 0.0], [2.0, 0.5, 0.0], [-1.0, -1.0, 0.0], [1.0, -1.0, 0.0]])}
    table = corr.branch_table(samples)
    assert table.loc["m", "a, b > 0"] == 0.5
    assert table.loc["m", "a, b < 0"] == 0.25
    assert table.loc["m", "off (a b <= 0)"] == 0.25
    assert table.loc["m", "mean a b"] == pytest.approx((1 + 1 + 1 - 1) / 4)
    assert table.loc["m", "samples"] == 4


def test_mirrored_starts_put_half_of_the_chains_on_each_branch():
    starts = corr.abc_samples(corr.mirrored_starts(corr.product_network(), 6, seed=2))
    assert (starts[:3, :2] > 0).all() and torch.equal(starts[3:], -starts[:3])
    with pytest.raises(ValueError, match="even"):
        corr.mirrored_starts(corr.product_network(), 3)
    with pytest.raises(ValueError, match="product_network"):
        corr.mirrored_starts(mlp([1, 2]), 2)


@pytest.fixture(scope="module")
def product_result():
    return corr.run_product(["map", "ensemble", "bbb", "bbh", "bhn", "hypergan"], n_points=30, steps=150,
                            n_samples=50, nuts=TINY_NUTS,
                            options={"map": {"lr": 0.05}, "ensemble": {"n_members": 4, "lr": 0.05},
                                     "bbb": {"lr": 0.05}, "bbh": {"hidden": (32, 32)},
                                     "bhn": {"coupling_hidden": 16},
                                     "hypergan": {"train_samples": 4, "hidden": 16, "noise_dim": 4, "code_dim": 4}})


def test_methods_and_nuts_fit_the_product_network(product_result):
    samples = product_result.samples
    assert list(samples) == ["MAP", "Deep ensemble", "Bayes by Backprop", "Bayes by Hypernet",
                             "Bayesian Hypernetwork", "HyperGAN", "NUTS"]
    assert samples["MAP"].shape == (1, 3) and samples["Deep ensemble"].shape == (4, 3)
    assert samples["Bayes by Hypernet"].shape == (50, 3)
    assert samples["NUTS"].shape == (4 * 30, 3)
    table = corr.branch_table(samples)
    # The data follow y = x, so a b is near 1 (up to the noise and the prior's pull to 0).
    assert table.loc["NUTS", "mean a b"] == pytest.approx(1.0, abs=0.3)
    assert table.loc["MAP", "mean a b"] == pytest.approx(1.0, abs=0.3)
    # NUTS: half of the chains on each branch; a mean-field Gaussian sits on one branch.
    assert table.loc["NUTS", "a, b > 0"] == table.loc["NUTS", "a, b < 0"] == 0.5
    assert max(table.loc["Bayes by Backprop", "a, b > 0"], table.loc["Bayes by Backprop", "a, b < 0"]) == 1.0


def test_product_convergence_reports_products_and_each_branch(product_result):
    table = corr.product_convergence(product_result)
    assert list(table.index) == ["a b, a c", "a, b, c on the branch a, b > 0", "a, b, c on the branch a, b < 0"]
    assert table.loc["a b, a c", "components"] == 2
    assert (table["draws"] == [120, 60, 60]).all()
    assert (table["max r_hat"] > 0).all() and "divergences" in table.columns


def test_product_figure_has_a_panel_per_method(product_result):
    fig = corr.plot_product_posteriors(product_result.samples, n_cols=4)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == list(product_result.samples)
    assert len(fig.axes) == 8
    plt.close(fig)


def test_run_correlations_trains_on_mnist_and_tests_weight_pairs():
    result = corr.run_correlations(["bbb"], n_train=64, n_test=100, epochs=1, batch_size=32, n_weight_samples=5,
                                   n_pairs=20, options={"bbb": {"init_std": 0.05}})
    assert list(result.trained) == ["bbb"]
    assert result.trained["bbb"].method.target.name == "mnist_mlp"
    assert list(result.accuracy.index) == ["Bayes by Backprop"]
    assert 0.0 <= result.accuracy.loc["Bayes by Backprop", "test accuracy"] <= 1.0
    assert len(result.pvalues) == 20 and (result.pvalues["method"] == "Bayes by Backprop").all()


def test_correlation_claims_follow_the_wilson_rule():
    def pairs(label, n_small, n):
        return pd.DataFrame({"method": label, "p_value": [0.001] * n_small + [0.5] * (n - n_small),
                             "r": 0.0, "first": 0, "second": 1, "n_fixed": 0})

    table = pd.concat([pairs("Bayes by Backprop", 100, 2000), pairs("A", 600, 2000),
                       pairs("B", 100, 2000), pairs("C", 2, 10)])
    claims = corr.correlation_claims(table).set_index("method")
    assert claims.loc["Bayes by Backprop", "claim"] == "Bayes by Backprop keeps its weights independent"
    assert claims.loc["Bayes by Backprop", "seen"] is True  # 5% of pairs: the independent rate
    assert claims.loc["A", "seen"] is True and claims.loc["B", "seen"] is False
    assert claims.loc["C", "seen"] is None  # 2 of 10: too few pairs to tell
    low, high = metrics.proportion_interval(600, 2000)
    assert f"600 of 2000 pairs = 0.300, 95% interval [{low:.3f}, {high:.3f}]" == claims.loc["A", "evidence"]
    # A method whose nets do not classify gets no verdict, whatever its correlations.
    gated = corr.correlation_claims(table, {"A": 0.16, "B": 0.97}).set_index("method")
    assert gated.loc["A", "seen"] is None and gated.loc["A", "evidence"].endswith(
        "no verdict: test accuracy 0.160 < 0.9")
    assert gated.loc["B", "seen"] is False and gated.loc["Bayes by Backprop", "seen"] is True


def test_branch_claims_need_mass_on_both_branches():
    both = torch.tensor([[1.0, 1.0]] * 50 + [[-1.0, -1.0]] * 50)
    one = torch.tensor([[1.0, 1.0]] * 100)
    few = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    claims = corr.branch_claims({"both": both, "one": one, "few": few}).set_index("method")
    assert claims.loc["both", "seen"] is True and claims.loc["one", "seen"] is False
    assert claims.loc["few", "seen"] is None
    assert "a, b < 0: 0 of 100" in claims.loc["one", "evidence"]


def test_proportion_interval_is_wilson():
    low, high = metrics.proportion_interval(5, 100)
    # Wilson's interval by its formula.
    z, p, n = 1.959964, 0.05, 100
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * ((p * (1 - p) / n + z**2 / (4 * n**2)) ** 0.5) / (1 + z**2 / n)
    assert (low, high) == pytest.approx((centre - half, centre + half), abs=1e-5)
    with pytest.raises(ValueError, match="successes must be an integer in"):
        metrics.proportion_interval(5, 4)
