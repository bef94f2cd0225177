"""Run records: what a page needs of a trained run, small enough to commit beside the page.

The run store (:mod:`hypernets.store`) keeps a run's weights on the machine that trained it.
A book page needs far less of a run: its training history and time, and what the page's
evaluations computed from it (a row of metrics, the bins of a reliability diagram). A *record*
keeps exactly that, keyed like the store by the SHA-256 of the run's key document, in
``<root>/<key>.json``. A chapter whose runs take longer than one sitting on one machine is then
trained over several sittings, on several machines: each sitting trains some runs, evaluates
them, and commits their records; the page is executed from the records once every run has one
(and re-executed at any later commit without training), and a run whose record lacks an
evaluation is loaded from the store, or trained again, to compute it. A run so restored whose
training history differs from its record's (trained again on another CPU, whose kernels round
differently) re-makes the record from itself: its evaluations are computed again, so a page
never mixes values of two trainings.

An evaluation is kept under the SHA-256 of its name, its arguments (data hashes, sample
counts, seeds) and its version: a change to what an evaluation computes must raise its version
(``tests/test_records.py`` pins the code of every versioned evaluation), so an old value is
never returned for the new computation.

A file is written atomically with the SHA-256 of its content; a damaged file is set aside as
``<key>.json.corrupt`` and the run's record starts over (and its run is trained again if no
store holds it); a file whose key document differs from the request's is refused.

The root is ``$HYPERNETS_RECORDS``; unset, runs keep no records. ``hypernets-run`` sets it to
``book/records`` for the result profiles (``full``, ``paper``).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hypernets.store import canonical_json

#: Environment variable naming the records' folder.
RECORDS_ENV = "HYPERNETS_RECORDS"

#: Version of a record file's layout.
RECORDS_FORMAT = 1

_FIELDS = ("format", "request", "history", "train_time_s", "trained_with", "evaluations")


class RecordError(RuntimeError):
    """A record cannot serve a request (another run's record, an unreadable folder)."""


class RecordRemade(RecordError):
    """A run's record was re-made (its run, trained again or loaded, differs from it) after
    values of the old record had been read: those values belong to another training."""


def default_records() -> RunRecords | None:
    """The records at ``$HYPERNETS_RECORDS``, or None where it is unset."""
    root = os.environ.get(RECORDS_ENV)
    if root is None:
        return None
    if not root.strip():
        raise RecordError(f"{RECORDS_ENV} is set but empty; unset it to keep no records, or "
                          "name a folder")
    return RunRecords(Path(root).expanduser())


def evaluation_key(name: str, arguments: Mapping[str, Any], version: int) -> str:
    """SHA-256 of an evaluation's name, arguments and version."""
    return hashlib.sha256(canonical_json({"name": name, "arguments": dict(arguments),
                                          "version": version}).encode()).hexdigest()


def _content_hash(record: Mapping[str, Any]) -> str:
    content = json.dumps({k: record[k] for k in _FIELDS}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(content.encode()).hexdigest()


class RunRecords:
    """The record files under ``root``, one per run key."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise RecordError(f"the run records {self.root} are not a folder")

    def __repr__(self) -> str:
        return f"RunRecords({str(self.root)!r})"

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def load(self, key: str, document: Mapping[str, Any]) -> dict | None:
        """The record of ``key``, or None if there is none (or it was damaged and set aside)."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or any(k not in record for k in (*_FIELDS, "sha256")):
                raise ValueError("it lacks fields of a run record")
            if record["sha256"] != _content_hash(record):
                raise ValueError("its content does not match its SHA-256")
        except ValueError as err:  # json.JSONDecodeError is a ValueError
            path.replace(path.with_name(path.name + ".corrupt"))
            warnings.warn(f"run record {path} is damaged ({err}): set aside as "
                          f"{path.name}.corrupt; the run is evaluated again", RuntimeWarning,
                          stacklevel=2)
            return None
        if record["format"] != RECORDS_FORMAT:
            raise RecordError(f"run record {path} has format {record['format']}, this version of "
                              f"hypernets reads {RECORDS_FORMAT}; delete it to evaluate again")
        if canonical_json(record["request"]) != canonical_json(document):
            raise RecordError(f"run record {path} belongs to another request than the one with "
                              "its key (a copied or edited file?); delete it to evaluate again")
        return record

    def _write(self, key: str, record: dict) -> None:
        record = {k: record[k] for k in _FIELDS}
        record["sha256"] = _content_hash(record)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n",
                       encoding="utf-8")
        tmp.replace(path)  # never a half-written record

    def save_run(self, key: str, document: Mapping[str, Any], *, history: list[dict],
                 train_time_s: float, trained_with: Mapping[str, Any],
                 replace: bool = False) -> dict:
        """Start (or keep) the record of a trained run; its evaluations are kept. With
        ``replace`` the record starts over from this run, without evaluations (for a run
        whose training differs from the one its record kept)."""
        record = None if replace else self.load(key, document)
        if record is None:
            record = {"format": RECORDS_FORMAT, "request": dict(document), "history": history,
                      "train_time_s": float(train_time_s), "trained_with": dict(trained_with),
                      "evaluations": {}}
            self._write(key, plain(record))
        return record

    def evaluation(self, key: str, document: Mapping[str, Any], name: str,
                   arguments: Mapping[str, Any], version: int) -> Any | None:
        """The kept value of an evaluation of run ``key``, or None."""
        record = self.load(key, document)
        if record is None:
            return None
        entry = record["evaluations"].get(evaluation_key(name, arguments, version))
        return None if entry is None else entry["value"]

    def save_evaluation(self, key: str, document: Mapping[str, Any], name: str,
                        arguments: Mapping[str, Any], version: int, value: Any) -> Any:
        """Keep an evaluation's value (plain JSON: numbers, strings, lists, mappings, not None);
        returns it as it will be read back."""
        if value is None:
            raise ValueError(f"evaluation {name!r} returned None; a record keeps values only")
        record = self.load(key, document)
        if record is None:
            raise RecordError(f"run {key} has no record to add evaluation {name!r} to")
        entry = plain({"name": name, "arguments": dict(arguments), "version": version,
                        "value": value})
        record["evaluations"][evaluation_key(name, arguments, version)] = entry
        self._write(key, record)
        return entry["value"]

def plain(value: Any) -> Any:
    """``value`` through JSON (NaN allowed, as Python's json writes it; numpy and torch scalars
    become numbers): a value that is not plain JSON is refused when it is kept, not when it
    is read."""
    def scalar(item: Any) -> Any:
        if callable(getattr(item, "item", None)) and getattr(item, "ndim", None) == 0:
            return item.item()
        raise TypeError(f"{type(item).__name__} {item!r} is not a plain JSON value")

    try:
        return json.loads(json.dumps(value, default=scalar))
    except (TypeError, ValueError) as err:
        raise ValueError(f"a run record holds plain JSON values only: {err}") from err
