"""Chapter plans: the runs a notebook trains, shared between chapters, trained by --train-only."""

from __future__ import annotations

import os

import pytest

from hypernets import plans, runner
from hypernets.book import available_notebooks, load_profiles, resolve_parameters
from hypernets.records import RECORDS_ENV
from hypernets.runs import key_document
from hypernets.store import RunStore, request_hash

#: Small sizes for every run, so that building and keying the plans takes seconds.
SMALL = {"n_train": 64, "n_test": 32, "epochs": 1, "batch_size": 32, "curve_samples": 1, "seeds": [0],
         "options": {"ensemble": {"n_members": 2, "precision": "bf16"},
                     "bbh": {"train_samples": 2, "kl_estimator": "per_weight", "hidden": [8, 16]},
                     "hypergan": {"train_samples": 2, "hidden": 16, "noise_dim": 16, "code_dim": 16}}}


def params(notebook: str, profile: str, **overrides):
    names = load_profiles(notebook)[profile]
    return resolve_parameters(notebook, profile, **{name: overrides.get(name) for name in names})


def keys(plan) -> dict[str, str]:
    return {request.name: request_hash(key_document(request, request.build()))
            for request in plan.requests}


def test_every_plan_is_for_a_notebook_with_profiles():
    assert set(plans.PLANS) <= set(available_notebooks())


def test_the_held_out_runs_are_trained_per_class(tmp_path):
    plan = plans.anomaly_detection(params("anomaly_detection", "smoke", held_out_classes=[0, 3],
                                          held_out_methods=["map"], n_train=64, n_test=32))
    trained = plans.train_held_out(plan, [3, 0], store=RunStore(tmp_path))
    assert list(trained) == [3, 0] and all(list(runs) == ["map"] for runs in trained.values())
    assert trained[3]["map"].method.target.n_outputs == 9
    with pytest.raises(ValueError, match="not 'held_out_5'"):
        plans.train_held_out(plan, [5], store=None)


@pytest.mark.parametrize("setting", ["device", "seed", "seeds", "n_train", "n_test", "epochs", "batch_size",
                                     "precision", "curve_samples", "eval_batch_size"])
def test_the_mnist_table_and_the_adversarial_chapter_share_their_full_runs(setting):
    """Both train the same LeNet runs; the store trains them once only if every setting agrees."""
    table, attack = (load_profiles(nb)["full"] for nb in ("mnist_table", "adversarial"))
    assert table[setting] == attack[setting]
    for method in attack["methods"]:
        assert table["options"].get(method) == attack["options"].get(method)


def test_shared_runs_have_one_key_and_other_settings_another():
    table = keys(plans.mnist_table(params("mnist_table", "smoke", **SMALL)))
    attack = keys(plans.adversarial(params("adversarial", "smoke", **SMALL)))
    shared = set(table) & set(attack)
    assert shared == {"map", "mc_dropout", "ensemble", "bbb", "mnf", "bbh", "hypergan"}
    assert all(table[name] == attack[name] for name in shared)
    other = keys(plans.adversarial(params("adversarial", "smoke", **{**SMALL, "seed": 1})))
    assert not set(other.values()) & set(table.values())


def test_every_training_seed_of_the_mnist_table_is_a_group_of_its_own(tmp_path):
    plan = plans.mnist_table(params("mnist_table", "smoke", **{**SMALL, "seeds": [0, 2]}))
    # The estimator ablation's groups come after both seeds' tables, so the tables train first.
    assert list(plan.groups) == ["table_seed0", "architecture_seed0", "table_seed2",
                                 "architecture_seed2", "estimator_seed0", "estimator_seed2"]
    ablation = plan.groups["estimator_seed2"]
    assert [(r.name, r.seed) for r in ablation] == [("bbh_kl_joint", 2)]
    bbh = next(r for r in plan.groups["table_seed2"] if r.name == "bbh")
    assert ablation[0].settings()["options"] == {**bbh.settings()["options"], "kl_estimator": "joint"}
    assert [r.seed for r in plan.groups["table_seed2"]] == [2] * len(plan.groups["table_seed2"])
    by_seed = {group: {r.name: request_hash(key_document(r, r.build())) for r in requests}
               for group, requests in plan.groups.items() if group.startswith("table")}
    assert not set(by_seed["table_seed0"].values()) & set(by_seed["table_seed2"].values())
    # The data (and the per-epoch test samples) follow `seed`, not the training seeds.
    first, other = plan.groups["table_seed0"][0], plan.groups["table_seed2"][0]
    assert first.x is other.x
    trained = plans.train_seeds(plans.ChapterPlan(plan.data, {
        "table_seed0": plan.groups["table_seed0"][:1], "table_seed2": plan.groups["table_seed2"][:1]}),
        "table", [0, 2], store=RunStore(tmp_path))
    assert list(trained) == [0, 2] and list(trained[2]) == ["map"]


def test_train_only_stores_what_the_notebook_then_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HYPERNETS_RUNS", str(tmp_path))
    small = {key: str(value) for key, value in SMALL.items() if key != "options"}
    arguments = [item for key, value in small.items() for item in ("-p", key, value)]
    arguments += ["-p", "options", str(SMALL["options"]), "-p", "methods", "[map, ensemble]",
                  "-p", "detection_methods", "[ensemble]"]
    assert runner.main(["--train-only", *arguments, "adversarial"]) == 0
    printed = capsys.readouterr().out
    assert "methods_seed0/map: trained" in printed and "methods_seed0/ensemble: trained" in printed
    resolved = params("adversarial", "smoke", methods=["map", "ensemble"],
                      detection_methods=["ensemble"], **{**SMALL})
    trained = plans.adversarial(resolved).train("methods_seed0", store=RunStore(tmp_path))
    assert all(run.loaded for run in trained.values())
    assert runner.main(["--train-only", *arguments, "adversarial"]) == 0
    assert "methods_seed0/map: in the store" in capsys.readouterr().out


def test_train_only_refuses_a_notebook_without_a_plan(capsys):
    assert runner.main(["--train-only", "data_tour"]) == 2
    assert "data_tour has no run plan" in capsys.readouterr().err


@pytest.mark.parametrize("notebook", sorted(plans.PLANS))
def test_every_plan_builds_at_smoke_with_valid_requests(notebook):
    plan = plans.PLANS[notebook](params(notebook, "smoke"))
    assert plan.requests and all(request.total_steps() > 0 for request in plan.requests)
    for group in plan.groups.values():
        assert len({request.name for request in group}) == len(group)


def test_the_correlation_chapter_loads_what_its_plan_trained(tmp_path, monkeypatch):
    from hypernets.experiments import correlations

    monkeypatch.setenv("HYPERNETS_RUNS", str(tmp_path))
    resolved = params("weight_correlations", "smoke", correlation_methods=["bbb", "bhn"],
                      product_methods=["map", "bbb"], product_steps=5, n_train=64, n_test=32)
    plans.weight_correlations(resolved).train_all()
    weights = correlations.run_correlations(
        resolved["correlation_methods"], n_train=64, n_test=32, epochs=resolved["epochs"],
        batch_size=resolved["batch_size"], n_weight_samples=resolved["n_weight_samples"],
        n_pairs=10, seed=resolved["seed"], options=resolved["correlation_options"])
    assert all(run.loaded for run in weights.trained.values())
    product = correlations.run_product(
        resolved["product_methods"], n_points=resolved["product_points"], steps=5, n_samples=10,
        nuts={"num_chains": 2, "warmup_steps": 4, "num_samples": 4, "max_tree_depth": 2},
        seed=resolved["seed"], options=resolved["product_options"])
    assert all(run.loaded for run in product.trained.values())


@pytest.mark.parametrize("notebook", sorted(plans.PLANS))
def test_the_paper_profile_resolves_to_the_papers_schedules(notebook):
    plan = plans.PLANS[notebook](params(notebook, "paper"))
    assert all(request.device == "cpu" for request in plan.requests)  # resolves here, -p device cuda on a GPU
    epochs = {"mnist_table": 100, "adversarial": 100, "anomaly_detection": 100, "cifar5_table": 200}
    if notebook in epochs:
        steps_per_epoch = -(-len(plan.data.train) // 100)
        main = next(iter(plan.groups.values()))
        assert {request.total_steps() for request in main} == {epochs[notebook] * steps_per_epoch}


def test_estimate_times_every_run_without_storing_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HYPERNETS_RUNS", str(tmp_path))
    arguments = ["-p", "n_train", "64", "-p", "n_test", "32", "-p", "methods", "[map, ensemble]",
                 "-p", "options", str(SMALL["options"]), "-p", "detection_methods", "[map]"]
    assert runner.main(["--estimate", *arguments, "adversarial"]) == 0
    printed = capsys.readouterr().out
    assert "ms_per_step" in printed and "h still to train on this machine" in printed
    assert not any(tmp_path.iterdir())
    assert runner.main(["--train-only", "--estimate", *arguments, "adversarial"]) == 2


def test_the_diversity_chapter_loads_what_its_plan_trained(tmp_path, monkeypatch):
    from hypernets.experiments import diversity

    monkeypatch.setenv("HYPERNETS_RUNS", str(tmp_path))
    resolved = params("diversity_ablation", "smoke", toy_steps=4)
    plan = plans.diversity_ablation(resolved)
    plan.train_all()
    train, test, toys = plan.data["train"], plan.data["test"], plan.data["toys"]
    stored = {path.name for path in tmp_path.iterdir()}
    assert [g for g in plan.groups if g.startswith("ablation")] == [
        f"ablation_seed{s}" for s in resolved["seeds"]]
    for seed in resolved["seeds"]:
        diversity.run_ablation(
            train.x, train.y, test.x, test.y, epochs=resolved["epochs"],
            batch_size=resolved["batch_size"], train_samples=resolved["train_samples"],
            eval_every=resolved["eval_every"], n_predict_samples=resolved["n_predict_samples"],
            n_diversity_samples=resolved["n_diversity_samples"],
            hypergan_options=dict(resolved["hypergan_options"]), lr=resolved["lr"],
            device=resolved["device"], seed=seed, eval_batch_size=resolved["eval_batch_size"])
    assert [g for g in plan.groups if g.startswith("mi_toy")] == [
        plans.MI_TOY_GROUP.format(std, s) for std in resolved["toy_noise_stds"]
        for s in resolved["toy_seeds"]]
    diversity.run_mi_toy_study(
        resolved["toy_noise_stds"], resolved["toy_seeds"], data_seed=resolved["seed"],
        beta=resolved["mi_beta"], steps=4, train_samples=resolved["toy_train_samples"],
        eval_every=resolved["toy_eval_every"], n_samples=resolved["toy_n_samples"],
        loss_nets=resolved["loss_nets"], mi_options=dict(resolved["mi_options"]),
        lr=resolved["toy_lr"], device=resolved["device"])
    assert sorted(toys) == sorted(resolved["toy_noise_stds"])
    assert {path.name for path in tmp_path.iterdir()} == stored  # nothing new was trained


@pytest.mark.parametrize("setting", ["device", "seed", "n_train", "n_test", "epochs", "batch_size",
                                     "precision", "curve_samples", "eval_batch_size"])
def test_the_noise_ablation_shares_the_mnist_tables_bbh_run(setting):
    """Its published row is the MNIST table's Bayes by Hypernet, trained once."""
    table, noise = (load_profiles(nb)["full"] for nb in ("mnist_table", "bbh_noise"))
    assert table[setting] == noise[setting]
    assert table["options"]["bbh"] == noise["options"]["bbh"]
    assert set(noise["seeds"]) <= set(table["seeds"])


def test_the_noise_ablation_plan_keys_its_bbh_as_the_mnist_table_does():
    small = {k: v for k, v in SMALL.items() if k in load_profiles("bbh_noise")["smoke"]}
    table = keys(plans.mnist_table(params("mnist_table", "smoke", **SMALL)))
    noise = keys(plans.bbh_noise(params("bbh_noise", "smoke", **small)))
    assert sorted(noise) == sorted(["bbh", "bbh_noise1", "bbh_noise64", "bbh_indnoise1",
                                    "bbh_indnoise8", "bbh_indnoise64"])
    assert noise["bbh"] == table["bbh"]
    assert len(set(noise.values())) == 6


def test_the_result_profiles_keep_their_runs_records_beside_the_pages(tmp_path, monkeypatch,
                                                                        capsys):
    monkeypatch.setenv("HYPERNETS_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(runner, "RECORDS_DIR", tmp_path / "records")
    monkeypatch.delenv(RECORDS_ENV, raising=False)
    small = {key: str(value) for key, value in SMALL.items() if key != "options"}
    arguments = [item for key, value in small.items() for item in ("-p", key, value)]
    arguments += ["-p", "methods", "[map]", "-p", "detection_methods", "[map]", "-p", "n_detect", "8"]
    assert runner.main(["--train-only", "--profile", "full", *arguments, "adversarial"]) == 0
    assert "methods_seed0/map: trained" in capsys.readouterr().out
    assert len(list((tmp_path / "records").glob("*.json"))) == 1
    assert runner.main(["--train-only", "--profile", "full", *arguments, "adversarial"]) == 0
    assert "methods_seed0/map: recorded" in capsys.readouterr().out
    assert RECORDS_ENV not in os.environ  # only while the runner runs


def test_a_sitting_skips_the_runs_that_do_not_fit_in_its_hours(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HYPERNETS_RUNS", str(tmp_path))
    small = {key: str(value) for key, value in SMALL.items() if key != "options"}
    arguments = [item for key, value in small.items() for item in ("-p", key, value)]
    arguments += ["-p", "methods", "[map, ensemble]", "-p", "detection_methods", "[map]"]
    assert runner.main(["--train-only", "--hours", "1e-7", *arguments, "adversarial"]) == 0
    printed = capsys.readouterr().out
    assert "skipped map" in printed and "skipped ensemble" in printed
    assert "2 runs did not fit in the sitting" in printed and not list(tmp_path.glob("*/run.pt"))
    assert runner.main(["--train-only", "--hours", "1", *arguments, "adversarial"]) == 0
    assert "methods_seed0/ensemble: trained" in capsys.readouterr().out
    assert runner.main(["--hours", "1", *arguments, "adversarial"]) == 2
    assert "--hours needs --train-only" in capsys.readouterr().err
