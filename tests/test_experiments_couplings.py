"""Bayesian Hypernetworks' coupling-layer study: its runs, evaluation over seeds, claims, figure."""

import math

import matplotlib
import pandas as pd
import pytest

from hypernets import evaluation, plans
from hypernets.book import load_profiles, resolve_parameters
from hypernets.experiments import couplings as study
from hypernets.store import RunStore

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def smoke(**overrides):
    names = load_profiles("bhn_couplings")["smoke"]
    return resolve_parameters("bhn_couplings", "smoke",
                              **{name: overrides.get(name) for name in names})


def test_coupling_options_name_one_bhn_run_per_number():
    options = study.coupling_options([0, 4], {"bhn": {"coupling_hidden": 8}, "map": {"lr": 0.1}})
    assert options == {"bhn_c0": {"coupling_hidden": 8, "method": "bhn", "n_couplings": 0},
                       "bhn_c4": {"coupling_hidden": 8, "method": "bhn", "n_couplings": 4}}
    with pytest.raises(ValueError, match="couplings lists a number twice"):
        study.coupling_options([1, 1], None)
    with pytest.raises(ValueError, match="may not set n_couplings"):
        study.coupling_options([1], {"bhn": {"n_couplings": 3}})


def test_plan_groups_sizes_and_seeds_and_applies_lr(tmp_path):
    params = smoke(train_sizes=[60, 100], seeds=[0, 1], couplings=[0, 1], lr=0.002, n_test=50,
                   baselines=["map"], epochs=1)
    plan = plans.bhn_couplings(params)
    assert list(plan.groups) == ["n60_seed0", "n60_seed1", "n100_seed0", "n100_seed1"]
    group = plan.groups["n60_seed1"]
    assert [r.name for r in group] == ["map", "bhn_c0", "bhn_c1"]
    assert all(len(r.x) == 60 and r.seed == 1 for r in group)
    assert all(r.settings()["lr"] == 0.002 for r in group)
    assert group[2].settings()["options"]["n_couplings"] == 1
    assert group[0].target.param_shapes["fc1.weight"] == (32, 784)  # the profile's hidden_units
    # The subsets are fixed by seed, the same for every training seed.
    assert (plan.groups["n60_seed0"][0].x == group[0].x).all()
    trained = plans.train_couplings(plan, [60], [0, 1], store=RunStore(tmp_path))
    assert sorted(trained) == [(60, 0), (60, 1)]
    assert len(trained[(60, 0)]["bhn_c1"].method.flow.couplings) == 1
    assert math.isnan(study.n_couplings(trained[(60, 0)]["map"]))
    per_seed = study.evaluate_groups(trained, plan.data.test.x, plan.data.test.y, n_samples=3)
    assert list(per_seed.columns) == ["train_size", "seed", "method", "label", "n_couplings",
                                      "error_pct", "nll"]
    assert len(per_seed) == 2 * 3 and per_seed["error_pct"].between(0, 100).all()
    assert set(per_seed["label"]) == {"MAP", "Bayesian Hypernetwork, 0 couplings",
                                      "Bayesian Hypernetwork, 1 coupling"}
    curves = study.curves(trained[(60, 1)])
    assert list(dict.fromkeys(curves["label"])) == [
        "MAP", "Bayesian Hypernetwork, 0 couplings", "Bayesian Hypernetwork, 1 coupling"]
    assert (curves.groupby("method").size() == 1).all()  # one epoch each
    summary = study.summarise(per_seed)
    assert list(summary["method"]) == ["map", "bhn_c0", "bhn_c1"]
    assert (summary["n_seeds"] == 2).all()
    row = summary.set_index("method").loc["bhn_c1"]
    errors = per_seed[per_seed["method"] == "bhn_c1"]["error_pct"]
    assert row["error_pct"] == pytest.approx(errors.mean())
    assert row["error_pct_sd"] == pytest.approx(errors.std(ddof=1))
    with pytest.raises(ValueError, match="at least one training size"):
        study.evaluate_groups({}, plan.data.test.x, plan.data.test.y, n_samples=1)


def summary_of(errors):
    """A summary over seeds from ``{(size, method): [errors per seed]}``."""
    rows = [{"train_size": size, "seed": s, "method": method, "label": method,
             "n_couplings": float(method[5:]) if method.startswith("bhn_c") else math.nan,
             "error_pct": e, "nll": 0.0}
            for (size, method), values in errors.items() for s, e in enumerate(values)]
    return study.summarise(pd.DataFrame(rows))


def test_claims_follow_the_rules():
    summary = summary_of({
        (100, "mc_dropout"): [5.0, 5.2, 5.1], (100, "bhn_c0"): [6.0, 6.1, 6.2],
        (100, "bhn_c8"): [4.0, 4.1, 4.2],
        (200, "mc_dropout"): [2.0, 2.1, 2.2], (200, "bhn_c0"): [3.0, 3.1, 3.2],
        (200, "bhn_c8"): [3.0, 3.1, 3.2]})
    claims = study.claims(summary, baselines=["mc_dropout", "bbb"]).set_index("claim")
    assert claims.loc["8 couplings more accurate than 0 (100 images)", "seen"] is True
    # Better than the baseline is competitive; a whole point worse is not.
    assert claims.loc["8 couplings competitive with mc_dropout (100 images)", "seen"] is True
    assert claims.loc["8 couplings competitive with mc_dropout (200 images)", "seen"] is False
    assert claims.loc["8 couplings more accurate than 0 (200 images)", "seen"] is not True
    assert not any("bbb" in claim for claim in claims.index)  # absent baselines are left out


def test_noninferiority_verdict_by_hand():
    table = evaluation.seed_summary(pd.DataFrame({
        "method": ["a"] * 3 + ["b"] * 3, "label": ["a"] * 3 + ["b"] * 3, "seed": [0, 1, 2] * 2,
        "error_pct": [1.3, 1.4, 1.5, 1.0, 1.1, 1.2]}), ["error_pct"])
    # a is 0.3 worse, with 2 se = 2 * sqrt(0.01 / 3 + 0.01 / 3) = 0.163: inside a 0.5 tolerance.
    assert evaluation.noninferiority_verdict(table, "c", "error_pct", "a", "b", tolerance=0.5,
                                             lower=True)["seen"] is True
    assert evaluation.noninferiority_verdict(table, "c", "error_pct", "a", "b", tolerance=0.1,
                                             lower=True)["seen"] is False
    assert evaluation.noninferiority_verdict(table, "c", "error_pct", "a", "b", tolerance=0.3,
                                             lower=True)["seen"] is None
    # Higher is better: a is the better one here.
    assert evaluation.noninferiority_verdict(table, "c", "error_pct", "a", "b", tolerance=0.0,
                                             lower=False)["seen"] is True


def test_figure_and_profiles():
    summary = summary_of({(100, "map"): [5.0, 5.4], (100, "bhn_c0"): [6.0, 6.4],
                          (100, "bhn_c2"): [4.0, 4.4], (300, "map"): [2.0, 2.2],
                          (300, "bhn_c0"): [3.0, 3.3], (300, "bhn_c2"): [2.5, 2.6]})
    fig = study.plot_error_vs_couplings(summary)
    assert [ax.get_title() for ax in fig.axes] == ["100 training images", "300 training images"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["map", "Bayesian Hypernetwork"]
    summary = summary_of({(100, "map"): [5.0, 5.4], (100, "bbb"): [5.0, 5.4],
                          (100, "bhn_c0"): [6.0, 6.4]})
    fig = study.plot_error_vs_couplings(summary)
    # Baselines at the same error stay apart by their dash patterns.
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    assert lines["map"].is_dashed() and lines["bbb"].is_dashed()
    assert lines["map"]._unscaled_dash_pattern != lines["bbb"]._unscaled_dash_pattern
    plt.close(fig)
    plt.close(fig)
    with pytest.raises(ValueError, match="metric must be one of"):
        study.plot_error_vs_couplings(summary, "accuracy")
    full = load_profiles("bhn_couplings")["full"]
    assert full["train_sizes"] == [5000, 60000] and full["couplings"][0] == 0
    assert len(full["seeds"]) >= 3
    with pytest.raises(ValueError, match="train_sizes"):
        smoke(train_sizes=[70000])
