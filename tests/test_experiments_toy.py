"""The cubic-toy chapter's library: settings, scaling, training, std tables against NUTS, held-out scores, figures."""

import dataclasses

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from hypernets import metrics, runs  # noqa: E402
from hypernets.data import toy_regression  # noqa: E402
from hypernets.experiments import toy  # noqa: E402
from hypernets.likelihoods import Gaussian  # noqa: E402
from hypernets.methods.bayes_by_backprop import BayesByBackprop  # noqa: E402
from hypernets.targets import get_target  # noqa: E402

TINY_NUTS = {"num_chains": 2, "warmup_steps": 10, "num_samples": 10, "max_tree_depth": 3}


@pytest.fixture(scope="module")
def tiny_result():
    [result] = toy.run_toy([(3.0, "toy_bbh")], ["map", "ensemble", "bbb"], steps=5, n_samples=7, nuts=TINY_NUTS,
                           options={"ensemble": {"n_members": 3}, "bbb": {"lr": 1e-2, "steps": 8}})
    return result


def test_settings_pair_noise_levels_with_targets():
    assert toy.toy_settings([3, 9.0], ["toy_hypergan", "toy_bbh"]) == [(3.0, "toy_hypergan"), (9.0, "toy_bbh")]
    with pytest.raises(ValueError, match="same length"):
        toy.toy_settings([3.0, 9.0], ["toy_bbh"])
    with pytest.raises(ValueError, match="noise std"):
        toy.toy_settings([0.0], ["toy_bbh"])
    with pytest.raises(ValueError, match="target must be one of"):
        toy.toy_settings([3.0], ["toy_nonexistent"])


def _train_on_toy(name, target, data, steps, **kwargs):
    """A full-batch run on the toy, as run_toy trains its methods."""
    return runs.train_method(name, target, data.x, data.y, steps=steps, batch_size=len(data.x),
                              likelihood=Gaussian(3.0), **kwargs)


def test_train_method_takes_fit_options_apart_from_constructor_options():
    data = toy_regression(3.0)
    run = _train_on_toy("bbb", get_target("toy_bbh"), data, 4, options={"lr": 0.05, "steps": 6, "init_std": 0.2})
    assert isinstance(run.method, BayesByBackprop)
    assert run.method.init_std == 0.2
    assert run.history[-1]["step"] == 6  # the run's own steps win
    assert run.label == "Bayes by Backprop"
    with pytest.raises(ValueError, match="method must be one of"):
        _train_on_toy("nope", get_target("toy_bbh"), data, 1)


def test_training_is_reproducible_and_does_not_depend_on_earlier_runs():
    data = toy_regression(3.0)
    target = get_target("toy_bbh")
    first = _train_on_toy("map", target, data, 5)
    torch.rand(10)  # consume global randomness in between
    second = _train_on_toy("map", target, data, 5)
    for a, b in zip(first.method.parameters(), second.method.parameters()):
        assert torch.equal(a, b)


def test_train_methods_refuses_bad_lists_and_unknown_options():
    data = toy_regression(3.0)
    target = get_target("toy_bbh")
    with pytest.raises(ValueError, match="twice"):
        runs.train_methods(["map", "map"], target, data.x, data.y, steps=1, batch_size=20, likelihood=Gaussian(3.0))
    with pytest.raises(ValueError, match="registry methods"):
        runs.train_methods(["map"], target, data.x, data.y, steps=1, batch_size=20, likelihood=Gaussian(3.0),
                            options={"mpa": {}})


def test_run_toy_samples_every_method_and_the_reference(tiny_result):
    grid = len(tiny_result.data.x_grid)
    assert list(tiny_result.samples) == ["MAP", "Deep ensemble", "Bayes by Backprop", "NUTS"]
    assert tiny_result.samples["MAP"].shape == (1, grid)  # one net, not copies
    assert tiny_result.samples["Deep ensemble"].shape == (3, grid)
    assert tiny_result.samples["Bayes by Backprop"].shape == (7, grid)
    assert tiny_result.samples["NUTS"].shape == (2 * 10, grid)
    assert tiny_result.trained["bbb"].history[-1]["step"] == 8
    for name, n_points in (("train", 20), ("inside", 500), ("outside", 500)):
        assert set(tiny_result.point_samples[name]) == set(tiny_result.samples)
        assert tiny_result.point_samples[name]["Bayes by Backprop"].shape == (7, n_points)
        assert tiny_result.point_samples[name]["NUTS"].shape == (2 * 10, n_points)


def test_std_table_gives_ratios_to_the_reference():
    grid = torch.linspace(-6, 6, 13).unsqueeze(1)
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(400, 13, generator=generator) * (1 + grid.T.abs())
    samples = {"NUTS": reference, "twice": 2 * reference, "shifted": reference + 5.0,
               "point": reference[:1]}
    inside = grid[:, 0].abs() <= 4
    table = toy.std_table(samples, inside)
    ref_std = reference.std(0, correction=0)
    assert table.loc["NUTS", "std in"] == pytest.approx(float(ref_std[inside].mean()), rel=1e-5)
    assert table.loc["NUTS", "std out"] == pytest.approx(float(ref_std[~inside].mean()), rel=1e-5)
    assert table.loc["twice", "std in / ref"] == pytest.approx(2.0, rel=1e-5)
    assert table.loc["twice", "std out / ref"] == pytest.approx(2.0, rel=1e-5)
    assert table.loc["shifted", "std in / ref"] == pytest.approx(1.0, rel=1e-5)
    assert table.loc["point", "std out"] == 0.0
    assert table.loc["NUTS", "out / in"] > 1  # the std grows away from the data by construction
    with pytest.raises(ValueError, match="reference"):
        toy.std_table({"twice": reference}, inside)
    with pytest.raises(ValueError, match="some points inside and some outside"):
        toy.std_table(samples, torch.ones(13, dtype=torch.bool))


def test_summary_and_convergence_tables(tiny_result):
    summary = toy.summary_table([tiny_result])
    assert summary.index.names == ["sigma", "target", "method"]
    assert summary.loc[(3.0, "toy_bbh", "NUTS"), "std in / ref"] == pytest.approx(1.0)
    assert summary.loc[(3.0, "toy_bbh", "MAP"), "std in"] == 0.0
    convergence = toy.convergence_table([tiny_result])
    assert list(convergence.index) == [(3.0, "toy_bbh", "weights"), (3.0, "toy_bbh", "f(x) on the grid")]
    assert convergence.loc[(3.0, "toy_bbh", "weights"), "components"] == get_target("toy_bbh").num_params
    assert (convergence["chains"] == 2).all()
    assert {"max r_hat", "min ess", "divergences", "step size", "time (s)"} <= set(convergence.columns)
    training = toy.training_table([tiny_result])
    assert training.loc[(3.0, "toy_bbh", "Bayes by Backprop"), "steps"] == 8
    assert training.loc[(3.0, "toy_bbh", "MAP"), "nll"] > 0


def test_the_summary_is_reproducible_with_nuts_in_this_process_or_a_worker():
    def run(nuts_processes):
        results = toy.run_toy([(9.0, "toy_bbh"), (3.0, "toy_hypergan")], ["bbb"], steps=3, n_samples=5,
                              nuts=TINY_NUTS, nuts_processes=nuts_processes, seed=1)
        return results, toy.summary_table(results)

    # Two independent runs, one with NUTS in a worker process: the same numbers.
    first, table = run(0)
    in_worker, worker_table = run(1)
    pd.testing.assert_frame_equal(table, worker_table)
    assert list(table.index.get_level_values("target").unique()) == ["toy_bbh", "toy_hypergan"]
    for name, value in first[1].reference.params.items():
        assert torch.equal(value, in_worker[1].reference.params[name])
    with pytest.raises(ValueError, match="nuts_processes"):
        toy.run_toy([(3.0, "toy_bbh")], ["bbb"], steps=1, n_samples=2, nuts=TINY_NUTS, nuts_processes=-1)


def test_the_toy_trains_on_one_thread_and_gives_the_callers_threads_back(monkeypatch):
    seen = []
    train = toy.train_methods
    monkeypatch.setattr(toy, "train_methods",
                        lambda *args, **kwargs: (seen.append(torch.get_num_threads()), train(*args, **kwargs))[1])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        toy.run_toy([(3.0, "toy_bbh")], ["map"], steps=2, n_samples=2, nuts=TINY_NUTS, nuts_processes=1)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_figures_have_a_panel_per_method_and_the_reference(tiny_result):
    fig = toy.plot_toy(tiny_result, n_cols=3)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == list(tiny_result.samples)
    assert len(fig.axes) == 6  # 4 panels on a 2 x 3 grid, 2 hidden
    plt.close(fig)
    fig = toy.plot_std_profiles(tiny_result)
    # MAP has no spread to show.
    assert [line.get_label() for line in fig.axes[0].get_lines()][:3] == ["Deep ensemble", "Bayes by Backprop", "NUTS"]
    plt.close(fig)


def test_options_table_lists_each_methods_settings():
    table = toy.options_table(["map", "bbb"], {"bbb": {"lr": 0.01, "init_std": 0.1}, "bbh": {"lr": 1}})
    assert table.loc["map", "options"] == ""
    assert table.loc["bbb", "options"] == "lr=0.01, init_std=0.1"
    assert list(table.index) == ["map", "bbb"]


# ---------------------------------------------------------------------------------------------
# A well-posed problem: standardised data, held-out points, held-out scores, the conclusion
# ---------------------------------------------------------------------------------------------


def test_the_standardizer_uses_the_training_sets_moments_and_maps_back_exactly():
    data = toy_regression(9.0)
    scaler = toy.Standardizer.fit(data.x, data.y)
    x, y = scaler.x(data.x), scaler.y(data.y)
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-6) and float(y.mean()) == pytest.approx(0.0, abs=1e-6)
    # The population std (np.std, as PBP_net.py), not the sample std.
    assert float(x.std(correction=0)) == pytest.approx(1.0, rel=1e-5)
    assert float(y.std(correction=0)) == pytest.approx(1.0, rel=1e-5)
    assert scaler.y_std == pytest.approx(float(data.y.std(correction=0)), rel=1e-6)
    torch.testing.assert_close(scaler.y_back(y), data.y)
    assert scaler.noise_std(9.0) == pytest.approx(9.0 / scaler.y_std)
    assert not scaler.is_identity and toy.Standardizer().is_identity
    assert torch.equal(toy.Standardizer().x(data.x), data.x)
    with pytest.raises(ValueError, match="standardize=False"):
        toy.Standardizer.fit(torch.ones(5, 1), data.y[:5])
    with pytest.raises(ValueError, match="y_std"):
        toy.Standardizer(y_std=0.0)


def test_held_out_points_lie_inside_and_outside_the_data_with_the_right_noise():
    data = toy_regression(3.0, seed=2)
    held_out = toy.held_out_points(data, 4000, seed=2)
    assert held_out.x_in.shape == held_out.y_out.shape == (4000, 1)
    assert bool(data.inside(held_out.x_in).all()) and not bool(data.inside(held_out.x_out).any())
    assert float(held_out.x_out.min()) >= -6.0 and float(held_out.x_out.max()) <= 6.0
    assert 0.4 < float((held_out.x_out > 0).double().mean()) < 0.6  # both sides, as long as each other
    # Fresh points: not the training draw of the same seed.
    assert not torch.isin(data.x, held_out.x_in).any()
    # The noise is N(0, sigma^2): the true function's 95% interval covers about 95% of the targets.
    for x, y in ((held_out.x_in, held_out.y_in), (held_out.x_out, held_out.y_out)):
        truth = data.true_function(x)[:, 0].unsqueeze(0)
        assert metrics.interval_coverage(truth, y, levels=(0.95,), noise_std=3.0)[0.95] == pytest.approx(0.95, abs=0.015)
    again = toy.held_out_points(data, 4000, seed=2)
    assert torch.equal(again.x_out, held_out.x_out) and torch.equal(again.y_in, held_out.y_in)
    with pytest.raises(ValueError, match="n_held_out"):
        toy.held_out_points(data, 0)


def test_the_networks_and_nuts_see_standardised_data_and_report_on_the_original_scale(tiny_result):
    data, scaler, reference = tiny_result.data, tiny_result.scaler, tiny_result.reference
    assert scaler == toy.Standardizer.fit(data.x, data.y)
    assert tiny_result.trained["map"].method.likelihood.noise_std == pytest.approx(3.0 / scaler.y_std)
    expected = scaler.y_back(reference.target(reference.params, scaler.x(data.x_grid))[..., 0])
    torch.testing.assert_close(tiny_result.samples["NUTS"], expected.detach())
    # The same NUTS functions on the training points as on the grid: one call per method.
    torch.testing.assert_close(tiny_result.point_samples["train"]["NUTS"],
                               scaler.y_back(reference.target(reference.params, scaler.x(data.x))[..., 0]).detach())


def test_map_fits_down_to_the_noise_only_on_the_standardised_problem():
    def map_rmse(standardize):
        [result] = toy.run_toy([(3.0, "toy_bbh")], ["map"], steps=3000, n_samples=1, nuts=TINY_NUTS,
                               standardize=standardize, n_held_out=10, options={"map": {"lr": 0.01}})
        return toy.training_table([result]).loc[(3.0, "toy_bbh", "MAP"), "RMSE / sigma"]

    assert map_rmse(True) < 1.25  # about sigma: the model fits the data
    assert map_rmse(False) > 1.4  # the raw targets (+-64) under the N(0, 1) prior: MAP underfits


def test_run_toy_refuses_bad_scaling_and_held_out_settings():
    with pytest.raises(ValueError, match="standardize must be True or False"):
        toy.run_toy([(3.0, "toy_bbh")], ["map"], steps=1, n_samples=2, nuts=TINY_NUTS, standardize="yes")
    with pytest.raises(ValueError, match="n_held_out"):
        toy.run_toy([(3.0, "toy_bbh")], ["map"], steps=1, n_samples=2, nuts=TINY_NUTS, n_held_out=0)


def test_held_out_table_scores_every_method_nuts_and_the_true_function(tiny_result):
    table = toy.held_out_table([tiny_result], level=0.9)
    labels = list(tiny_result.samples) + [toy.ORACLE_LABEL]
    assert list(table.index) == [(3.0, "toy_bbh", label) for label in labels]
    assert {"NLL in", "NLL out", "coverage in", "coverage out", "RMSE in", "RMSE out"} == set(table.columns)
    assert table[["coverage in", "coverage out"]].stack().between(0, 1).all()
    _, y = tiny_result.points("outside")
    nuts = tiny_result.point_samples["outside"]["NUTS"]
    assert table.loc[(3.0, "toy_bbh", "NUTS"), "NLL out"] == pytest.approx(metrics.gaussian_nll(nuts, y, 3.0))
    # The true function with the true noise: its 90% interval covers about 90% of 500 points.
    assert table.loc[(3.0, "toy_bbh", toy.ORACLE_LABEL), "coverage in"] == pytest.approx(0.9, abs=0.05)
    # MAP's predictive is N(f, sigma^2): the noise alone sets its width.
    map_in = tiny_result.point_samples["inside"]["MAP"]
    _, y_in = tiny_result.points("inside")
    assert table.loc[(3.0, "toy_bbh", "MAP"), "coverage in"] == metrics.interval_coverage(
        map_in, y_in, levels=(0.9,), noise_std=3.0)[0.9]
    with pytest.raises(ValueError, match="point set"):
        tiny_result.points("test")


def test_the_match_rule_has_the_stated_tolerance():
    assert toy.matches_reference(2.0, 2.0) and toy.matches_reference(0.5, 2.0) and toy.matches_reference(1.0)
    assert not toy.matches_reference(2.01, 2.0) and not toy.matches_reference(0.49, 2.0)
    assert toy.matches_reference(2.5, 3.0)
    with pytest.raises(ValueError, match="match_factor"):
        toy.matches_reference(1.0, 1.0)


def test_the_conclusion_follows_the_ratios(tiny_result):
    nuts = tiny_result.samples["NUTS"]
    mean = nuts.mean(0)
    samples = dict(tiny_result.samples)
    samples["Deep ensemble"] = nuts.clone()  # exact: ratio 1 everywhere
    samples["Bayes by Backprop"] = mean + 3 * (nuts - mean)  # three times NUTS's spread
    result = dataclasses.replace(tiny_result, samples=samples)
    text = toy.conclusion([result], factor=2.0, level=0.95)
    assert "within a factor 2 of NUTS's (ratio in [0.50, 2.00])" in text
    assert "Inside the data, Deep ensemble (1.00) matches NUTS" in text
    assert "Bayes by Backprop (3.00) is too uncertain" in text
    assert "MAP (0.00)" in text and "MAP's training RMSE is" in text
    assert "the methods that match NUTS inside and outside the data: Deep ensemble;" in text
    assert "in neither region: MAP and Bayes by Backprop." in text
    # A wider tolerance moves Bayes by Backprop into the matching group.
    assert "inside and outside the data: Deep ensemble and Bayes by Backprop;" in toy.conclusion([result], factor=3.5)
