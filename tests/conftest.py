"""Shared pytest setup."""

import os
import pathlib
import shutil
import tempfile

import pytest

# The real data sets are staged beside the project (../shared/data); CI sets HYPERNETS_DATA itself.
_STAGED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"
_RUN_STORE: list[str] = []


def pytest_configure(config):
    # Only where it exists: an explicitly named data folder that is missing is an error.
    if _STAGED_DATA.is_dir():
        os.environ.setdefault("HYPERNETS_DATA", str(_STAGED_DATA))
    # A fresh run store for every session, so that the tests (and the notebooks nbval
    # re-executes) train their runs instead of loading what an earlier run stored.
    _RUN_STORE.append(tempfile.mkdtemp(prefix="hypernets-runs-"))
    os.environ["HYPERNETS_RUNS"] = _RUN_STORE[-1]


def pytest_unconfigure(config):
    for folder in _RUN_STORE:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def _no_book_records(monkeypatch, tmp_path_factory):
    """No run records unless a test asks for them (as in CI's smoke runs), and a runner call at
    a result profile keeps its records in a folder of the test's, never in book/records."""
    from hypernets import runner

    monkeypatch.delenv("HYPERNETS_RECORDS", raising=False)
    monkeypatch.setattr(runner, "RECORDS_DIR", tmp_path_factory.mktemp("records"))
