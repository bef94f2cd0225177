"""Run records: a page's evaluations of a run are kept beside the page and served without the
run's weights, only for the same run and the same evaluation; a damaged record is set aside;
and the code of every versioned evaluation is pinned to its version.

``python tests/test_records.py --update`` re-records ``tests/evaluation_code.json`` after a
change to the evaluation code (raise the evaluation's version first if the change can alter a
kept value).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import pathlib
import sys
import warnings

import pytest
import torch

from hypernets import plans, records, runs, store
from hypernets.adversarial import attack_seeds
from hypernets.book import load_profiles, resolve_parameters
from hypernets.evaluation import reliability_table
from hypernets.data import CIFAR10_PIXELS
from hypernets.experiments import (adversarial, cifar, correlations, couplings, hypergan_tables,
                                   mnist)
from test_store import ROOT, _closure, _module_path, _normalised, request, same_state

RECORD = pathlib.Path(__file__).with_name("evaluation_code.json")

#: Modules whose EVALUATION_VERSIONS name evaluations that records keep.
EVALUATING_MODULES = ("hypernets.evaluation", "hypernets.adversarial",
                      "hypernets.experiments.mnist", "hypernets.experiments.adversarial",
                      "hypernets.experiments.cifar", "hypernets.experiments.hypergan_tables",
                      "hypernets.experiments.couplings", "hypernets.experiments.correlations")


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 8, 8, generator=generator)
    return x, (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()


def first_net_sum(run) -> dict:
    calls.append(run.name)
    return {"sum": float(sum(p.detach().sum() for p in run.method.parameters()))}


calls: list[str] = []


def test_a_recorded_run_is_served_without_its_weights(tmp_path, data):
    kept = records.RunRecords(tmp_path / "records")
    first = runs.train_runs([request(data)], store=store.RunStore(tmp_path / "a"), records=kept)["map"]
    calls.clear()
    value = first.evaluated("net sum", {"n": 1}, 1, lambda: first_net_sum(first))
    assert calls == ["map"] and first.in_memory

    # Another machine: an empty store, the committed records.
    second = runs.train_runs([request(data)], store=store.RunStore(tmp_path / "b"), records=kept)["map"]
    assert not second.in_memory and second.loaded and second.key == first.key
    assert (first.source, second.source) == ("trained", "record")
    assert second.history == first.history and second.train_time_s == first.train_time_s
    assert second.evaluated("net sum", {"n": 1}, 1, lambda: first_net_sum(second)) == value
    assert calls == ["map"] and not second.in_memory and not (tmp_path / "b" / first.key).exists()


@pytest.mark.parametrize("change", [{"arguments": {"n": 2}}, {"version": 2}, {"name": "other"}])
def test_another_evaluation_is_computed_from_the_run_trained_again(tmp_path, data, change):
    kept = records.RunRecords(tmp_path / "records")
    first = runs.train_runs([request(data)], store=None, records=kept)["map"]
    first.evaluated("net sum", {"n": 1}, 1, lambda: first_net_sum(first))
    second = runs.train_runs([request(data)], store=store.RunStore(tmp_path / "b"), records=kept)["map"]
    calls.clear()
    evaluation = {"name": "net sum", "arguments": {"n": 1}, "version": 1, **change}
    second.evaluated(evaluation["name"], evaluation["arguments"], evaluation["version"],
                     lambda: first_net_sum(second))
    assert calls == ["map"] and second.in_memory  # trained again, into the empty store
    assert same_state(second.method, first.method) and (tmp_path / "b" / first.key / "run.pt").exists()
    assert len(json.loads(kept.path(first.key).read_text())["evaluations"]) == 2


def untimed(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in epoch.items() if not k.startswith("time_")} for epoch in history]


def _recorded_on_another_cpu(kept, key) -> None:
    """Make ``key``'s record as if its run had been trained where kernels round differently."""
    record = json.loads(kept.path(key).read_text())
    record["history"][-1]["loss"] += 1e-6
    record["trained_with"] = {**record["trained_with"], "device": "another CPU"}
    kept._write(key, record)


@pytest.mark.parametrize("read_before", [False, True])
def test_a_run_restored_unlike_its_record_re_makes_it(tmp_path, data, read_before):
    kept = records.RunRecords(tmp_path / "records")
    first = runs.train_runs([request(data)], store=None, records=kept)["map"]
    first.evaluated("net sum", {"n": 1}, 1, lambda: first_net_sum(first))
    _recorded_on_another_cpu(kept, first.key)

    second = runs.train_runs([request(data)], store=store.RunStore(tmp_path / "b"), records=kept)["map"]
    assert untimed(second.history) != untimed(first.history) and not second.in_memory
    if read_before:  # a value of the old record, from the other CPU's training
        second.evaluated("net sum", {"n": 1}, 1, lambda: pytest.fail("it was kept"))
    calls.clear()
    with pytest.warns(RuntimeWarning, match="differs from its record"):
        if read_before:
            with pytest.raises(records.RecordRemade, match="re-made while evaluating 'net sum 2'"):
                second.evaluated("net sum 2", {"n": 1}, 1, lambda: first_net_sum(second))
        else:
            second.evaluated("net sum 2", {"n": 1}, 1, lambda: first_net_sum(second))
    assert calls == ["map"] and untimed(second.history) == untimed(first.history)

    record = json.loads(kept.path(first.key).read_text())
    assert record["history"] == runs.plain(second.history)
    assert record["trained_with"]["device"] != "another CPU"
    assert [entry["name"] for entry in record["evaluations"].values()] == ["net sum 2"]
    # The old record's value is not served again: it is computed from this training.
    calls.clear()
    second.evaluated("net sum", {"n": 1}, 1, lambda: first_net_sum(second))
    assert calls == ["map"]


def test_another_request_never_gets_a_record(tmp_path, data):
    kept = records.RunRecords(tmp_path / "records")
    first = runs.train_runs([request(data)], store=None, records=kept)["map"]
    other = runs.train_runs([request(data, seed=1)], store=None, records=kept)["map"]
    assert other.key != first.key and other.in_memory
    # A record copied under another run's key is refused, not served.
    kept.path(other.key).write_text(kept.path(first.key).read_text())
    with pytest.raises(records.RecordError, match="another request"):
        runs.train_runs([request(data, seed=1)], store=None, records=kept)


@pytest.mark.parametrize("damage", ["truncate", "edit", "empty"])
def test_a_damaged_record_is_set_aside_and_the_run_trained_again(tmp_path, data, damage):
    kept = records.RunRecords(tmp_path)
    first = runs.train_runs([request(data)], store=None, records=kept)["map"]
    path = kept.path(first.key)
    text = path.read_text()
    path.write_text({"truncate": text[: len(text) // 2],
                     "edit": text.replace('"train_time_s": ', '"train_time_s": 1'),
                     "empty": ""}[damage])
    with pytest.warns(RuntimeWarning, match="damaged"):
        again = runs.train_runs([request(data)], store=None, records=kept)["map"]
    assert again.in_memory and same_state(again.method, first.method)
    assert path.with_name(path.name + ".corrupt").exists() and kept.load(first.key, again.document)


def test_values_are_returned_as_a_record_reads_them_with_or_without_records(tmp_path, data):
    value = {"a": torch.tensor(1.5), "b": (1, 2), "c": float("nan")}
    without = runs.train_runs([request(data)], store=None, records=None)["map"]
    with_records = runs.train_runs([request(data)], store=None,
                                   records=records.RunRecords(tmp_path))["map"]
    for run in (without, with_records):
        kept = run.evaluated("value", {}, 1, lambda: value)
        assert kept["a"] == 1.5 and kept["b"] == [1, 2] and kept["c"] != kept["c"]
    with pytest.raises(ValueError, match="plain JSON"):
        with_records.evaluated("tensor", {}, 1, lambda: torch.ones(2))
    with pytest.raises(ValueError, match="None"):
        with_records.evaluated("nothing", {}, 1, lambda: None)


def test_records_come_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(records.RECORDS_ENV, raising=False)
    assert records.default_records() is None
    monkeypatch.setenv(records.RECORDS_ENV, str(tmp_path))
    assert records.default_records().root == tmp_path
    monkeypatch.setenv(records.RECORDS_ENV, " ")
    with pytest.raises(records.RecordError, match=records.RECORDS_ENV):
        records.default_records()
    (tmp_path / "file").write_text("")
    with pytest.raises(records.RecordError, match="not a folder"):
        records.RunRecords(tmp_path / "file")


def smoke_params(notebook: str, **overrides):
    names = load_profiles(notebook)["smoke"]
    return resolve_parameters(notebook, "smoke", **{name: overrides.get(name) for name in names})


SHARED = dict(seeds=[0], methods=["map", "bbh"], n_train=64, n_test=32, epochs=1)


def test_the_mnist_and_adversarial_pages_read_what_one_sitting_evaluated(tmp_path, monkeypatch):
    """One sitting trains the MNIST table's runs and evaluates each, as soon as it is trained,
    for both chapters that use it (what ``hypernets-run --train-only mnist_table adversarial``
    does); both pages, on a machine without those weights, are then served by the records."""
    monkeypatch.setenv(records.RECORDS_ENV, str(tmp_path / "records"))
    table_params = smoke_params("mnist_table", **SHARED)
    attack_params = smoke_params("adversarial", **SHARED, detection_methods=["bbh"], n_detect=8)
    chapters = [plans.mnist_table(table_params), plans.adversarial(attack_params)]
    evaluated = []

    def evaluate(run):
        evaluated.append((run.name, [chapter.evaluate_run(run) for chapter in chapters]))
        run.release()

    chapters[0].train_all(store=store.RunStore(tmp_path / "a"), after_each=evaluate)
    assert dict(evaluated) == {"map": [True, True], "bbh": [True, True],
                               "bbh_single": [True, False], "bbh_sliced": [True, False],
                               "bbh_kl_joint": [True, False]}

    empty = store.RunStore(tmp_path / "b")
    page = plans.mnist_table(table_params)
    trained = {0: page.train("table_seed0", store=empty)}
    variants = {0: page.train("architecture_seed0", store=empty)}
    estimators = {0: page.train("estimator_seed0", store=empty)}
    data, settings = page.data, dict(n_samples=table_params["n_samples"],
                                     batch_size=table_params["eval_batch_size"],
                                     seed=table_params["seed"])
    table = mnist.evaluate_seeds(trained, data.test.x, data.test.y, data.outliers.x, **settings)
    mnist.evaluate_seeds(variants, data.test.x, data.test.y, data.outliers.x, **settings)
    mnist.evaluate_seeds(estimators, data.test.x, data.test.y, data.outliers.x, **settings)
    bins = reliability_table(trained[0], data.test.x, data.test.y, **settings)
    spread = mnist.kl_estimate_spread({**trained[0], **variants[0]}, len(data.train),
                                      seed=table_params["seed"])
    weights = mnist.weight_spread({**trained[0], **variants[0], **estimators[0]}, len(data.train),
                                  n_samples=table_params["n_samples"], seed=table_params["seed"])

    attack = plans.adversarial(attack_params)
    attacked = {0: attack.train("methods_seed0", store=empty)}
    test, p = attack.data.test, attack_params
    curves = attack_seeds(attacked, test.x, test.y, p["epsilons"], n_samples=p["n_samples"],
                          batch_size=p["eval_batch_size"], seed=p["seed"])
    images = adversarial.adversarial_examples(
        attacked[0][adversarial.example_method(p["methods"])], test.x[:4], test.y[:4],
        p["epsilons"], n_samples=p["n_samples"], seed=p["seed"])
    detection = adversarial.adversarial_detection(
        {"bbh": attacked[0]["bbh"]}, test.x[:8], test.y[:8], epsilons=p["detection_epsilons"],
        n_nets=p["detection_nets"], batch_size=p["eval_batch_size"], seed=p["seed"])

    served = [*trained[0].values(), *variants[0].values(), *estimators[0].values(),
              *attacked[0].values()]
    assert not any(run.in_memory for run in served) and not (tmp_path / "b").exists()
    assert set(table["method"]) == {"map", "bbh"} and table["error_pct"].between(0, 100).all()
    assert bins["count"].sum() == 2 * table_params["n_test"] and len(spread) == 3
    assert set(weights["method"]) == {"bbh", "bbh_single", "bbh_sliced", "bbh_kl_joint"}
    assert set(curves["method"]) == {"map", "bbh"} and images.shape[:2] == (len(p["epsilons"]), 4)
    assert len(detection.table) == len(detection.scores) > 0
    adversarial.detection_claims(detection, seed=p["seed"])


def test_a_sitting_evaluates_for_every_chapter_again_a_run_whose_record_it_re_made(
        tmp_path, monkeypatch):
    """The MNIST table's sitting kept a run's record on one CPU; the adversarial chapter's
    sitting, on another, trains the run again (unlike the record) to attack it: both chapters'
    values then come from the new training, none from the old record."""
    monkeypatch.setenv(records.RECORDS_ENV, str(tmp_path / "records"))
    shared = dict(SHARED, methods=["map"])
    table = plans.mnist_table(smoke_params("mnist_table", **shared))
    attack = plans.adversarial(smoke_params("adversarial", **shared, detection_methods=["map"],
                                            n_detect=8))
    key = table.train_all(store=None, after_each=table.evaluate_run)["table_seed0"]["map"].key
    kept = records.default_records()
    table_only = set(json.loads(kept.path(key).read_text())["evaluations"])
    _recorded_on_another_cpu(kept, key)

    runs_seen = []
    with pytest.warns(RuntimeWarning, match="differs from its record"):
        attack.train_all(store=store.RunStore(tmp_path / "b"), after_each=lambda run: (
            runs_seen.append(run), plans.evaluate_for_chapters(run, [table, attack])))
    (run,) = [run for run in runs_seen if run.key == key]
    record = json.loads(kept.path(key).read_text())
    assert record["trained_with"]["device"] != "another CPU"
    assert record["history"] == runs.plain(run.history)
    assert table_only < set(record["evaluations"])  # the table's values were computed again


def sitting_then_page(plan_of, params, tmp_path, monkeypatch):
    """Train and evaluate a chapter's runs in one sitting, then plan it again as a page on a
    machine with an empty store: (page plan, its runs per group)."""
    monkeypatch.setenv(records.RECORDS_ENV, str(tmp_path / "records"))
    sitting = plan_of(params)
    sitting.train_all(store=store.RunStore(tmp_path / "a"),
                      after_each=lambda run: (sitting.evaluate_run(run), run.release()))
    page = plan_of(params)
    return page, {group: page.train(group, store=store.RunStore(tmp_path / "b"))
                  for group in page.groups}


def served_from_records(groups, tmp_path) -> bool:
    return (not any(run.in_memory for runs in groups.values() for run in runs.values())
            and not (tmp_path / "b").exists())


def test_the_noise_ablation_page_reads_what_its_sitting_evaluated(tmp_path, monkeypatch):
    params = smoke_params("bbh_noise", seeds=[0], n_train=64, n_test=32, epochs=1)
    page, groups = sitting_then_page(plans.bbh_noise, params, tmp_path, monkeypatch)
    data = page.data
    table = mnist.evaluate_seeds({0: groups["noise_seed0"]}, data.test.x, data.test.y,
                                 data.outliers.x, n_samples=params["n_samples"],
                                 batch_size=params["eval_batch_size"], seed=params["seed"])
    assert served_from_records(groups, tmp_path) and len(table) == len(groups["noise_seed0"])


def test_the_cifar5_page_reads_what_its_sitting_evaluated(tmp_path, monkeypatch):
    params = smoke_params("cifar5_table", seeds=[0], methods=["map", "mc_dropout"], n_train=20,
                          n_test=10, n_attack=4)
    page, groups = sitting_then_page(plans.cifar5_table, params, tmp_path, monkeypatch)
    data, runs, p = page.data, {0: groups["table_seed0"]}, params
    per_seed, ecdf = cifar.evaluate_seeds(runs, data, n_samples=p["n_samples"],
                                          batch_size=p["eval_batch_size"], seed=p["seed"])
    reliability_table(runs[0], cifar.centre_crop(data.test.x), data.test.y,
                      n_samples=p["n_samples"], batch_size=p["eval_batch_size"], seed=p["seed"])
    attack = attack_seeds(runs, cifar.centre_crop(data.test.x[:p["n_attack"]]),
                          data.test.y[:p["n_attack"]], p["epsilons"], n_samples=p["attack_nets"],
                          pixel_range=CIFAR10_PIXELS, batch_size=p["eval_batch_size"],
                          seed=p["seed"])
    assert served_from_records(groups, tmp_path)
    assert list(ecdf.columns) == ["method", "label", "data", "entropy", "cdf", "seed"]
    assert len(per_seed) == 2 and len(attack) == 2 * len(p["epsilons"])


def test_hypergans_tables_page_reads_what_its_sitting_evaluated(tmp_path, monkeypatch):
    params = smoke_params("hypergan_tables", seeds=[0], methods=["map", "hypergan"], n_train=32,
                          n_test=16, cifar_n_train=32, cifar_n_test=16)
    page, groups = sitting_then_page(plans.hypergan_tables, params, tmp_path, monkeypatch)
    for name in hypergan_tables.TARGETS:
        test = page.data[name][1]
        table = hypergan_tables.accuracy_over_seeds(
            {0: groups[f"{name}_seed0"]}, test.x, test.y, sizes=params["ensemble_sizes"],
            batch_size=params["eval_batch_size"], seed=params["seed"])
        assert len(table) == 2
    assert served_from_records(groups, tmp_path)


def test_the_coupling_page_reads_what_its_sitting_evaluated(tmp_path, monkeypatch):
    params = smoke_params("bhn_couplings", seeds=[0], train_sizes=[64], couplings=[0, 1],
                          baselines=["map"], n_test=32)
    page, groups = sitting_then_page(plans.bhn_couplings, params, tmp_path, monkeypatch)
    trained = {(64, 0): groups["n64_seed0"]}
    table = couplings.evaluate_groups(trained, page.data.test.x, page.data.test.y,
                                      n_samples=params["n_samples"],
                                      batch_size=params["eval_batch_size"], seed=params["seed"])
    labels = couplings.curves(trained[(64, 0)])["label"]
    assert served_from_records(groups, tmp_path)
    assert table["n_couplings"].fillna(-1).tolist() == [-1, 0, 1] and labels.nunique() == 3


def test_the_correlation_page_reads_its_mnist_runs_from_what_its_sitting_evaluated(
        tmp_path, monkeypatch):
    params = smoke_params("weight_correlations", correlation_methods=["bbb"], n_train=64,
                          n_test=32, epochs=1, product_methods=["map"])
    page, groups = sitting_then_page(plans.weight_correlations, params, tmp_path, monkeypatch)
    accuracy, pvalues = correlations.evaluate_correlation_runs(
        groups["mnist"], page.data, n_weight_samples=params["n_weight_samples"],
        n_pairs=params["n_pairs"], seed=params["seed"])
    assert served_from_records({"mnist": groups["mnist"]}, tmp_path)
    assert list(accuracy.index) == ["Bayes by Backprop"] and len(pvalues) == params["n_pairs"]


def test_the_committed_records_are_whole_and_under_their_keys():
    folder = ROOT / "book" / "records"
    for path in sorted(folder.glob("*")):
        assert path.suffix == ".json", f"{path.name}: only records belong in {folder}"
        record = json.loads(path.read_text(encoding="utf-8"))  # read only: load() would move it
        assert record["format"] == records.RECORDS_FORMAT
        assert record["sha256"] == records._content_hash(record), f"{path.name} is damaged"
        assert store.request_hash(record["request"]) == path.stem, f"{path.name} is not under its key"


# --- the evaluation code is pinned to its versions ---------------------------------------------

def evaluation_code() -> dict[str, dict]:
    """Per versioned evaluation: the digest of the code of its module and its version."""
    record = {}
    for module in EVALUATING_MODULES:
        modules = _closure(module)
        digest = hashlib.sha256("\n".join(_normalised(_module_path(m)) for m in modules).encode())
        for name, version in importlib.import_module(module).EVALUATION_VERSIONS.items():
            record[name] = {"digest": digest.hexdigest(), "version": version, "modules": modules}
    return record


def test_the_evaluating_modules_are_all_listed():
    found = {path.relative_to(ROOT).with_suffix("").as_posix()
             .replace("/", ".") for path in _module_path("hypernets").parent.rglob("*.py")
             if "EVALUATION_VERSIONS = " in path.read_text(encoding="utf-8")}
    assert found == set(EVALUATING_MODULES)


def test_the_evaluation_code_matches_its_recorded_versions():
    recorded = json.loads(RECORD.read_text(encoding="utf-8"))
    problems = []
    for name, now in evaluation_code().items():
        then = recorded.get(name)
        if then == now:
            continue
        if then is not None and now["digest"] != then["digest"] and now["version"] <= then["version"]:
            problems.append(f"{name}: the code that computes it changed ({', '.join(now['modules'])}) "
                            "but its EVALUATION_VERSIONS entry was not increased. If the change can "
                            "alter a value that records keep, increase it; then re-record")
        else:
            problems.append(f"{name}: the record is out of date; re-record")
    assert not problems, ("\n".join(problems)
                          + "\nre-record with: python tests/test_records.py --update")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_records.py --update")
    RECORD.write_text(json.dumps(evaluation_code(), indent=2, sort_keys=True) + "\n",
                      encoding="utf-8")
    warnings.warn(f"re-recorded {RECORD}: a change that can alter a kept value needs a version "
                  "increase too", stacklevel=1)
