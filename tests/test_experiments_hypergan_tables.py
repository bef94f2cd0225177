"""HyperGAN's classification tables: accuracy of single nets and ensembles, claims, plan, figure."""

import matplotlib
import pytest

from hypernets import evaluation, metrics, plans, runs
from hypernets.book import load_profiles, resolve_parameters
from hypernets.data import load_mnist_splits
from hypernets.experiments import hypergan_tables as tables
from hypernets.store import RunStore
from hypernets.targets import get_target

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def smoke(**overrides):
    names = load_profiles("hypergan_tables")["smoke"]
    return resolve_parameters("hypergan_tables", "smoke", **{n: overrides.get(n) for n in names})


@pytest.fixture(scope="module")
def trained():
    data = load_mnist_splits(n_train=300, n_test=80, seed=0)
    by_seed = {s: runs.train_methods(["map", "mc_dropout", "ensemble"], "mnist_small_conv",
                                     data.train.x, data.train.y, epochs=2, batch_size=50, seed=s,
                                     options={"ensemble": {"n_members": 3}}, store=None)
               for s in (0, 1)}
    return by_seed, data.test


def test_accuracy_by_nets_averages_the_first_k_nets(trained):
    by_seed, test = trained
    table = tables.accuracy_by_nets(by_seed[0], test.x, test.y, sizes=(2, 5), seed=3)
    assert list(table.columns) == ["method", "label", "n_nets_used", "single_accuracy",
                                   "single_accuracy_spread", "accuracy_2", "accuracy_5"]
    rows = table.set_index("method")
    assert rows.loc["map", "n_nets_used"] == 1 and rows.loc["ensemble", "n_nets_used"] == 3
    assert rows.loc["map", "single_accuracy_spread"] == 0.0
    probs = evaluation.predict_probs(by_seed[0]["mc_dropout"], test.x, 5, seed=3)
    assert rows.loc["mc_dropout", "accuracy_2"] == pytest.approx(100 * metrics.accuracy(probs[:2], test.y))
    singles = [100 * metrics.accuracy(p[None], test.y) for p in probs]
    assert rows.loc["mc_dropout", "single_accuracy"] == pytest.approx(sum(singles) / 5)
    # An ensemble asked for 5 nets averages its 3 members.
    ensemble = evaluation.predict_probs(by_seed[0]["ensemble"], test.x, 5, seed=3)
    assert rows.loc["ensemble", "accuracy_5"] == pytest.approx(100 * metrics.accuracy(ensemble, test.y))
    assert (table["accuracy_5"] > 30).all()  # trained classifiers, above chance


def test_summary_and_claims_over_seeds(trained):
    by_seed, test = trained
    per_seed = tables.accuracy_over_seeds(by_seed, test.x, test.y, sizes=(2, 5))
    summary = tables.summarise(per_seed, (2, 5))
    assert list(summary["method"]) == ["map", "mc_dropout", "ensemble"] and (summary["n_seeds"] == 2).all()
    assert list(summary["n_nets_used"]) == [1, 5, 3]
    # MC dropout plays HyperGAN: the claims need that name.
    claims = tables.table_claims(summary.replace({"method": {"mc_dropout": "hypergan"}}), "mnist",
                                 sizes=(2, 5))
    assert list(claims["claim"]) == ["HyperGAN's 5 nets competitive with MAP",
                                     "a single HyperGAN net competitive with MAP",
                                     "HyperGAN's 2 nets competitive with the deep ensemble of 3"]
    assert set(claims["seen"]) <= {True, False, None}
    assert "2 seeds" in claims["evidence"].iloc[0]
    with pytest.raises(ValueError, match="data_set must be one of"):
        tables.table_claims(summary, "svhn")
    text = tables.conclusion({"mnist": summary}, {"mnist": claims}, {"mnist": 3}, (2, 5))
    best = summary.sort_values("accuracy_5", ascending=False).iloc[0]
    assert (f"**MNIST** (3 epochs, the paper trains to convergence; 2 training seeds). Accuracy of "
            f"the mean predictive of 5 sampled nets (of every net where a run has fewer), highest "
            f"first: {best['label']} {best['accuracy_5']:.2f} ± {best['accuracy_5_sd']:.2f} %") in text
    assert "; of single nets: " in text and "HyperGAN's claim: " in text
    with pytest.raises(ValueError, match="summaries must be keyed by data sets"):
        tables.conclusion({"svhn": summary}, {"svhn": claims}, {"svhn": 3}, (2, 5))
    fig = tables.plot_accuracy_by_nets({"mnist": summary, "again": summary}, (2, 5))
    assert [ax.get_title() for ax in fig.axes] == ["mnist", "again"]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["1", "2", "5"]
    plt.close(fig)


def test_plan_has_both_data_sets_and_their_targets(tmp_path):
    params = smoke(seeds=[0], n_train=64, n_test=32, cifar_n_train=64, cifar_n_test=32,
                   methods=["map"], options={}, cifar_options={})
    plan = plans.hypergan_tables(params)
    assert list(plan.groups) == ["mnist_seed0", "cifar10_seed0"]
    mnist, cifar = plan.groups["mnist_seed0"][0], plan.groups["cifar10_seed0"][0]
    assert mnist.target.param_shapes == get_target("mnist_small_conv").param_shapes
    assert cifar.target.param_shapes == get_target("cifar_small_conv").param_shapes
    assert cifar.x.shape == (64, 3, 32, 32) and set(cifar.y.unique().tolist()) <= set(range(10))
    assert len(set(cifar.y.tolist())) > 5  # all ten classes, not CIFAR-5
    trained = plans.train_seeds(plan, "cifar10", [0], store=RunStore(tmp_path))
    assert trained[0]["map"].method.target.n_outputs == 10
    full = load_profiles("hypergan_tables")["full"]
    assert full["ensemble_sizes"] == [5, 10, 100] and len(full["seeds"]) >= 3
    with pytest.raises(ValueError, match="cifar_n_train"):
        smoke(cifar_n_train=50001)
