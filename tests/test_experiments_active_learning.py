"""Active learning: acquisition scores by hand, the balanced start, trajectories through the
store (warm and cold), the claims over repeats, the figure."""

import matplotlib
import pandas as pd
import pytest
import torch

from hypernets import metrics
from hypernets.data import load_mnist
from hypernets.experiments import active_learning as al
from hypernets.records import RunRecords
from hypernets.store import RunStore

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def test_acquisition_scores_by_hand():
    agree = torch.tensor([[[0.9, 0.1]], [[0.9, 0.1]]])  # two nets, one image, confident, agreeing
    split = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])  # two nets that disagree completely
    assert float(al.acquisition_scores(agree, "bald")) == pytest.approx(0.0, abs=1e-12)
    assert float(al.acquisition_scores(split, "bald")) == pytest.approx(torch.log(torch.tensor(2.0)).item())
    assert float(al.acquisition_scores(split, "variation_ratio")) == 0.5
    assert float(al.acquisition_scores(agree, "variation_ratio")) == 0.0
    assert float(al.acquisition_scores(split, "mean_std")) == pytest.approx(0.5)
    assert float(al.acquisition_scores(agree, "max_entropy")) == pytest.approx(
        float(metrics.predictive_entropy(agree)))
    with pytest.raises(ValueError, match="random acquisition scores nothing"):
        al.acquisition_scores(agree, "random")
    with pytest.raises(ValueError, match="acquisition must be one of"):
        al.acquisition_scores(agree, "margin")


def test_initial_labels_are_balanced_and_seeded():
    labels = torch.arange(100) % 10
    chosen = al.initial_labels(labels, 2, seed=3)
    assert len(chosen) == 20 and torch.equal(labels[chosen].bincount(), torch.full((10,), 2))
    assert torch.equal(chosen, al.initial_labels(labels, 2, seed=3))
    assert not torch.equal(chosen, al.initial_labels(labels, 2, seed=4))
    with pytest.raises(ValueError, match="fewer than initial_per_class=11"):
        al.initial_labels(labels, 11)


@pytest.fixture(scope="module")
def data():
    return load_mnist("train").subset(600, seed=0), load_mnist("test").subset(100, seed=0)


SMALL = {"n_acquisitions": 2, "queries": 5, "pool_subset": 40, "epochs": 2, "batch_size": 32,
         "n_mc": 3, "n_test_nets": 2}


def test_trajectories_acquire_train_and_come_from_the_store(data, tmp_path):
    train, test = data
    planned = al.plan_trajectories(["map", "mc_dropout"], ["bald", "random"], cold_acquisitions=["bald"],
                                   repeats=[0], **SMALL)
    assert [t.name for t in planned] == ["map random warm #0", "map random cold #0",
                                         "mc_dropout bald warm #0", "mc_dropout random warm #0",
                                         "mc_dropout bald cold #0"]
    store = RunStore(tmp_path)
    curves = al.trajectories(planned, train, test, store=store)
    assert len(curves) == 5 * 3
    assert list(curves["n_labels"].iloc[:3]) == [20, 25, 30]
    assert curves["accuracy_pct"].between(0, 100).all()
    again = al.trajectories(planned, train, test, store=store)  # loaded, not recomputed
    pd.testing.assert_frame_equal(curves, again)
    raw = al.run_trajectory(planned[2], train, test)
    acquired = [i for row in raw["acquired"] for i in row]
    assert len(set(acquired)) == 10  # nothing acquired twice
    initial = set(al.initial_labels(train.y, 2, seed=0).tolist())
    assert not initial & set(acquired)
    # Warm and cold start train differently from the first acquisition on.
    warm = curves[(curves["method"] == "mc_dropout") & (curves["acquisition"] == "bald")]
    by_start = warm.groupby("start")["accuracy_pct"].apply(tuple)
    assert by_start["warm"][0] == by_start["cold"][0] and by_start["warm"] != by_start["cold"]
    with pytest.raises(ValueError, match="MAP has one net"):
        al.Trajectory("map", "bald", True, 0, n_acquisitions=1)


def test_trajectories_are_kept_in_the_records_and_read_back_on_another_machine(data, tmp_path,
                                                                                 monkeypatch):
    train, test = data
    planned = al.plan_trajectories(["map"], ["random"], cold_acquisitions=[], repeats=[0, 1],
                                   **SMALL)
    store, kept = RunStore(tmp_path / "store"), RunRecords(tmp_path / "records")
    first = al.trajectories(planned[:1], train, test, store=store, records=None)
    both = al.trajectories(planned, train, test, store=store, records=kept)  # one from the store
    assert len(list((tmp_path / "records").glob("*.json"))) == len(planned) == 4
    pd.testing.assert_frame_equal(both.iloc[:len(first)], first)

    def not_again(*args, **kwargs):
        raise AssertionError("a recorded trajectory was computed again")

    monkeypatch.setattr(al, "run_trajectory", not_again)
    pd.testing.assert_frame_equal(al.trajectories(planned, train, test, store=None, records=kept),
                                  both)


def curves_of(values):
    """Synthetic curves: {(acquisition, start): [accuracy per step] per repeat}."""
    rows = []
    for (acquisition, start), by_repeat in values.items():
        for repeat, accuracies in enumerate(by_repeat):
            for step, accuracy in enumerate(accuracies):
                rows.append({"method": "bhn", "label": "BHN", "acquisition": acquisition,
                             "start": start, "repeat": repeat, "acquisition_step": step,
                             "n_labels": 20 + 10 * step, "accuracy_pct": accuracy})
    return pd.DataFrame(rows)


def test_claims_compare_windows_over_repeats():
    curves = curves_of({
        ("bald", "warm"): [[50, 60, 70, 95, 96, 97], [51, 61, 71, 94, 95, 96], [49, 59, 69, 95, 97, 98]],
        ("bald", "cold"): [[60, 70, 75, 85, 86, 87], [61, 71, 76, 84, 85, 86], [59, 69, 74, 86, 87, 88]],
        ("random", "warm"): [[50, 55, 60, 65, 70, 75]] * 2 + [[51, 56, 61, 66, 71, 76]],
    })
    verdicts = al.claims(curves).set_index("claim")
    assert verdicts.loc["bhn: BALD acquires better than random", "seen"] == True  # noqa: E712
    assert verdicts.loc["bhn: warm start hurts early (BALD)", "seen"] == True  # noqa: E712
    assert verdicts.loc["bhn: warm start wins later (BALD)", "seen"] == True  # noqa: E712
    window = al.area_under_curve(curves, part=(0.0, 1 / 3))
    first = window[(window["acquisition"] == "bald") & (window["start"] == "warm") & (window["repeat"] == 0)]
    assert float(first["mean_accuracy"].iloc[0]) == pytest.approx(60)  # step 1: step 0 is shared
    table = al.summary_table(curves)
    row = table.loc[("BHN", "bald", "warm")]
    assert row["final_accuracy"] == pytest.approx((97 + 96 + 98) / 3)
    assert row["mean_accuracy"] == pytest.approx(sum([60, 70, 95, 96, 97, 61, 71, 94, 95, 96,
                                                      59, 69, 95, 97, 98]) / 15)
    assert row["final_accuracy_sd"] == pytest.approx(1.0)
    text = al.conclusion(curves, verdicts.reset_index())
    assert text.startswith("*Schedule*: 3 repeats of every trajectory, from 20 to 70 labelled images;")
    assert ("**BHN**: mean accuracy over the run, highest first: BALD (warm) 83.53 ± 0.12 %, "
            "BALD (cold) 80.60 ± 0.20 % and random (warm) 65.33 ± 0.58 %; after 70 labels: "
            "BALD (warm) 97.00 ± 1.00 %, BALD (cold) 87.00 ± 1.00 % and random (warm) 75.33 ± 0.58 %.") in text
    assert text.endswith("The claims: seen: *bhn: BALD acquires better than random*, *bhn: warm "
                         "start hurts early (BALD)* and *bhn: warm start wins later (BALD)*.")
    fig = al.plot_curves(curves)
    assert [ax.get_title() for ax in fig.axes] == ["BHN"]
    plt.close(fig)
