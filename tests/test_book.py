"""Tests of the book pipeline: profiles and setup (hypernets.book), the runner (hypernets.runner)."""

import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from hypernets import book, numerics, runner

TOY_PROFILES = """
smoke:
  device: cpu
  seed: 3
  steps: 10
  learning_rate: 0.01
  layers: [8, 8]
  verbose: false
full:
  device: cuda
  seed: 3
  steps: 1000
  learning_rate: 0.001
  layers: [64, 64]
  verbose: false
"""
TOY_PARAMS = {"device": None, "seed": None, "steps": None, "learning_rate": None, "layers": None, "verbose": None}


@pytest.fixture(autouse=True)
def restore_determinism():
    """setup() switches torch to deterministic algorithms; leave other test modules as they were."""
    enabled = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(enabled)


@pytest.fixture
def toy_profiles(tmp_path, monkeypatch):
    """A profile folder holding one notebook's profiles, 'toy', instead of the package's."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "toy.yaml").write_text(TOY_PROFILES)
    monkeypatch.setattr(book, "PROFILES", folder)
    return folder


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ---------------------------------------------------------------------------------------------
# profiles and setup
# ---------------------------------------------------------------------------------------------


def test_package_profiles_load_and_data_tour_is_listed():
    assert "data_tour" in book.available_notebooks()
    profiles = book.load_profiles("data_tour")
    assert set(profiles) == {"smoke", "full", "paper"}
    assert profiles["smoke"]["device"] == "cpu"


def test_resolve_takes_profile_values_for_none(toy_profiles):
    resolved = book.resolve_parameters("toy", "smoke", **TOY_PARAMS)
    assert resolved == {
        "device": "cpu", "seed": 3, "steps": 10, "learning_rate": 0.01, "layers": (8, 8), "verbose": False,
    }


def test_explicit_values_override_and_int_is_accepted_for_float(toy_profiles):
    resolved = book.resolve_parameters(
        "toy", "smoke", **{**TOY_PARAMS, "steps": 7, "learning_rate": 1, "layers": [4], "verbose": True}
    )
    assert resolved["steps"] == 7
    assert resolved["learning_rate"] == 1.0 and isinstance(resolved["learning_rate"], float)
    assert resolved["layers"] == (4,)
    assert resolved["verbose"] is True


def test_unknown_profile_lists_profiles(toy_profiles):
    with pytest.raises(ValueError, match=r"unknown profile 'huge'.*smoke, full"):
        book.resolve_parameters("toy", "huge", **TOY_PARAMS)


def test_unknown_parameter_is_named_with_the_valid_ones(toy_profiles):
    with pytest.raises(ValueError, match=r"unknown parameter\(s\) epochs.*valid parameters: device, layers"):
        book.resolve_parameters("toy", "smoke", **TOY_PARAMS, epochs=3)


def test_parameter_of_the_profile_not_passed_is_an_error(toy_profiles):
    params = dict(TOY_PARAMS)
    del params["steps"]
    with pytest.raises(ValueError, match=r"steps of hypernets/profiles/toy.yaml were not passed"):
        book.resolve_parameters("toy", "smoke", **params)


@pytest.mark.parametrize(
    "name, value",
    [("steps", 2.5), ("steps", True), ("learning_rate", "fast"), ("verbose", 1), ("layers", 8), ("device", 0)],
)
def test_wrong_type_is_an_error_naming_the_parameter(toy_profiles, name, value):
    with pytest.raises(TypeError, match=rf"parameter '{name}'"):
        book.resolve_parameters("toy", "smoke", **{**TOY_PARAMS, name: value})


def test_unknown_notebook_lists_the_known_ones(toy_profiles):
    with pytest.raises(ValueError, match=r"no profile file for notebook 'nope'.*toy"):
        book.load_profiles("nope")


@pytest.mark.parametrize(
    "content, message",
    [
        ("smoke: {seed: 0}\n", "lacks device"),
        ("smoke: {device: cpu, seed: 0, a: 1}\nfull: {device: cpu, seed: 0, b: 1}\n", "different parameters"),
        ("smoke: {device: cpu, seed: 0.5}\n", "expected an integer"),
        ("- smoke\n", "must map profile names"),
    ],
)
def test_malformed_profile_file_is_reported(toy_profiles, content, message):
    (toy_profiles / "bad.yaml").write_text(content)
    with pytest.raises(ValueError, match=message):
        book.load_profiles("bad")


def test_cuda_without_cuda_is_an_error_not_a_fallback(toy_profiles, no_cuda):
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        book.setup("toy", "full", **TOY_PARAMS)


def test_bad_device_names_are_errors():
    with pytest.raises(ValueError, match="not a torch device"):
        book.check_device("gpu please")
    with pytest.raises(ValueError, match="not supported"):
        book.check_device("meta")


def test_setup_seeds_everything_deterministically(toy_profiles):
    def draw(seed):
        book.setup("toy", "smoke", **{**TOY_PARAMS, "seed": seed})
        return random.random(), np.random.rand(), torch.rand(3)

    first, again, other = draw(5), draw(5), draw(6)
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])
    assert first[0] != other[0] and first[1] != other[1] and not torch.equal(first[2], other[2])
    assert torch.are_deterministic_algorithms_enabled()


def test_smoke_runs_on_one_thread_and_the_other_profiles_on_every_core(toy_profiles, monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # the test's own threads stay
    calls = []
    monkeypatch.setattr(book, "seed_everything",
                        lambda seed, device, single_thread: calls.append(single_thread))
    book.setup("toy", "smoke", **TOY_PARAMS)
    book.setup("toy", "full", **{**TOY_PARAMS, "device": "cpu"})
    assert calls == [True, False] and torch.get_num_threads() == threads


def test_run_config_is_read_only_with_attribute_access(toy_profiles, capsys):
    cfg = book.setup("toy", "smoke", **{**TOY_PARAMS, "steps": 4})
    assert (cfg.notebook, cfg.profile, cfg.steps, cfg.layers) == ("toy", "smoke", 4, (8, 8))
    assert cfg.as_dict()["steps"] == 4 and "profile" not in cfg.as_dict()
    with pytest.raises(AttributeError, match="read-only"):
        cfg.steps = 5
    with pytest.raises(AttributeError, match="no parameter 'epochs'"):
        cfg.epochs
    with pytest.raises(AttributeError, match="no parameter 'torch_device'"):
        cfg.torch_device  # removed: nothing used it
    header = capsys.readouterr().out
    for expected in ("toy", "smoke", "cpu", "commit", torch.__version__):
        assert expected in header


def test_summary_prints_rounded_table_and_finish_writes_results(toy_profiles, tmp_path, monkeypatch, capsys):
    results_path = tmp_path / "out" / "toy.json"
    monkeypatch.setenv(book.RESULTS_ENV, str(results_path))
    cfg = book.setup("toy", "smoke", **TOY_PARAMS)
    capsys.readouterr()
    table = pd.DataFrame({"method": ["a", "b"], "accuracy": [0.12345, float("nan")]}).set_index("method")
    cfg.summary(table, decimals=2, name="scores")
    printed = capsys.readouterr().out
    assert printed == table.round(2).to_string() + "\n"
    assert "0.12" in printed and "0.123" not in printed
    cfg.finish()
    assert "Wall time:" in capsys.readouterr().out
    results = json.loads(results_path.read_text())
    assert results["summaries"] == [
        {"name": "scores", "decimals": 2, "records": [{"method": "a", "accuracy": 0.12}, {"method": "b", "accuracy": None}]}
    ]
    assert results["parameters"]["layers"] == [8, 8]
    assert (results["profile"], results["device"], results["torch_version"]) == ("smoke", "cpu", torch.__version__)
    assert results["wall_time_s"] >= 0 and results["commit"]


def test_the_runs_a_page_used_go_into_its_results_with_their_store_keys(toy_profiles, tmp_path,
                                                                      monkeypatch):
    from types import SimpleNamespace

    results_path = tmp_path / "toy.json"
    monkeypatch.setenv(book.RESULTS_ENV, str(results_path))
    cfg = book.setup("toy", "smoke", **TOY_PARAMS)
    run = SimpleNamespace(key="ab" * 32, train_time_s=12.34, source="store",
                          history=[{"epoch": 1, "step": 5}, {"epoch": 2, "step": 10}],
                          trained_with={"device": "a CPU", "threads": 2})
    table = cfg.record_runs({"map": run})
    assert table.to_dict(orient="records") == [
        {"run": "map", "key": "ab" * 32, "train_time_s": 12.3, "epochs": 2, "steps": 10,
         "source": "store", "trained_on": "a CPU, 2 threads"}]
    assert list(cfg.record_runs({"map": run}, seed=3)["run"]) == ["map (seed 3)"]
    cfg.finish()
    recorded = json.loads(results_path.read_text())["runs"]
    assert recorded["map"]["key"] == "ab" * 32 and recorded["map (seed 3)"]["key"] == "ab" * 32


def test_finish_writes_nothing_without_results_variable(toy_profiles, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(book.RESULTS_ENV, raising=False)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    book.setup("toy", "smoke", **TOY_PARAMS).finish()
    assert "Results written" not in capsys.readouterr().out
    assert list(workdir.iterdir()) == []


def test_summary_requires_a_data_frame(toy_profiles):
    cfg = book.setup("toy", "smoke", **TOY_PARAMS)
    with pytest.raises(TypeError, match="DataFrame"):
        cfg.summary({"a": 1})


def test_git_commit_marks_dirty_sources_but_not_run_outputs(tmp_path):
    assert book.git_commit(tmp_path) == "unknown"

    def git(*args):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True, capture_output=True
        )

    (tmp_path / "book").mkdir()
    (tmp_path / "lib.py").write_text("a = 1\n")
    (tmp_path / "book" / "page.ipynb").write_text("{}")
    git("init", "-q")
    git("add", ".")
    git("commit", "-q", "-m", "start")
    clean = book.git_commit(tmp_path)
    assert len(clean) >= 7 and all(c in "0123456789abcdef" for c in clean)
    (tmp_path / "book" / "page.ipynb").write_text('{"cells": []}')
    (tmp_path / "tests" / "notebooks").mkdir(parents=True)
    (tmp_path / "tests" / "notebooks" / "page.ipynb").write_text("{}")
    (tmp_path / "book" / "records").mkdir()
    (tmp_path / "book" / "records" / "key.json").write_text("{}")
    assert book.git_commit(tmp_path) == clean
    (tmp_path / "lib.py").write_text("a = 2\n")
    assert book.git_commit(tmp_path) == clean + "+dirty"


# ---------------------------------------------------------------------------------------------
# parameter rules
# ---------------------------------------------------------------------------------------------


def _profile_values(notebook, profile="smoke", **overrides):
    values = {name: None for name in book.load_profiles(notebook)[profile]}
    return {**values, **overrides}


@pytest.mark.parametrize("notebook", book.available_notebooks())
def test_every_profile_passes_the_parameter_rules(notebook):
    for profile in book.load_profiles(notebook):
        resolved = book.resolve_parameters(notebook, profile, **_profile_values(notebook, profile))
        assert set(resolved) == set(book.load_profiles(notebook)[profile])


@pytest.mark.parametrize(
    "notebook, name, value, message",
    [
        ("adversarial", "epochs", 0, r"parameter 'epochs' must be an integer >= 1, got 0"),
        ("adversarial", "detection_methods", ["bhn"], r"parameter 'detection_methods' names \['bhn'\], "
                                                      r"which are not in parameter 'methods'"),
        ("adversarial", "n_detect", 31, r"parameter 'n_detect' must be an integer in \[1, 30\].*at most parameter 'n_test'"),
        ("adversarial", "detection_epsilons", [0.0], r"every entry of parameter 'detection_epsilons' must be"),
        ("bhn_couplings", "couplings", [2, 2], r"parameter 'couplings' lists 2 more than once"),
        ("bhn_couplings", "train_sizes", [60001], r"must be an integer in \[1, 60000\]"),
        ("bhn_couplings", "baselines", ["bogus"], r"every entry of parameter 'baselines' must be one of"),
        ("mnist_table", "n_train", 60001, r"parameter 'n_train' must be an integer in \[1, 60000\].*MNIST has 60,000"),
        ("mnist_table", "n_train", 0, r"parameter 'n_train' must be an integer in \[1, 60000\], got 0"),
        ("anomaly_detection", "n_test", 10001, r"parameter 'n_test' must be an integer in \[1, 10000\]"),
        ("cifar5_table", "n_train", 25001, r"in \[1, 25000\], got 25001 \(CIFAR-5 has 25,000 training images\)"),
        ("cifar5_table", "n_test", 5001, r"parameter 'n_test' must be an integer in \[1, 5000\]"),
        ("mnist_table", "n_samples", 0, r"parameter 'n_samples' must be an integer >= 1"),
        ("mnist_table", "batch_size", 0, r"parameter 'batch_size' must be an integer >= 1"),
        ("mnist_table", "eval_batch_size", 0, r"parameter 'eval_batch_size' must be an integer >= 1"),
        ("data_tour", "seed", -1, r"parameter 'seed' must be an integer in \[0, 4294967295\], got -1"),
        ("data_tour", "seed", 2**32, r"parameter 'seed' must be an integer in \[0, 4294967295\]"),
        ("data_tour", "n_per_class", 0, r"parameter 'n_per_class' must be an integer >= 1"),
        ("adversarial", "epsilons", [0.1, 1.5],
         r"every entry of parameter 'epsilons' must be a finite number in \[0, 1\]"),
        ("adversarial", "epsilons", [], r"parameter 'epsilons' must list at least one number"),
        ("mnist_table", "methods", [], r"parameter 'methods' must list at least one run name"),
        ("mnist_table", "methods", ["map", "bogus"],
         r"every entry of parameter 'methods' must be one of .*got 'bogus'"),
        ("mnist_table", "methods", ["map", "map"], r"parameter 'methods' lists map more than once"),
        ("mnist_table", "options", {"typo": {"lr": 0.1}}, r"parameter 'options' names run\(s\) typo that are neither"),
        ("mnist_table", "options", {"bbh": {"lr": 0}},
         r"parameter 'options'\['bbh'\]\['lr'\] must be a finite number.*got 0"),
        ("mnist_table", "options", {"map": {"epochs": 0}},
         r"parameter 'options'\['map'\]\['epochs'\] must be an integer >= 1"),
        ("mnist_table", "options", {"hypergan": {"hiden": 16}},
         r"has option\(s\) hiden that method 'hypergan' does not take"),
        ("mnist_table", "options", {"v": {"method": "nope"}}, r"parameter 'options'\['v'\]\['method'\] must be one of"),
        ("mnist_table", "options", {"bbh": 3}, r"parameter 'options'\['bbh'\] must be a mapping"),
        ("mnist_table", "target", "cifar_resnet",
         r"parameter 'target' must be one of .*'lenet'.*'mnist_mlp'.*got 'cifar_resnet'"),
        ("mnist_table", "architecture_options", {"n_chunks": 0},
         r"'architecture_options'\['n_chunks'\] must be an integer >= 1"),
        ("cifar5_table", "units_per_stage", 0, r"parameter 'units_per_stage' must be an integer >= 1"),
        ("anomaly_detection", "n_nets", [2, 0], r"every entry of parameter 'n_nets' must be an integer >= 1"),
        ("anomaly_detection", "held_out_classes", [0, 10],
         r"every entry of parameter 'held_out_classes' must be an integer in \[0, 9\]"),
        ("anomaly_detection", "held_out_classes", [1, 1], r"parameter 'held_out_classes' lists 1 more than once"),
        ("anomaly_detection", "held_out_methods", ["bogus"],
         r"every entry of parameter 'held_out_methods' must be one of"),
        ("anomaly_detection", "held_out_epochs", 0, r"parameter 'held_out_epochs' must be an integer >= 1"),
        ("diversity_ablation", "lr", -0.1,
         r"parameter 'lr' must be a finite number.*got -0.1 \(null: the method's default\)"),
        ("diversity_ablation", "toy_lr", 0, r"parameter 'toy_lr' must be a finite number.*got 0"),
        ("diversity_ablation", "train_samples", 1, r"parameter 'train_samples' must be an integer >= 2"),
        ("diversity_ablation", "toy_train_samples", 1, r"parameter 'toy_train_samples' must be an integer >= 2"),
        ("diversity_ablation", "eval_every", 0, r"parameter 'eval_every' must be an integer >= 1"),
        ("diversity_ablation", "toy_eval_every", 0, r"parameter 'toy_eval_every' must be an integer >= 1"),
        ("diversity_ablation", "toy_steps", 0, r"parameter 'toy_steps' must be an integer >= 1"),
        ("diversity_ablation", "n_predict_samples", 0, r"parameter 'n_predict_samples' must be an integer >= 1"),
        ("diversity_ablation", "n_diversity_samples", 1, r"parameter 'n_diversity_samples' must be an integer >= 2"),
        ("diversity_ablation", "toy_n_samples", 1, r"parameter 'toy_n_samples' must be an integer >= 2"),
        ("diversity_ablation", "accuracy_tolerance", 1.5,
         r"parameter 'accuracy_tolerance' must be a finite number in \[0, 1\]"),
        ("diversity_ablation", "significant_ratio", 1.0,
         r"parameter 'significant_ratio' must be a finite number in \(0, 1\)"),
        ("diversity_ablation", "mi_beta", 0.0, r"parameter 'mi_beta' must be a finite number.*got 0.0"),
        ("diversity_ablation", "mi_options", {"beta": 3.0}, r"parameter 'mi_options' must not set beta"),
        ("diversity_ablation", "hypergan_options", {"use_mixer": False}, r"'hypergan_options' must not set use_mixer"),
        ("diversity_ablation", "hypergan_options", {"widht": 3},
         r"has option\(s\) widht that method 'hypergan' does not"),
        ("toy_variance", "steps", 0, r"parameter 'steps' must be an integer >= 1"),
        ("toy_variance", "noise_stds", [3.0, 0.0],
         r"every entry of parameter 'noise_stds' must be a finite number.*got 0.0"),
        ("toy_variance", "targets", ["toy_bbh", "toy_bbh"],
         r"parameter 'targets' must name one target network per entry"),
        ("toy_variance", "targets", ["lenet"],
         r"every entry of parameter 'targets' must be one of .*'toy_bbh'.*got 'lenet'"),
        ("toy_variance", "prior_std", 0.0, r"parameter 'prior_std' must be a finite number.*got 0.0"),
        ("toy_variance", "nuts_processes", -1, r"parameter 'nuts_processes' must be an integer >= 0"),
        ("toy_variance", "n_held_out", 0, r"parameter 'n_held_out' must be an integer >= 1"),
        ("toy_variance", "coverage_level", 1.0,
         r"parameter 'coverage_level' must be a finite number in \(0, 1\).*central predictive interval"),
        ("toy_variance", "match_factor", 1.0,
         r"parameter 'match_factor' must be a finite number.*got 1.0 \(a std ratio in"),
        ("toy_variance", "nuts", {"num_samples": 3}, r"'nuts'\['num_samples'\] must be an integer >= 4, got 3 \(pyro"),
        ("toy_variance", "nuts", {"num_chain": 2},
         r"parameter 'nuts' has setting\(s\) num_chain; it may set num_chains"),
        ("toy_variance", "nuts", {"target_accept_prob": 1.0},
         r"'nuts'\['target_accept_prob'\] must be a finite number in \(0, 1\)"),
        ("weight_correlations", "nuts", {"num_chains": 3, "num_samples": 10},
         r"'nuts'\['num_chains'\] must be an even integer >= 2"),
        ("weight_correlations", "correlation_methods", ["map", "bbh"], r"lists 'map', a MAP run: one net cannot give"),
        ("weight_correlations", "n_weight_samples", 2, r"parameter 'n_weight_samples' must be an integer >= 3"),
        ("weight_correlations", "n_pairs", 0, r"parameter 'n_pairs' must be an integer >= 1"),
        ("weight_correlations", "product_points", 0, r"parameter 'product_points' must be an integer >= 1"),
        ("weight_correlations", "product_steps", 0, r"parameter 'product_steps' must be an integer >= 1"),
        ("weight_correlations", "product_samples", 0, r"parameter 'product_samples' must be an integer >= 1"),
        ("weight_correlations", "product_methods", ["bbh", "bogus"], r"every entry of parameter 'product_methods'"),
        ("weight_correlations", "product_options", {"bogus": {}}, r"parameter 'product_options' names run\(s\) bogus"),
    ],
)
def test_bad_values_are_refused_by_the_rules(notebook, name, value, message):
    with pytest.raises(ValueError, match=message):
        book.resolve_parameters(notebook, "smoke", **_profile_values(notebook, **{name: value}))


def test_one_name_follows_the_data_set_of_its_notebook():
    resolved = book.resolve_parameters("mnist_table", "smoke", **_profile_values("mnist_table", n_train=60000))
    assert resolved["n_train"] == 60000
    with pytest.raises(ValueError, match=r"CIFAR-5 has 25,000"):
        book.resolve_parameters("cifar5_table", "smoke", **_profile_values("cifar5_table", n_train=30000))


def test_runs_that_the_options_define_with_a_method_are_known_run_names():
    values = _profile_values("mnist_table", methods=["map", "bbh_wide"],
                             options={"bbh_wide": {"method": "bbh", "train_samples": 2, "lr": 0.01}})
    assert book.resolve_parameters("mnist_table", "smoke", **values)["methods"] == ("map", "bbh_wide")
    values["options"] = {"bbh_wide": {"train_samples": 2}}
    with pytest.raises(ValueError, match=r"runs that parameter 'options' defines with a 'method' key"):
        book.resolve_parameters("mnist_table", "smoke", **values)


def test_an_ensemble_needs_as_many_members_as_the_weight_samples_it_is_tested_with():
    values = _profile_values("weight_correlations", correlation_methods=["ensemble"], n_weight_samples=4,
                             correlation_options={"ensemble": {"n_members": 3}})
    with pytest.raises(ValueError, match=r"an ensemble of 3 members: fewer than the n_weight_samples=4"):
        book.resolve_parameters("weight_correlations", "smoke", **values)
    values["correlation_options"] = {"ensemble": {"n_members": 4}}
    book.resolve_parameters("weight_correlations", "smoke", **values)


def test_the_toys_scaling_switch_is_a_bool():
    values = _profile_values("toy_variance")
    assert book.resolve_parameters("toy_variance", "smoke", **{**values, "standardize": False})["standardize"] is False
    with pytest.raises(TypeError, match=r"parameter 'standardize' = 'yes' has type str; expected bool"):
        book.resolve_parameters("toy_variance", "smoke", **{**values, "standardize": "yes"})
    with pytest.raises(TypeError, match=r"parameter 'standardize' = 1 has type int; expected bool"):
        book.resolve_parameters("toy_variance", "smoke", **{**values, "standardize": 1})


def test_a_null_profile_value_keeps_its_declared_type():
    assert book.load_profiles("diversity_ablation")["full"]["lr"] is None
    values = _profile_values("diversity_ablation", "full")
    assert book.resolve_parameters("diversity_ablation", "full", **values)["lr"] is None
    resolved = book.resolve_parameters("diversity_ablation", "full", **{**values, "lr": 1})
    assert resolved["lr"] == 1.0 and isinstance(resolved["lr"], float)
    with pytest.raises(TypeError, match=r"parameter 'lr' = 'fast' has type str; expected float"):
        book.resolve_parameters("diversity_ablation", "full", **{**values, "lr": "fast"})


def test_a_null_profile_value_without_a_declared_type_is_an_error(toy_profiles):
    (toy_profiles / "toy.yaml").write_text(TOY_PROFILES.replace("verbose: false", "verbose: null"))
    with pytest.raises(ValueError, match=r"toy.yaml, profile 'smoke' sets 'verbose' to null, but no rule declares"):
        book.resolve_parameters("toy", "smoke", **{**TOY_PARAMS, "verbose": True})


@pytest.mark.parametrize(
    "replaced, error, message",
    [
        ("steps: 10", ValueError, r"toy.yaml, profile 'smoke': parameter 'steps' must be an integer >= 1, got 0"),
        ("seed: 3", ValueError, r"toy.yaml, profile 'smoke': parameter 'seed' must be an integer in \[0, 4294967295\]"),
        ("steps: 10", TypeError, r"toy.yaml, profile 'smoke': parameter 'steps' = 'ten' has type str; expected int"),
    ],
)
def test_the_profiles_own_values_are_checked_and_the_file_is_named(toy_profiles, replaced, error, message):
    value = {"steps: 10": "0" if error is ValueError else "ten", "seed: 3": "-3"}[replaced]
    key = replaced.split(":")[0]
    (toy_profiles / "toy.yaml").write_text(TOY_PROFILES.replace(replaced, f"{key}: {value}", 1))
    with pytest.raises(error, match=message):
        book.resolve_parameters("toy", "smoke", **TOY_PARAMS)
    with pytest.raises(error, match=message):
        book.setup("toy", "smoke", **TOY_PARAMS)


def test_finish_under_the_runner_writes_to_scratch_and_names_the_destination(toy_profiles, tmp_path, monkeypatch,
                                                                            capsys):
    scratch, destination = tmp_path / "scratch" / "toy.json", tmp_path / "book" / "results" / "toy.json"
    monkeypatch.setenv(book.RESULTS_ENV, str(scratch))
    monkeypatch.setenv(book.RESULTS_DESTINATION_ENV, str(destination))
    book.setup("toy", "smoke", **TOY_PARAMS).finish()
    assert f"Results written to {destination}\n" in capsys.readouterr().out
    assert json.loads(scratch.read_text())["notebook"] == "toy"
    assert not destination.exists()


# ---------------------------------------------------------------------------------------------
# runner
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, value",
    [("True", True), ("False", False), ("None", None), ("3", 3), ("0.5", 0.5), ("1e-3", 0.001),
     ("cuda", "cuda"), ("[1, 2]", [1, 2]), ("true", True), ("null", "null"), ("", ""),
     ("{bbh: {lr: 0.001}}", {"bbh": {"lr": 0.001}})],
)
def test_parse_value_reads_like_papermill(text, value):
    assert runner.parse_value(text) == value
    assert type(runner.parse_value(text)) is type(value)


def _toy_notebook(path, body="print('value', round(seed * 0.1234567, 3))", tags=("nbval-check-output",)):
    nb = new_notebook(
        cells=[
            new_markdown_cell("# Toy"),
            new_code_cell("profile = 'smoke'\ndevice = None\nseed = None\nsteps = None", metadata={"tags": ["parameters"]}),
            new_code_cell("seed = 3 if seed is None else seed"),
            new_code_cell(body, metadata={"tags": list(tags)}),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


@pytest.fixture
def runner_profiles(tmp_path, monkeypatch):
    folder = tmp_path / "profiles"
    folder.mkdir()
    (folder / "toy.yaml").write_text("smoke: {device: cpu, seed: 3, steps: 2}\nfull: {device: cuda, seed: 3, steps: 9}\n")
    monkeypatch.setattr(book, "PROFILES", folder)
    return folder


@pytest.fixture
def never_execute(monkeypatch):
    def fail(plan):
        raise AssertionError(f"{plan.source} was executed although the arguments are invalid")

    monkeypatch.setattr(runner, "execute", fail)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["-p", "epochs", "3"], "has no parameter(s) epochs; its parameters: device, seed, steps"),
        (["-p", "steps", "many"], "parameter 'steps' = 'many' has type str"),
        (["--profile", "huge"], "unknown profile 'huge'"),
        (["--seed", "1.5"], "parameter 'seed' = 1.5 has type float"),
        (["--device", "cuda"], "CUDA is not available"),
    ],
)
def test_runner_rejects_bad_arguments_before_executing(
    tmp_path, runner_profiles, never_execute, no_cuda, capsys, arguments, message
):
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    assert runner.main([*arguments, str(notebook)]) == 2
    assert message in capsys.readouterr().err


def test_runner_rejects_unknown_notebook_and_missing_selection(never_execute, capsys):
    assert runner.main(["no_such_notebook"]) == 2
    assert "data_tour" in capsys.readouterr().err
    for arguments in ([], ["--all", "data_tour"], ["-p", "profile", "full", "data_tour"]):
        with pytest.raises(SystemExit) as stopped:
            runner.main(arguments)
        assert stopped.value.code == 2


def test_parameters_cell_and_profile_file_must_agree(tmp_path, runner_profiles, never_execute, capsys):
    (runner_profiles / "toy.yaml").write_text("smoke: {device: cpu, seed: 3, epochs: 2}\n")
    assert runner.main([str(_toy_notebook(tmp_path / "toy.ipynb"))]) == 2
    assert "disagree on epochs, steps" in capsys.readouterr().err


def test_plan_routes_smoke_to_references_and_full_to_the_book(tmp_path, runner_profiles, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    smoke = runner.plan_run(notebook, "smoke", {}, None)
    assert smoke.output == runner.REFERENCE_DIR / "toy.ipynb" and smoke.results is None
    full = runner.plan_run(notebook, "full", {"seed": "4"}, None)
    assert full.output == runner.BOOK_DIR / "toy.ipynb"
    assert full.results == runner.BOOK_DIR / "results" / "toy.json"
    assert full.resolved == {"device": "cuda", "seed": 4, "steps": 9}
    assert full.command.startswith("hypernets-run --profile full --seed 4 ")


def test_a_mapping_parameter_can_be_replaced_from_the_command_line(tmp_path, runner_profiles):
    (runner_profiles / "toy.yaml").write_text(
        "smoke: {device: cpu, seed: 3, steps: 2, options: {bbh: {lr: 0.1}, map: {lr: 0.2}}}\n"
    )
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells[1].source += "\noptions = None"
    nbformat.write(nb, str(notebook))
    plan = runner.plan_run(notebook, "smoke", {"options": "{bbh: {lr: 0.001}}"}, None)
    assert plan.resolved["options"] == {"bbh": {"lr": 0.001}}
    assert "-p options '{bbh: {lr: 0.001}}'" in plan.command
    with pytest.raises(runner.RunnerError, match="parameter 'steps' = {'a': 1} has type dict"):
        runner.plan_run(notebook, "smoke", {"steps": "{a: 1}"}, None)


def test_only_runs_below_full_are_marked_as_previews(tmp_path, runner_profiles, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    full = runner.run_info_markdown(runner.plan_run(notebook, "full", {}, None), "abc1234", 12.0, "2026-01-01")
    smoke = runner.run_info_markdown(runner.plan_run(notebook, "smoke", {}, None), "abc1234", 1.0, "2026-01-01")
    assert "Preview" not in full and full.startswith("| profile |")
    assert smoke.startswith("```{warning}") and "`smoke` profile, not at `full`" in smoke
    assert "| profile |" in smoke and "Rerun with `hypernets-run --profile smoke" in smoke


def test_source_hash_ignores_outputs_ids_and_metadata_but_not_source_or_tags(tmp_path):
    path = _toy_notebook(tmp_path / "toy.ipynb")
    original = runner.source_sha256(path)
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="value 0.37\n")]
    nb.cells[3].execution_count = 4
    nb.cells[3].id = "another-id"
    nb.cells[3].metadata["collapsed"] = True
    nb.metadata["papermill"] = {"duration": 1.0}
    assert runner.source_sha256(nb) == original
    retagged = nbformat.read(str(path), as_version=4)
    retagged.cells[3].metadata["tags"] = []
    assert runner.source_sha256(retagged) != original
    edited = nbformat.read(str(path), as_version=4)
    edited.cells[2].source += "\n"
    assert runner.source_sha256(edited) != original


def test_runner_executes_records_and_nbval_catches_a_changed_number(tmp_path, runner_profiles, scratch_root):
    """One real run (kernel and all), then nbval on its output: unchanged passes, a changed number fails."""
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    out_dir = tmp_path / "out"
    assert runner.main(["--seed", "2", "--output-dir", str(out_dir), str(notebook)]) == 0
    assert list(scratch_root.iterdir()) == [] and [path.name for path in out_dir.iterdir()] == ["toy.ipynb"]
    executed = nbformat.read(str(out_dir / "toy.ipynb"), as_version=4)
    meta = executed.metadata["hypernets"]
    assert meta["source_sha256"] == runner.source_sha256(notebook)
    assert (meta["profile"], meta["device"], meta["parameters"]) == ("smoke", "cpu", {"device": "cpu", "seed": 2, "steps": 2})
    assert meta["wall_time_s"] > 0 and meta["commit"]
    info = executed.cells[1]
    assert info.cell_type == "markdown" and info.metadata["tags"] == [runner.RUN_INFO_TAG]
    assert "`smoke`" in info.source and "--seed 2" in info.source
    assert "Preview, not a result" in info.source and "hypernets-run --profile full toy" in info.source
    assert executed.cells[0].source == "# Toy"
    checked = next(cell for cell in executed.cells if "nbval-check-output" in cell.metadata.get("tags", []))
    assert checked.outputs[0].text == "value 0.247\n"

    def nbval(path):
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax", "--nbval-current-env",
             str(path)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )

    passed = nbval(out_dir / "toy.ipynb")
    assert passed.returncode == 0, passed.stdout
    checked.outputs[0].text = "value 0.248\n"
    tampered = tmp_path / "tampered" / "toy.ipynb"
    tampered.parent.mkdir()
    nbformat.write(executed, str(tampered))
    failed = nbval(tampered)
    assert failed.returncode == 1 and "0.248" in failed.stdout


def test_smoke_kernels_run_in_portable_numerics_and_the_runner_restores_the_environment(
    tmp_path, runner_profiles, scratch_root
):
    (runner_profiles / "toy.yaml").write_text("smoke: {device: cpu, seed: 3, steps: 2}\nfull: {device: cpu, seed: 3, steps: 9}\n")
    probe = ("import torch, hypernets; print('mkldnn', torch.backends.mkldnn.enabled, "
             "torch.backends.cpu.get_cpu_capability())")
    notebook = _toy_notebook(tmp_path / "toy.ipynb", body=f"{probe}\n{FINISH}")  # a full run writes results
    seen = {}
    for profile in ("smoke", "full"):
        out_dir = tmp_path / profile
        assert runner.main(["--profile", profile, "--output-dir", str(out_dir), str(notebook)]) == 0
        executed = nbformat.read(str(out_dir / "toy.ipynb"), as_version=4)
        checked = next(cell for cell in executed.cells if "nbval-check-output" in cell.metadata.get("tags", []))
        seen[profile] = (executed.metadata["hypernets"]["numerics"], checked.outputs[0].text.splitlines()[0].split())
        assert numerics.PORTABLE_ENV_FLAG not in os.environ
    assert seen["smoke"] == ("portable", ["mkldnn", "False", "AVX2"])
    assert seen["full"][0] == "native" and seen["full"][1][:2] == ["mkldnn", "True"]


def test_failed_run_keeps_the_previous_copy(tmp_path, runner_profiles, scratch_root, capsys):
    notebook = _toy_notebook(tmp_path / "toy.ipynb", body=textwrap.dedent("raise ValueError('boom')"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "toy.ipynb").write_text("previous")
    assert runner.main(["--output-dir", str(out_dir), str(notebook)]) == 2
    err = capsys.readouterr().err
    (scratch,) = scratch_root.iterdir()
    assert "ValueError: boom" in err and f"the scratch copy is kept in {scratch}" in err
    assert (out_dir / "toy.ipynb").read_text() == "previous"


# ---------------------------------------------------------------------------------------------
# runner: pre-flight checks of the command line, the notebook file and the output folder
# ---------------------------------------------------------------------------------------------


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("hypernets-run: error: "), err
    return err


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["-p", "steps", "0"], "parameter 'steps' must be an integer >= 1, got 0"),
        (["--seed", "-1"], "parameter 'seed' must be an integer in [0, 4294967295], got -1"),
        (["-p", "steps", "{bbh: [1"], "-p steps: '{bbh: [1' is not valid YAML (expected ',' or ']'"),
        (["--seed", "[1"], "--seed: '[1' is not valid YAML"),
    ],
)
def test_runner_rejects_bad_values_and_malformed_yaml_in_one_line(
    tmp_path, runner_profiles, never_execute, capsys, arguments, message
):
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    assert runner.main([*arguments, str(notebook)]) == 2
    assert message in _one_line_error(capsys)


def test_malformed_yaml_of_a_mapping_parameter_names_the_parameter(tmp_path, runner_profiles, never_execute, capsys):
    (runner_profiles / "toy.yaml").write_text("smoke: {device: cpu, seed: 3, steps: 2, options: {}}\n")
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells[1].source += "\noptions = None"
    nbformat.write(nb, str(notebook))
    assert runner.main(["-p", "options", "{bbh: [1", str(notebook)]) == 2
    err = _one_line_error(capsys)
    assert "-p options: '{bbh: [1' is not valid YAML" in err and "expected a value like papermill's -p" in err


@pytest.mark.parametrize("content", [b"not a notebook", b"\xff\xfe\x00garbage", b'{"cells": 3}'])
def test_an_unreadable_notebook_is_a_one_line_error(tmp_path, runner_profiles, never_execute, capsys, content):
    notebook = tmp_path / "toy.ipynb"
    notebook.write_bytes(content)
    assert runner.main([str(notebook)]) == 2
    err = _one_line_error(capsys)
    assert f"cannot read notebook {notebook}" in err and "expected a readable Jupyter notebook" in err


def test_an_output_dir_that_is_a_file_or_lies_under_one_is_refused(tmp_path, runner_profiles, never_execute, capsys):
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    a_file = tmp_path / "page.txt"
    a_file.write_text("x")
    assert runner.main(["--output-dir", str(a_file), str(notebook)]) == 2
    assert f"--output-dir {a_file} is not a folder" in _one_line_error(capsys)
    assert runner.main(["--output-dir", str(a_file / "sub"), str(notebook)]) == 2
    assert f"--output-dir {a_file / 'sub'} cannot be created: {a_file} is not a folder" in _one_line_error(capsys)


def test_an_unwritable_output_dir_is_refused(tmp_path, runner_profiles, never_execute, monkeypatch, capsys):
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Tests may run as root, for whom permission bits do not stop writes: deny by path instead.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    assert runner.main(["--output-dir", str(locked), str(notebook)]) == 2
    assert f"--output-dir {locked} is not writable" in _one_line_error(capsys)
    assert runner.main(["--output-dir", str(locked / "new"), str(notebook)]) == 2
    assert f"cannot be created: {locked} is not writable" in _one_line_error(capsys)


# ---------------------------------------------------------------------------------------------
# runner: scratch folder, and page and results published together
# ---------------------------------------------------------------------------------------------

#: A cell that writes the results JSON as a chapter's last cell does (cfg.finish()).
FINISH = ("from hypernets.book import RunConfig\n"
          "RunConfig('toy', 'full', {'device': 'cpu', 'seed': seed}, 'abc1234').finish()")


@pytest.fixture
def scratch_root(tmp_path, monkeypatch):
    """The runner's scratch folders go here instead of the system's temp folder."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def previous_run(tmp_path):
    """An output folder holding the page and results of an earlier run."""
    out_dir = tmp_path / "out"
    (out_dir / "results").mkdir(parents=True)
    (out_dir / "toy.ipynb").write_text("previous page")
    (out_dir / "results" / "toy.json").write_text('{"previous": true}')
    return out_dir


def _unchanged(out_dir):
    return ((out_dir / "toy.ipynb").read_text() == "previous page"
            and (out_dir / "results" / "toy.json").read_text() == '{"previous": true}'
            and sorted(path.name for path in out_dir.rglob("*")) == ["results", "toy.ipynb", "toy.json"])


def test_full_run_publishes_page_and_results_together_and_removes_its_scratch(
    tmp_path, runner_profiles, scratch_root, previous_run
):
    notebook = _toy_notebook(tmp_path / "toy.ipynb", body=FINISH)
    assert runner.main(["--profile", "full", "--device", "cpu", "--output-dir", str(previous_run), str(notebook)]) == 0
    results = json.loads((previous_run / "results" / "toy.json").read_text())
    assert (results["notebook"], results["profile"], results["seed"]) == ("toy", "full", 3)
    executed = nbformat.read(str(previous_run / "toy.ipynb"), as_version=4)
    assert executed.metadata["hypernets"]["profile"] == "full"
    finish_cell = next(cell for cell in executed.cells if "finish()" in cell.source)
    assert f"Results written to {previous_run / 'results' / 'toy.json'}\n" in finish_cell.outputs[-1].text
    assert list(scratch_root.iterdir()) == []
    assert sorted(path.name for path in previous_run.rglob("*")) == ["results", "toy.ipynb", "toy.json"]
    plain = tmp_path / "plain"
    plain.write_text("")
    for published in (previous_run / "toy.ipynb", previous_run / "results" / "toy.json"):
        assert published.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not mkstemp's 0600


def test_failed_run_keeps_the_previous_page_and_results_and_names_its_scratch(
    tmp_path, runner_profiles, scratch_root, previous_run, capsys
):
    notebook = _toy_notebook(tmp_path / "toy.ipynb", body=FINISH + "\nraise ValueError('boom')")
    assert runner.main(["--profile", "full", "--device", "cpu", "--output-dir", str(previous_run), str(notebook)]) == 2
    err = capsys.readouterr().err
    (scratch,) = scratch_root.iterdir()
    assert "ValueError: boom" in err and f"the scratch copy is kept in {scratch}" in err
    assert f"the partial notebook is {scratch / 'toy.ipynb'}" in err
    assert (scratch / "toy.ipynb").is_file() and json.loads((scratch / "toy.json").read_text())["notebook"] == "toy"
    assert _unchanged(previous_run)


@pytest.fixture
def fake_papermill(monkeypatch):
    """papermill.execute_notebook replaced by ``behave(output_path)``, which plays the kernel's part."""
    import papermill

    def install(behave):
        def execute_notebook(input_path, output_path, **kwargs):
            nb = nbformat.read(input_path, as_version=4)
            nbformat.write(nb, output_path)
            behave(Path(output_path))

        monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)

    return install


def test_interrupted_run_keeps_the_previous_page_and_results_and_names_its_scratch(
    tmp_path, runner_profiles, scratch_root, previous_run, fake_papermill, capsys
):
    def interrupted(output_path):
        Path(os.environ[book.RESULTS_ENV]).write_text('{"new": true}')
        raise KeyboardInterrupt

    fake_papermill(interrupted)
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    arguments = ["--profile", "full", "--device", "cpu", "--output-dir", str(previous_run), str(notebook)]
    assert runner.main(arguments) == 130
    err = capsys.readouterr().err
    (scratch,) = scratch_root.iterdir()
    assert err.startswith("hypernets-run: toy.ipynb was interrupted; ") and f"kept in {scratch}" in err
    assert (scratch / "toy.json").read_text() == '{"new": true}'
    assert _unchanged(previous_run)
    assert book.RESULTS_ENV not in os.environ and book.RESULTS_DESTINATION_ENV not in os.environ


def test_a_full_run_that_writes_no_results_publishes_nothing(
    tmp_path, runner_profiles, scratch_root, previous_run, fake_papermill, capsys
):
    fake_papermill(lambda output_path: None)
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    assert runner.main(["--profile", "full", "--device", "cpu", "--output-dir", str(previous_run), str(notebook)]) == 2
    err = capsys.readouterr().err
    assert "wrote no results (its last cell should call cfg.finish())" in err and str(scratch_root) in err
    assert _unchanged(previous_run)


def test_an_error_after_the_kernel_is_reported_with_the_scratch_too(
    tmp_path, runner_profiles, scratch_root, previous_run, fake_papermill, monkeypatch, capsys
):
    fake_papermill(lambda output_path: Path(os.environ[book.RESULTS_ENV]).write_text("{}"))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(runner, "publish", broken)
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    assert runner.main(["--profile", "full", "--device", "cpu", "--output-dir", str(previous_run), str(notebook)]) == 2
    err = capsys.readouterr().err
    (scratch,) = scratch_root.iterdir()
    assert "toy.ipynb failed: OSError: disk full" in err and f"kept in {scratch}" in err
    assert _unchanged(previous_run)


def test_publish_puts_the_previous_results_back_when_the_page_cannot_be_moved(previous_run, tmp_path, monkeypatch):
    new_results = tmp_path / "new.json"
    new_results.write_text('{"new": true}')
    page, results = previous_run / "toy.ipynb", previous_run / "results" / "toy.json"
    real_replace = os.replace

    def replace(source, destination):
        if Path(destination) == page:
            raise OSError("cannot move the page")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="cannot move the page"):
        runner.publish(new_notebook(), page, results, new_results)
    assert _unchanged(previous_run)
    monkeypatch.setattr(os, "replace", real_replace)
    runner.publish(new_notebook(), page, results, new_results)
    assert results.read_text() == '{"new": true}' and nbformat.read(str(page), as_version=4).cells == []
    assert sorted(path.name for path in previous_run.rglob("*")) == ["results", "toy.ipynb", "toy.json"]


# ---------------------------------------------------------------------------------------------
# data-tour figures
# ---------------------------------------------------------------------------------------------


def _images(name="MNIST", pixel_range=None, labels=(5, 5, 7, 7, 7)):
    from hypernets.data import ImageData

    y = torch.tensor(labels)
    x = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 4, 4) / 10
    classes = tuple(str(digit) for digit in range(10))
    return ImageData(x=x.clone(), y=y, name=name, split="test", classes=classes, source="test", lossy=False,
                     pixel_range=pixel_range)


def test_image_grid_shows_one_labelled_row_per_present_class():
    import matplotlib.pyplot as plt

    from hypernets import plots

    ax = plots.image_grid(_images(), n_per_class=2, seed=0)
    assert [label.get_text() for label in ax.get_yticklabels()] == ["5", "7"]
    mosaic = ax.get_images()[0].get_array()
    assert mosaic.shape == (2 * 4 + 2, 2 * 4 + 2)
    assert ax.get_title() == "MNIST (test)"
    plt.close(ax.figure)


def test_image_grid_refuses_classes_with_too_few_examples():
    from hypernets import plots

    with pytest.raises(ValueError, match=r"class '5' of MNIST \(test\) has 2 examples, fewer than n_per_class=3"):
        plots.image_grid(_images(), n_per_class=3)


def test_display_pixels_undoes_the_normalisation():
    from hypernets import data, plots

    raw = torch.full((1, 1, 2, 2), 0.5)
    shown = plots.display_pixels(_images(pixel_range=data.MNIST_PIXELS),
                                 (raw - data.MNIST_MEAN) / data.MNIST_STD)
    assert shown.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(shown, 0.5, atol=1e-6)
    # Any data set carries its own normalisation, so a name the library does not know works too.
    mystery = data.PixelRange((0.25,), (2.0,))
    shown = plots.display_pixels(_images(name="mystery", pixel_range=mystery), (raw - 0.25) / 2.0)
    np.testing.assert_allclose(shown, 0.5, atol=1e-6)
    np.testing.assert_allclose(plots.display_pixels(_images(), raw), 0.5)  # raw pixels as they are


def test_plot_toy_data_draws_points_and_true_function():
    import matplotlib.pyplot as plt

    from hypernets import data, plots

    toy = data.toy_regression(noise_std=3.0, n_points=7, seed=1, n_grid=50)
    ax = plots.plot_toy_data(toy)
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), toy.x_grid.flatten().numpy() ** 3, rtol=1e-5)
    assert ax.collections[0].get_offsets().shape == (7, 2)
    plt.close(ax.figure)
