"""Execute the book's notebooks with papermill at a chosen profile.

``hypernets-run [--profile smoke|full] [--device D] [--seed N] [-p NAME VALUE ...]
[--output-dir DIR] NOTEBOOK... | --all``

``smoke`` runs are written to ``tests/notebooks/`` (the regression baseline that CI re-executes
with nbval), ``full`` runs to ``book/`` (what the book shows) with their results in
``book/results/<name>.json``. Every parameter is checked against the notebook's parameters cell,
its profile and the rules of :func:`hypernets.book.parameter_rules` before anything runs.

A notebook runs in a scratch folder: the kernel writes its results JSON there, and only once
the run has succeeded are the executed notebook and the JSON moved into place together. A
failed or interrupted run leaves the previous page and results as they were, and its error
names the scratch folder, which is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import hashlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import nbformat
import yaml

from hypernets import numerics
from hypernets.book import (
    PROJECT_ROOT,
    RESULTS_DESTINATION_ENV,
    RESULTS_ENV,
    check_device,
    git_commit,
    load_profiles,
    resolve_parameters,
    seed_everything,
)
from hypernets.records import RECORDS_ENV

NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
BOOK_DIR = PROJECT_ROOT / "book"
#: Where the result profiles' runs keep their records (:mod:`hypernets.records`).
RECORDS_DIR = BOOK_DIR / "records"
REFERENCE_DIR = PROJECT_ROOT / "tests" / "notebooks"
KERNEL_NAME = "python3"
RUN_INFO_TAG = "run-info"


class RunnerError(Exception):
    """A bad command line (reported as one line, before any notebook runs) or a failed run."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by an interrupt; the message says where its scratch copy is."""


def source_sha256(notebook: nbformat.NotebookNode | str | Path) -> str:
    """SHA-256 of a notebook's cells (type, source, tags): not outputs, ids or other metadata.

    Saving, executing or re-keying cells does not change it; editing code, text or tags does.
    """
    if not isinstance(notebook, nbformat.NotebookNode):
        notebook = nbformat.read(str(notebook), as_version=4)
    cells = [
        {"cell_type": cell.cell_type, "source": cell.source, "tags": list(cell.metadata.get("tags", []))}
        for cell in notebook.cells
    ]
    return hashlib.sha256(json.dumps(cells, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def parse_value(text: str) -> Any:
    """A ``-p`` value as papermill reads it: ``True``/``False``/``None``, int, float, else a string.

    YAML scalars, lists and mappings are accepted too (``true``, ``[1, 2]``,
    ``{bbh: {lr: 0.001}}``); a mapping replaces the profile's whole mapping. Text that is not
    valid YAML (``{bbh: [1``) raises ValueError, saying what is wrong in one line.
    """
    if text == "None":
        return None
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        mark = getattr(error, "problem_mark", None)
        where = f" at character {mark.column + 1}" if mark is not None and mark.line == 0 else ""
        raise ValueError(f"{text!r} is not valid YAML ({problem}{where})") from None
    if isinstance(value, str):
        try:
            return float(text)
        except ValueError:
            return text
    if value is None:
        # YAML's other null spellings (null, ~) are not papermill's: keep the text as given.
        return text
    return value


def notebook_sources() -> list[Path]:
    """Every notebook of the book, ``notebooks/*.ipynb``, sorted by name."""
    return sorted(NOTEBOOKS_DIR.glob("*.ipynb"))


def find_notebook(argument: str) -> Path:
    """A notebook given as a path or as a name in ``notebooks/`` (with or without ``.ipynb``)."""
    path = Path(argument)
    if path.is_file():
        if path.suffix != ".ipynb":
            raise RunnerError(f"{argument} is not a notebook (.ipynb)")
        return path.resolve()
    name = path.name[: -len(".ipynb")] if path.name.endswith(".ipynb") else path.name
    candidate = NOTEBOOKS_DIR / f"{name}.ipynb"
    if candidate.is_file():
        return candidate
    available = ", ".join(source.stem for source in notebook_sources()) or "none"
    raise RunnerError(f"no notebook {argument!r}; notebooks in {NOTEBOOKS_DIR}: {available}")


def declared_parameters(source: Path) -> list[str]:
    """Names declared in the notebook's ``parameters`` cell (via papermill's inspection)."""
    import papermill

    try:
        nbformat.read(str(source), as_version=4)
    except Exception as error:  # unreadable file, not JSON, not a notebook: all one answer
        reason = " ".join(str(error).split()) or type(error).__name__
        raise RunnerError(
            f"cannot read notebook {source} ({type(error).__name__}: {reason[:200]}); "
            "expected a readable Jupyter notebook file (.ipynb, nbformat 4 JSON)"
        ) from None
    declared = list(papermill.inspect_notebook(str(source)))
    if not declared:
        raise RunnerError(f"{source} has no cell tagged 'parameters'")
    return declared


@dataclass(frozen=True)
class RunPlan:
    """One checked notebook run: where from, where to, with which parameters."""

    source: Path
    profile: str
    overrides: dict[str, Any]
    resolved: dict[str, Any]
    output: Path
    results: Path | None
    command: str

    @property
    def name(self) -> str:
        return self.source.stem


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def rerun_command(source: Path, profile: str, raw_overrides: dict[str, str], output_dir: Path | None) -> str:
    """The command line that repeats a run, as shown in the executed notebook."""
    try:
        shown_source = str(source.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        shown_source = str(source)
    parts = ["hypernets-run", "--profile", profile]
    for name, text in raw_overrides.items():
        if name in ("device", "seed"):
            parts += [f"--{name}", text]
        else:
            parts += ["-p", name, text]
    if output_dir is not None:
        parts += ["--output-dir", str(output_dir)]
    parts.append(shown_source)
    return shlex.join(parts)


def _check_output_folder(folder: Path, what: str) -> None:
    """``folder`` is a folder that can be written, or can be created in a writable folder."""
    if folder.exists() and not folder.is_dir():
        raise RunnerError(f"{what} {folder} is not a folder; expected a folder to write the run's files to")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunnerError(f"{what} {folder} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        writable = "is not writable" if existing == folder else f"cannot be created: {existing} is not writable"
        raise RunnerError(f"{what} {folder} {writable}; expected a folder this user can write to")


def plan_run(source: Path, profile: str, raw_overrides: dict[str, str], output_dir: Path | None) -> RunPlan:
    """Check a run completely (notebook, names, profile, types, values, device, output folder) without executing."""
    declared = declared_parameters(source)
    for required in ("profile", "device", "seed"):
        if required not in declared:
            raise RunnerError(f"{source.name}: the parameters cell does not declare {required!r}")
    unknown = [name for name in raw_overrides if name not in declared]
    if unknown:
        raise RunnerError(
            f"{source.name} has no parameter(s) {', '.join(unknown)}; "
            f"its parameters: {', '.join(name for name in declared if name != 'profile')}"
        )
    name = source.stem
    try:
        profiles = load_profiles(name)
    except ValueError as error:
        raise RunnerError(str(error)) from error
    profile_names = set(next(iter(profiles.values())))
    cell_names = set(declared) - {"profile"}
    if cell_names != profile_names:
        raise RunnerError(
            f"{source.name}: the parameters cell and hypernets/profiles/{name}.yaml disagree on "
            f"{', '.join(sorted(cell_names ^ profile_names))}"
        )
    overrides = {}
    for key, text in raw_overrides.items():
        try:
            overrides[key] = parse_value(text)
        except ValueError as error:
            flag = f"--{key}" if key in ("device", "seed") else f"-p {key}"
            raise RunnerError(
                f"{flag}: {error}; expected a value like papermill's -p (True, 3, 0.5, text) "
                "or a YAML list or mapping ([3, 9], '{bbh: {lr: 0.001}}')"
            ) from None
    given = {key: overrides.get(key) for key in profile_names}
    try:
        resolved = resolve_parameters(name, profile, **given)
        check_device(resolved["device"])
    except (ValueError, TypeError, RuntimeError) as error:
        raise RunnerError(f"{source.name}: {error}") from error
    default_dir = REFERENCE_DIR if profile == "smoke" else BOOK_DIR
    target_dir = (output_dir or default_dir).resolve()
    what = "--output-dir" if output_dir is not None else f"the output folder of profile {profile!r}"
    _check_output_folder(target_dir, what)
    results = None if profile == "smoke" else target_dir / "results" / f"{name}.json"
    if results is not None:
        _check_output_folder(results.parent, "the results folder")
    return RunPlan(
        source=source,
        profile=profile,
        overrides=overrides,
        resolved=resolved,
        output=target_dir / f"{name}.ipynb",
        results=results,
        command=rerun_command(source, profile, raw_overrides, output_dir),
    )


@contextlib.contextmanager
def _results_env(scratch: Path | None, destination: Path | None) -> Iterator[None]:
    """Set (or clear) where the kernel that papermill starts writes its results, and where they go."""
    settings = {RESULTS_ENV: scratch, RESULTS_DESTINATION_ENV: destination}
    previous = {key: os.environ.get(key) for key in settings}
    for key, path in settings.items():
        if path is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = str(path)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _records_env(profile: str) -> Iterator[None]:
    """The result profiles' runs keep their records beside the pages (:mod:`hypernets.records`):
    ``$HYPERNETS_RECORDS`` defaults to :data:`RECORDS_DIR` while they run (and the kernels they
    start inherit it)."""
    if profile not in RESULT_PROFILES or RECORDS_ENV in os.environ:
        yield
        return
    os.environ[RECORDS_ENV] = str(RECORDS_DIR)
    try:
        yield
    finally:
        os.environ.pop(RECORDS_ENV, None)


@contextlib.contextmanager
def _numerics_env(profile: str) -> Iterator[None]:
    """``smoke`` runs are the regression copies that other CPUs re-execute: their kernels run in
    the portable numerics of :mod:`hypernets.numerics`. The other profiles keep the native kernels."""
    if profile != "smoke":
        yield
        return
    previous = {key: os.environ.get(key) for key in numerics.PORTABLE_ENV}
    os.environ.update(numerics.PORTABLE_ENV)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: Profiles whose runs are results: the book's ``full`` (on a 2-core CPU) and ``paper``.
RESULT_PROFILES = ("full", "paper")

#: Shown above the run table of every run below the result profiles: such a copy can stand in
#: the book until the real run is committed, and must not be read as a result.
PREVIEW_WARNING = """```{{warning}}
**Preview, not a result.** This page was executed at the `{profile}` profile, not at `full`.
The `smoke` profile is the tiny configuration that continuous integration re-executes to test
the pipeline (a few hundred images, one or two epochs, a few sampled nets), so its numbers,
tables and figures say nothing about the methods or the papers. The book's run,
`hypernets-run --profile full {name}` (on a CPU), replaces this page once it is committed.
```"""


def run_info_markdown(plan: RunPlan, commit: str, wall_time_s: float, executed_at: str) -> str:
    """The markdown cell placed at the top of an executed notebook (a warning below the result profiles)."""
    preview = plan.profile not in RESULT_PROFILES
    lines = [PREVIEW_WARNING.format(profile=plan.profile, name=plan.name), ""] if preview else []
    return "\n".join(
        lines
        + [
            "| profile | device | seed | commit | wall time | executed |",
            "| --- | --- | --- | --- | --- | --- |",
            f"| `{plan.profile}` | `{plan.resolved['device']}` | `{plan.resolved['seed']}` | `{commit}` "
            f"| {wall_time_s:.1f} s | {executed_at} |",
            "",
            f"Rerun with `{plan.command}` (from the repository root).",
        ]
    )


def _run_info_position(notebook: nbformat.NotebookNode) -> int:
    """Right below the title when the notebook opens with a title cell (so the page keeps its title), else first."""
    first = notebook.cells[0] if notebook.cells else None
    if first is not None and first.cell_type == "markdown" and first.source.lstrip().startswith("# "):
        return 1
    return 0


def _staged_path(destination: Path) -> Path:
    """A new hidden file beside ``destination`` (same folder, so same filesystem: os.replace is atomic).

    It gets the permissions a plain write would give (mkstemp's are private to the user).
    """
    handle, name = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(name, 0o666 & ~umask)
    return Path(name)


def publish(notebook: nbformat.NotebookNode, output: Path, results: Path | None = None,
            results_source: Path | None = None) -> None:
    """Put ``notebook`` at ``output`` and copy ``results_source`` to ``results``: both, or neither.

    Both are first written beside their destinations, then moved into place with
    :func:`os.replace` one right after the other; if the notebook cannot be moved, the previous
    results file is put back. Either file is either the previous one or the new one at any time.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    staged: list[Path] = []
    try:
        staged_notebook = _staged_path(output)
        staged.append(staged_notebook)
        nbformat.write(notebook, str(staged_notebook))
        if results is None:
            os.replace(staged_notebook, output)
            return
        results.parent.mkdir(parents=True, exist_ok=True)
        staged_results = _staged_path(results)
        staged.append(staged_results)
        shutil.copyfile(results_source, staged_results)
        backup = None
        if results.exists():
            backup = _staged_path(results)
            staged.append(backup)
            shutil.copyfile(results, backup)
        os.replace(staged_results, results)
        try:
            os.replace(staged_notebook, output)
        except BaseException:
            if backup is not None:
                os.replace(backup, results)
            else:
                results.unlink(missing_ok=True)
            raise
    finally:
        for path in staged:
            path.unlink(missing_ok=True)


def _annotate(executed: nbformat.NotebookNode, source_nb: nbformat.NotebookNode, plan: RunPlan, commit: str,
              wall_time_s: float, executed_at: str) -> None:
    """Add the run-info cell and the ``hypernets`` metadata to an executed notebook."""
    info = nbformat.v4.new_markdown_cell(run_info_markdown(plan, commit, wall_time_s, executed_at))
    info.metadata["tags"] = [RUN_INFO_TAG]
    info.id = RUN_INFO_TAG
    executed.cells.insert(_run_info_position(executed), info)
    executed.metadata["hypernets"] = {
        "source": plan.source.name,
        "source_sha256": source_sha256(source_nb),
        "profile": plan.profile,
        "parameters": plan.resolved,
        "overrides": plan.overrides,
        "device": plan.resolved["device"],
        "seed": plan.resolved["seed"],
        "numerics": "portable" if plan.profile == "smoke" or numerics.portable_requested() else "native",
        "commit": commit,
        "wall_time_s": round(wall_time_s, 1),
        "executed_at": executed_at,
        "command": plan.command,
    }


def execute(plan: RunPlan) -> Path:
    """Run one planned notebook in a scratch folder; publish its output and results only if it succeeds.

    The kernel writes the results JSON into the scratch folder; after the run, the executed
    notebook and the JSON replace the previous ones together (:func:`publish`) and the
    scratch folder is removed. On any failure, an interrupt included, nothing is replaced and
    the error (RunnerError, or RunInterrupted for an interrupt) names the scratch folder, kept.
    """
    import papermill

    scratch = Path(tempfile.mkdtemp(prefix=f"hypernets-run-{plan.name}-"))
    scratch_output = scratch / f"{plan.name}.ipynb"
    scratch_results = scratch / f"{plan.name}.json" if plan.results is not None else None

    def kept() -> str:
        partial = f", the partial notebook is {scratch_output}" if scratch_output.exists() else ""
        published = " and ".join(_display_path(path) for path in (plan.output, plan.results) if path is not None)
        return f"the scratch copy is kept in {scratch}{partial}; {published} unchanged"

    try:
        source_nb = nbformat.read(str(plan.source), as_version=4)
        commit = git_commit()
        parameters = {"profile": plan.profile, **plan.overrides}
        started = time.perf_counter()
        executed_at = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
        with _results_env(scratch_results, plan.results), _numerics_env(plan.profile):
            papermill.execute_notebook(
                str(plan.source),
                str(scratch_output),
                parameters=parameters,
                kernel_name=KERNEL_NAME,
                cwd=str(plan.source.parent),
                progress_bar=False,
            )
        wall_time_s = time.perf_counter() - started
        if scratch_results is not None and not scratch_results.is_file():
            raise RunnerError(
                f"{plan.source.name} ran at profile {plan.profile!r} but wrote no results "
                f"(its last cell should call cfg.finish())"
            )
        executed = nbformat.read(str(scratch_output), as_version=4)
        _annotate(executed, source_nb, plan, commit, wall_time_s, executed_at)
        publish(executed, plan.output, plan.results, scratch_results)
    except papermill.PapermillExecutionError as error:
        raise RunnerError(
            f"{plan.source.name} failed in cell {error.exec_count}: {error.ename}: {error.evalue}; {kept()}"
        ) from error
    except RunnerError as error:
        raise RunnerError(f"{error}; {kept()}") from error
    except KeyboardInterrupt as error:
        raise RunInterrupted(f"{plan.source.name} was interrupted; {kept()}") from error
    except Exception as error:
        raise RunnerError(f"{plan.source.name} failed: {type(error).__name__}: {error}; {kept()}") from error
    shutil.rmtree(scratch, ignore_errors=True)
    return plan.output


def train_only(plans: Sequence[RunPlan], *, hours: float | None = None) -> None:
    """Train (or resume) every run the notebooks of ``plans`` need, into the run store,
    without executing them; one progress bar over each notebook's runs. Where runs keep
    records (``$HYPERNETS_RECORDS``), each run is evaluated, as soon as it is trained, by
    every chapter of ``plans`` that uses it, into its record. The notebook runs afterwards
    load them (:mod:`hypernets.plans`). With ``hours``, a run that its measured estimate
    (:func:`hypernets.runs.estimate_seconds`) says would not finish within ``hours`` of the
    start is skipped (runs that differ only in their seed are timed once)."""
    from hypernets.plans import PLANS, evaluate_for_chapters
    from hypernets.runs import estimate_seconds

    deadline = None if hours is None else time.monotonic() + 3600 * hours
    skipped = []
    timings: dict = {}

    def admit(request) -> bool:
        if deadline is None:
            return True
        needed = estimate_seconds(request, cache=timings)["total_s"]
        left = deadline - time.monotonic()
        if needed <= left:
            return True
        skipped.append(request.name)
        print(f"  skipped {request.name}: it needs about {needed / 60:.0f} min, "
              f"{max(left, 0) / 60:.0f} min of the sitting are left", flush=True)
        return False

    for plan in plans:
        if plan.name not in PLANS:
            raise RunnerError(f"--train-only: {plan.name} has no run plan (hypernets/plans.py); "
                              f"notebooks with one: {', '.join(sorted(PLANS))}")
    chapters = []
    for plan in plans:
        seed_everything(plan.resolved["seed"], check_device(plan.resolved["device"]),
                        single_thread=plan.profile == "smoke")
        chapters.append(PLANS[plan.name](plan.resolved))

    def evaluate(run) -> None:
        evaluate_for_chapters(run, chapters)
        if run.records is not None:  # its record holds what the pages need
            run.release()

    for plan, chapter in zip(plans, chapters):
        print(f"training the runs of {_display_path(plan.source)} (profile {plan.profile}) ...",
              flush=True)
        started = time.perf_counter()
        groups = chapter.train_all(progress=True, after_each=evaluate, admit=admit)
        for group, trained in groups.items():
            for name, run in trained.items():
                how = {"record": "recorded", "store": "in the store"}.get(run.source, run.source)
                print(f"  {group}/{name}: {how}, {run.train_time_s:.0f} s of training, "
                      f"key {run.key}", flush=True)
        print(f"trained in {time.perf_counter() - started:.1f} s", flush=True)
    if skipped:
        print(f"{len(skipped)} runs did not fit in the sitting ({', '.join(skipped)}); run the "
              "same command again to train them", flush=True)


def estimate(plan: RunPlan, timed_steps: int = 3) -> float:
    """Print how long each run the notebook of ``plan`` needs would train on this machine, from
    a few timed steps of each (:func:`hypernets.runs.estimate_seconds`; runs that differ only
    in their seed are timed once), a line per run as it is timed and a table at the end; runs
    already in the store or in the records count zero. Returns the seconds still to train."""
    import pandas as pd

    from hypernets.plans import PLANS
    from hypernets.records import default_records
    from hypernets.runs import estimate_seconds, key_document
    from hypernets.store import RunStore, request_hash

    if plan.name not in PLANS:
        raise RunnerError(f"--estimate: {plan.name} has no run plan (hypernets/plans.py); "
                          f"notebooks with one: {', '.join(sorted(PLANS))}")
    seed_everything(plan.resolved["seed"], check_device(plan.resolved["device"]),
                    single_thread=plan.profile == "smoke")
    store, records = RunStore(), default_records()
    rows, timings = [], {}
    for group, requests in PLANS[plan.name](plan.resolved).groups.items():
        for request in requests:
            key = request_hash(key_document(request, request.build()))
            stored = store.has(key) or (records is not None and records.path(key).exists())
            numbers = estimate_seconds(request, timed_steps=timed_steps, cache=timings)
            rows.append({"group": group, "run": request.name,
                         "ms_per_step": round(1e3 * numbers["step_s"], 1),
                         "steps": numbers["steps"], "eval_s": round(numbers["eval_s"], 1),
                         "minutes": round(numbers["total_s"] / 60, 1),
                         "in_store": stored})
            print(f"  {group}/{request.name}: {rows[-1]['ms_per_step']} ms a step, "
                  f"{rows[-1]['minutes']} min{' (in the store)' if stored else ''}", flush=True)
    table = pd.DataFrame(rows)
    remaining = 60 * table.loc[~table["in_store"], "minutes"].sum()
    print(table.to_string(index=False))
    print(f"{plan.name} ({plan.profile}): {table['minutes'].sum() / 60:.2f} h of training in all, "
          f"{remaining / 3600:.2f} h still to train on this machine", flush=True)
    return remaining


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypernets-run",
        description=(
            "Execute notebooks of the book with papermill. smoke runs go to tests/notebooks/ "
            "(the regression baseline), full runs to book/ (what the book shows)."
        ),
    )
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="name in notebooks/ or path to a notebook")
    parser.add_argument("--all", action="store_true", help="run every notebooks/*.ipynb")
    parser.add_argument("--profile", default="smoke", help="profile to run (smoke or full; default smoke)")
    parser.add_argument("--device", help="torch device, e.g. cpu or cuda (default: the profile's)")
    parser.add_argument("--seed", help="random seed (default: the profile's)")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a notebook parameter; VALUE is read like papermill's -p (True, 3, 0.5, text), "
             "or as a YAML list or mapping ([3, 9], '{bbh: {lr: 0.001}}')",
    )
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="train (or resume) the runs the notebooks need into the run store ($HYPERNETS_RUNS), "
             "without executing them; run them afterwards to evaluate",
    )
    parser.add_argument(
        "--hours",
        type=float,
        help="with --train-only: a sitting of this many hours; a run whose measured estimate "
             "(as --estimate) does not fit in the time left is skipped, and later, shorter runs "
             "still train",
    )
    parser.add_argument(
        "--estimate",
        action="store_true",
        help="print how long the runs the notebooks need would train here, from a few timed "
             "steps of each, without training or executing anything",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="where to write executed notebooks (default: tests/notebooks for smoke, book for full)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.all and args.notebooks:
        parser.error("give notebook names or --all, not both")
    if not args.all and not args.notebooks:
        parser.error("name at least one notebook, or pass --all")
    raw_overrides: dict[str, str] = {}
    for flag in ("device", "seed"):
        if getattr(args, flag) is not None:
            raw_overrides[flag] = getattr(args, flag)
    for name, text in args.parameter:
        if name == "profile":
            parser.error("set the profile with --profile, not -p profile")
        if name in raw_overrides:
            parser.error(f"parameter {name!r} is given twice")
        raw_overrides[name] = text
    try:
        sources = notebook_sources() if args.all else [find_notebook(item) for item in args.notebooks]
        if not sources:
            raise RunnerError(f"no notebooks in {NOTEBOOKS_DIR}")
        plans = [plan_run(source, args.profile, raw_overrides, args.output_dir) for source in sources]
        if args.train_only and args.estimate:
            raise RunnerError("give --train-only or --estimate, not both")
        if args.hours is not None and (not args.train_only or not args.hours > 0):
            raise RunnerError(f"--hours needs --train-only and a number of hours above 0, got "
                              f"{args.hours}")
        with _records_env(args.profile):
            if args.train_only:
                train_only(plans, hours=args.hours)
                return 0
            for plan in plans:
                if args.estimate:
                    estimate(plan)
                    continue
                print(f"running {_display_path(plan.source)} (profile {plan.profile}) ...",
                      flush=True)
                started = time.perf_counter()
                output = execute(plan)
                print(f"wrote {_display_path(output)} in {time.perf_counter() - started:.1f} s",
                      flush=True)
    except RunnerError as error:
        print(f"hypernets-run: error: {error}", file=sys.stderr)
        return 2
    except RunInterrupted as error:
        print(f"hypernets-run: {error}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
