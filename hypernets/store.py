"""A store of trained runs: a run trains once and every chapter that asks for it loads it.

An entry is a folder named by the SHA-256 of the run's *key document*, a JSON object of what
decides the run (method, its settings and training version, target, data hashes, training
settings, seed, device type, precision; see :func:`hypernets.runs.key_document`). It holds

- ``run.pt``: the trained method's state, its training history and the key document, written
  atomically with a SHA-256 of its content (:func:`hypernets.training.write_verified`);
- ``checkpoint.pt`` while the run trains: ``fit``'s checkpoint after every epoch, so a stopped
  run resumes where it was; it is removed once ``run.pt`` exists;
- ``request.json``: the key document, for people;
- ``lock``: held (``flock``) by the process that trains the run.

A corrupt or truncated ``run.pt`` is never loaded: it is renamed ``run.pt.corrupt`` and the
run trains again. An entry whose stored key document differs from the request's (a hash
collision, or a file copied by hand) is refused.

The root is ``$HYPERNETS_RUNS``, else ``runs`` in the per-user cache
(``pooch.os_cache("hypernets")``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pooch

from hypernets.training import read_verified, write_verified

#: Environment variable naming the store's folder.
RUNS_ENV = "HYPERNETS_RUNS"

#: Version of an entry's layout and of the key document's fields.
STORE_FORMAT = 1

_ENTRY_KEYS = ("format", "request", "method", "history", "train_time_s", "trained_with")


class StoreError(RuntimeError):
    """The store cannot serve a request (unusable folder, a run locked by another process)."""


def default_root() -> Path:
    """``$HYPERNETS_RUNS`` if set (it must not name a file), else the per-user cache's ``runs``."""
    from_env = os.environ.get(RUNS_ENV)
    if from_env is not None:
        if not from_env.strip():
            raise StoreError(f"{RUNS_ENV} is set but empty; unset it to use the per-user cache, "
                             "or name a folder")
        root = Path(from_env).expanduser()
        if root.exists() and not root.is_dir():
            raise StoreError(f"{RUNS_ENV}={from_env} is not a folder")
        return root
    return Path(pooch.os_cache("hypernets")) / "runs"


def request_hash(document: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical JSON of a key document (sorted keys, no spaces)."""
    return hashlib.sha256(canonical_json(document).encode()).hexdigest()


def canonical_json(document: Mapping[str, Any]) -> str:
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"a run's key document must hold plain JSON values: {err}") from err


class RunStore:
    """Entries of trained runs under ``root`` (default :func:`default_root`)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = default_root() if root is None else Path(root)
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"the run store {self.root} is not a folder")

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def folder(self, key: str) -> Path:
        return self.root / key

    def checkpoint_path(self, key: str) -> Path:
        return self.folder(key) / "checkpoint.pt"

    def has(self, key: str) -> bool:
        return (self.folder(key) / "run.pt").exists()

    def load(self, key: str, document: Mapping[str, Any]) -> dict | None:
        """The entry of ``key`` (method state, history, train time), or None if there is none.

        A damaged entry is set aside as ``run.pt.corrupt`` with a warning and None returned,
        so the run trains again; an entry of another key document raises StoreError.
        """
        path = self.folder(key) / "run.pt"
        if not path.exists():
            return None
        try:
            entry = read_verified(path, required=_ENTRY_KEYS, what="stored run",
                                  writer="hypernets.store")
        except ValueError as err:
            path.replace(path.with_name("run.pt.corrupt"))
            warnings.warn(f"{err.args[0].split('; delete it')[0]}: set aside as run.pt.corrupt; "
                          "the run trains again", RuntimeWarning, stacklevel=2)
            return None
        if entry["format"] != STORE_FORMAT:
            raise StoreError(f"stored run {path} has store format {entry['format']}, this version "
                             f"of hypernets reads {STORE_FORMAT}; delete the folder to train again")
        if canonical_json(entry["request"]) != canonical_json(document):
            raise StoreError(f"stored run {path} was trained for another request than the one "
                             "with its key (a copied or edited entry?); delete the folder to "
                             "train again")
        return entry

    def save(self, key: str, document: Mapping[str, Any], *, method_state: dict,
             history: list[dict], train_time_s: float, trained_with: Mapping[str, Any]) -> Path:
        """Write the entry of ``key`` atomically and remove its checkpoint."""
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "request.json").write_text(json.dumps(document, indent=2, sort_keys=True) + "\n",
                                             encoding="utf-8")
        path = folder / "run.pt"
        write_verified(path, {"format": STORE_FORMAT, "request": dict(document),
                              "method": method_state, "history": history,
                              "train_time_s": float(train_time_s),
                              "trained_with": dict(trained_with)}, verify=True)
        self.checkpoint_path(key).unlink(missing_ok=True)
        return path

    @contextmanager
    def training(self, key: str, name: str) -> Iterator[None]:
        """Hold the entry's lock while run ``name`` trains; another holder raises StoreError."""
        folder = self.folder(key)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the run store folder {folder}: {err} (set "
                             f"{RUNS_ENV} to a writable folder)") from err
        with open(folder / "lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                raise StoreError(f"run {name!r} is being trained by {holder} (store entry "
                                 f"{folder}); wait for it to finish, then run again") from None
            lock.seek(0)
            lock.truncate()
            lock.write(f"process {os.getpid()}\n")
            lock.flush()
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
