"""Shared pytest setup."""

import os
import pathlib

# The real data sets are staged beside the project (../shared/data); CI sets HYPERNETS_DATA itself.
_STAGED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
    os.environ.setdefault("HYPERNETS_DATA", str(_STAGED_DATA))
