"""The run store: a run trains once, is found again only by the same request, survives damage
and interruption; and the code that trains each method is pinned to its training version.

``python tests/test_store.py --update`` re-records ``tests/training_code.json`` after a change
to the training code (bump the version first if the change can alter what a run learns).
"""

from __future__ import annotations

import ast
import json
import pathlib
import sys
import warnings

import pytest
import torch

from hypernets import runs, store, training
from hypernets.methods.registry import METHODS, method_class
from hypernets.targets import Activation, Conv2d, Flatten, Linear, MaxPool2d, TargetNet

ROOT = pathlib.Path(__file__).resolve().parents[1]
RECORD = pathlib.Path(__file__).with_name("training_code.json")


def tiny_target() -> TargetNet:
    return TargetNet("tiny_conv", [("conv", Conv2d(1, 3, 3)), ("relu", Activation("relu")),
                                   ("pool", MaxPool2d(2)), ("flat", Flatten()),
                                   ("fc", Linear(3 * 3 * 3, 3))], (1, 8, 8), 3)


@pytest.fixture
def data():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, 8, 8, generator=generator)
    return x, (x.mean((1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()


def request(data, name="map", **changes):
    x, y = data
    settings = dict(batch_size=10, epochs=2, seed=0, options=None)
    settings.update(changes)
    return runs.RunRequest(name, tiny_target(), x, y, **settings)


def same_state(a, b) -> bool:
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


@pytest.mark.parametrize("name", ["map", "ensemble", "bbh"])
def test_a_run_trains_once_and_loads_as_trained(tmp_path, data, name):
    runs_store = store.RunStore(tmp_path)
    options = {"n_members": 2} if name == "ensemble" else {"train_samples": 2} if name == "bbh" else None
    first = runs.train_runs([request(data, name, options=options)], store=runs_store)[name]
    second = runs.train_runs([request(data, name, options=options)], store=runs_store)[name]
    assert not first.loaded and second.loaded and first.key == second.key
    assert (first.source, second.source) == ("trained", "store")
    assert same_state(first.method, second.method)
    assert second.history == first.history and second.train_time_s == first.train_time_s
    assert not runs_store.checkpoint_path(first.key).exists()
    assert json.loads((tmp_path / first.key / "request.json").read_text())["run"] == name


def test_the_global_rng_does_not_depend_on_whether_a_run_was_trained_or_loaded(tmp_path, data):
    runs_store = store.RunStore(tmp_path)
    draws = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.train_runs([request(data)], store=runs_store)
        draws.append(torch.rand(3))
    assert torch.equal(*draws)


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"epochs": 3}, {"batch_size": 20}, {"precision": "bf16"},
    {"options": {"lr": 1e-2}}, {"options": {"prior_std": 2.0}},
    {"evaluate": "test_error"}, {"data": "one label changed"},
])
def test_another_request_never_gets_a_stored_run(tmp_path, data, change):
    runs_store = store.RunStore(tmp_path)
    base = runs.train_runs([request(data)], store=runs_store)["map"]
    change = dict(change)
    if change.get("evaluate") == "test_error":
        change["evaluate"] = runs.TestError(data[0][:8], data[1][:8], n_samples=1)
    if change.pop("data", None):
        x, y = data
        y = y.clone()
        y[0] = (y[0] + 1) % 3
        data = (x, y)
    other = runs.train_runs([request(data, **change)], store=runs_store)["map"]
    assert other.key != base.key and not other.loaded


def test_a_corrupt_entry_is_set_aside_and_trained_again(tmp_path, data):
    runs_store = store.RunStore(tmp_path)
    first = runs.train_runs([request(data)], store=runs_store)["map"]
    path = tmp_path / first.key / "run.pt"
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.warns(RuntimeWarning, match="does not match the SHA-256"):
        again = runs.train_runs([request(data)], store=runs_store)["map"]
    assert not again.loaded and same_state(first.method, again.method)
    assert (tmp_path / first.key / "run.pt.corrupt").exists()
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.warns(RuntimeWarning, match="truncated"):
        assert not runs.train_runs([request(data)], store=runs_store)["map"].loaded


def test_an_entry_of_another_request_is_refused(tmp_path, data):
    runs_store = store.RunStore(tmp_path)
    a = runs.train_runs([request(data)], store=runs_store)["map"]
    b = runs.train_runs([request(data, seed=1)], store=runs_store)["map"]
    (tmp_path / a.key / "run.pt").replace(tmp_path / b.key / "run.pt")  # copied by hand
    with pytest.raises(store.StoreError, match="trained for another request"):
        runs.train_runs([request(data, seed=1)], store=runs_store)


class Stop(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path, data, monkeypatch):
    monkeypatch.setattr(runs, "CHECKPOINT_EVERY_S", 0.0)  # every epoch of these millisecond epochs
    uninterrupted = runs.train_runs([request(data, epochs=3)], store=None)["map"]
    runs_store = store.RunStore(tmp_path)
    req = request(data, epochs=3)

    def stop_in_epoch_three(step):
        if step == 9:  # 4 steps an epoch: two epochs and a step done
            raise Stop

    with pytest.raises(Stop):
        runs.train_run(req, store=runs_store, on_step=stop_in_epoch_three)
    key = store.request_hash(runs.key_document(req, req.build()))
    assert runs_store.checkpoint_path(key).exists() and not runs_store.has(key)
    steps = []
    resumed = runs.train_run(req, store=runs_store, on_step=steps.append)
    assert steps == [9, 10, 11, 12]  # the third epoch again, from its start
    assert same_state(uninterrupted.method, resumed.method)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in uninterrupted.history]


def test_a_run_being_trained_elsewhere_is_not_trained_twice(tmp_path, data):
    runs_store = store.RunStore(tmp_path)
    req = request(data)
    key = store.request_hash(runs.key_document(req, req.build()))
    with runs_store.training(key, "map"), pytest.raises(store.StoreError, match="being trained by process"):
        runs.train_runs([req], store=runs_store)


def test_the_store_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(store.RUNS_ENV, str(tmp_path / "mine"))
    assert store.RunStore().root == tmp_path / "mine"
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(store.RUNS_ENV, str(tmp_path / "file"))
    with pytest.raises(store.StoreError, match="HYPERNETS_RUNS=.* is not a folder"):
        store.RunStore()
    monkeypatch.setenv(store.RUNS_ENV, " ")
    with pytest.raises(store.StoreError, match="set but empty"):
        store.RunStore()


def test_every_run_is_checked_before_the_first_trains(tmp_path, data):
    good, bad = request(data), request(data, "nope")
    with pytest.raises(ValueError, match="run 'nope': method must be one of"):
        runs.train_runs([good, bad], store=store.RunStore(tmp_path))
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="precision must be one of"):
        runs.train_runs([request(data, options={"precision": "fp16"})], store=None)


def test_a_hook_without_a_store_key_is_refused(tmp_path, data):
    with pytest.raises(TypeError, match="evaluate needs a store_key"):
        runs.train_runs([request(data, evaluate=lambda method: {})], store=store.RunStore(tmp_path))


def test_test_error_is_recorded_every_epoch_without_changing_the_training(data):
    x, y = data
    plain = runs.train_runs([request(data)], store=None)["map"]
    evaluated = runs.train_runs([request(data, evaluate=runs.TestError(x, y, n_samples=1))],
                                store=None)["map"]
    assert same_state(plain.method, evaluated.method)
    errors = [record["test_error_pct"] for record in evaluated.history]
    assert len(errors) == 2 and all(0 <= e <= 100 for e in errors)


def test_one_progress_bar_counts_only_the_steps_trained_here(tmp_path, data, capsys):
    runs_store = store.RunStore(tmp_path)
    runs.train_runs([request(data)], store=runs_store)
    runs.train_runs([request(data), request(data, "bbb")], store=runs_store, progress=True)
    bar = capsys.readouterr().err.strip().split("\r")[-1]
    assert "8/8" in bar  # map came from the store: only bbb's 8 steps


def test_an_estimate_times_a_run_once_for_all_its_seeds(data, monkeypatch):
    timed = []
    real_fit = runs.fit
    monkeypatch.setattr(runs, "fit", lambda *a, **k: (timed.append(k["seed"]), real_fit(*a, **k)))
    cache = {}
    first = runs.estimate_seconds(request(data, seed=0), timed_steps=1, cache=cache)
    assert runs.estimate_seconds(request(data, seed=1), timed_steps=1, cache=cache) == first
    assert timed == [0]
    assert first["steps"] == 8 and first["step_s"] > 0
    longer = runs.estimate_seconds(request(data, seed=1, epochs=3), timed_steps=1, cache=cache)
    other = runs.estimate_seconds(request(data, seed=1, batch_size=20), timed_steps=1, cache=cache)
    assert timed == [0, 1, 1] and longer["steps"] == 12 and other["steps"] == 4
    runs.estimate_seconds(request(data, "bbb"), timed_steps=1, cache=cache)
    assert timed == [0, 1, 1, 0]

# --- the training code is pinned to the versions that enter every key -------------------------

def _normalised(path: pathlib.Path) -> str:
    """The module's code without docstrings, comments or layout."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(body, list) and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, annotate_fields=False, include_attributes=False)


def _module_path(module: str) -> pathlib.Path:
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _closure(module: str) -> list[str]:
    """``module`` and every hypernets module it imports, transitively (the packages' inits
    are left out: they hold no training code)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(ast.parse(_module_path(name).read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hypernets."):
                todo.append(node.module)
    return sorted(seen)


def training_code() -> dict[str, dict]:
    """Per method: the digest of the code that trains it and the versions that enter its key."""
    import hashlib

    record = {}
    for name in sorted(METHODS):
        cls = method_class(name)
        modules = sorted(set(_closure(cls.__module__)) | set(_closure("hypernets.training")))
        digest = hashlib.sha256("\n".join(_normalised(_module_path(m)) for m in modules).encode())
        record[name] = {"digest": digest.hexdigest(), "method_version": cls.training_version,
                        "fit_version": training.TRAINING_VERSION, "modules": modules}
    return record


def test_the_training_code_matches_its_recorded_versions():
    recorded = json.loads(RECORD.read_text(encoding="utf-8"))
    problems = []
    for name, now in training_code().items():
        then = recorded.get(name)
        if then == now:
            continue
        bumped = then is not None and (now["method_version"] > then["method_version"]
                                      or now["fit_version"] > then["fit_version"])
        if then is not None and now["digest"] != then["digest"] and not bumped:
            problems.append(f"{name}: the code that trains it changed ({', '.join(now['modules'])}) "
                            f"but neither {method_class(name).__name__}.training_version nor "
                            "training.TRAINING_VERSION was increased. If the change can alter what "
                            "a trained run learns, increase one; then re-record")
        else:
            problems.append(f"{name}: the record is out of date; re-record")
    assert not problems, ("\n".join(problems) + "\nre-record with: python tests/test_store.py --update")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        sys.exit("usage: python tests/test_store.py --update")
    RECORD.write_text(json.dumps(training_code(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    warnings.warn(f"re-recorded {RECORD}: a change that can alter what a run learns needs a "
                  "version increase too", stacklevel=1)
