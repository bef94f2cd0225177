"""Tests of the book pipeline: profiles and setup (hypernets.book), the runner (hypernets.runner)."""

import json
import random
import subprocess
import sys
import textwrap

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from hypernets import book, runner

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
    assert set(profiles) == {"smoke", "full"}
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


def test_run_config_is_read_only_with_attribute_access(toy_profiles, capsys):
    cfg = book.setup("toy", "smoke", **{**TOY_PARAMS, "steps": 4})
    assert (cfg.notebook, cfg.profile, cfg.steps, cfg.layers) == ("toy", "smoke", 4, (8, 8))
    assert cfg.as_dict()["steps"] == 4 and "profile" not in cfg.as_dict()
    with pytest.raises(AttributeError, match="read-only"):
        cfg.steps = 5
    with pytest.raises(AttributeError, match="no parameter 'epochs'"):
        cfg.epochs
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
    assert book.git_commit(tmp_path) == clean
    (tmp_path / "lib.py").write_text("a = 2\n")
    assert book.git_commit(tmp_path) == clean + "+dirty"


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


def test_runner_executes_records_and_nbval_catches_a_changed_number(tmp_path, runner_profiles):
    """One real run (kernel and all), then nbval on its output: unchanged passes, a changed number fails."""
    notebook = _toy_notebook(tmp_path / "toy.ipynb")
    out_dir = tmp_path / "out"
    assert runner.main(["--seed", "2", "--output-dir", str(out_dir), str(notebook)]) == 0
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


def test_failed_run_keeps_the_previous_copy(tmp_path, runner_profiles, capsys):
    notebook = _toy_notebook(tmp_path / "toy.ipynb", body=textwrap.dedent("raise ValueError('boom')"))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "toy.ipynb").write_text("previous")
    assert runner.main(["--output-dir", str(out_dir), str(notebook)]) == 2
    assert "ValueError: boom" in capsys.readouterr().err
    assert (out_dir / "toy.ipynb").read_text() == "previous"


# ---------------------------------------------------------------------------------------------
# data-tour figures
# ---------------------------------------------------------------------------------------------


def _images(name="MNIST", normalized=False, labels=(5, 5, 7, 7, 7)):
    from hypernets.data import ImageData

    y = torch.tensor(labels)
    x = torch.arange(len(labels), dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 1, 4, 4) / 10
    classes = tuple(str(digit) for digit in range(10))
    return ImageData(x=x.clone(), y=y, name=name, split="test", classes=classes, source="test", lossy=False,
                     normalized=normalized)


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

    images = _images(normalized=True)
    raw = torch.full((1, 1, 2, 2), 0.5)
    shown = plots.display_pixels(images, (raw - data.MNIST_MEAN) / data.MNIST_STD)
    assert shown.shape == (1, 2, 2, 1)
    np.testing.assert_allclose(shown, 0.5, atol=1e-6)
    with pytest.raises(ValueError, match="cannot undo the normalisation of data set 'mystery'"):
        plots.display_pixels(_images(name="mystery", normalized=True), raw)


def test_plot_toy_data_draws_points_and_true_function():
    import matplotlib.pyplot as plt

    from hypernets import data, plots

    toy = data.toy_regression(noise_std=3.0, n_points=7, seed=1, n_grid=50)
    ax = plots.plot_toy_data(toy)
    (line,) = ax.get_lines()
    np.testing.assert_allclose(line.get_ydata(), toy.x_grid.flatten().numpy() ** 3, rtol=1e-5)
    assert ax.collections[0].get_offsets().shape == (7, 2)
    plt.close(ax.figure)
