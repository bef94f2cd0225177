"""Shared pytest setup."""

import os
import pathlib

# The real data sets are staged beside the project (../shared/data); CI sets HYPERNETS_DATA itself.
_STAGED_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config):
    # Only where it exists: an explicitly named data folder that is missing is an error.
    if _STAGED_DATA.is_dir():
        os.environ.setdefault("HYPERNETS_DATA", str(_STAGED_DATA))
