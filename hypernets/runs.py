"""Named training runs: build a registry method with its options, train it once, store it.

Every chapter trains its methods through this module. A run name is a registry name
(``bbh``) or a variant whose options name the registry method
(``{"bbh_single": {"method": "bbh", "architecture": "single"}}``); its options go to the method's
constructor, except :data:`FIT_OPTIONS`, which set its training. A :class:`RunRequest` is one
run with its data and settings; :func:`train_runs` loads each from the run store
(:mod:`hypernets.store`) or trains it there, resuming from its last epoch after an
interruption.
"""

from __future__ import annotations

import platform
import time
import warnings
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from hypernets.likelihoods import Categorical, Likelihood
from hypernets.methods.base import Method
from hypernets.methods.registry import METHODS, make_method, method_label
from hypernets.published import method_label as published_label
from hypernets.records import RecordRemade, RunRecords, default_records, plain
from hypernets.seeding import seeded
from hypernets.store import STORE_FORMAT, RunStore, canonical_json, request_hash
from hypernets.targets import TargetNet, get_target
from hypernets.training import (
    TRAINING_VERSION,
    Transform,
    fit,
    plain_settings,
    predict,
    qualified_name,
    tensor_digest,
)
from hypernets.validation import check_choice, check_int, check_positive_int

#: A stored run's checkpoint is written after the first epoch that ends this many seconds
#: after the last write (every epoch of a long run; not every step of a full-batch one).
CHECKPOINT_EVERY_S = 30.0

#: Keys of a run's options that set training, not the method's constructor.
FIT_OPTIONS = ("method", "lr", "epochs", "steps", "batch_size", "precision")


def resolve_target(target: str | TargetNet) -> TargetNet:
    """A target given by name (:func:`~hypernets.targets.get_target`) or as a TargetNet."""
    if isinstance(target, TargetNet):
        return target
    if isinstance(target, str):
        return get_target(target)
    raise TypeError(f"target must be a target name or a TargetNet, got {type(target).__name__}")


@dataclass
class TrainedMethod:
    """A trained method with its run name, registry name, label, training record and store key.

    ``train_time_s`` is the wall time its training took when it was trained (also when it is
    loaded from the store); ``loaded`` says whether it came from the store or its record
    (``from_record``), and ``trained_with`` where it was trained (torch version, device,
    threads, finish time).

    A run served from its record (:mod:`hypernets.records`) has no method in memory: ``method``
    loads it from the store, or trains it again, when it is first used, and :meth:`evaluated`
    returns what its record kept without touching the method. A restored method whose training
    history differs from the record's re-makes the record (see :func:`train_run`).
    """

    name: str
    method_name: str
    _method: Method | None
    train_time_s: float
    history: list[dict] = field(repr=False)
    key: str | None = None
    loaded: bool = False
    trained_with: dict = field(default_factory=dict, repr=False)
    records: RunRecords | None = field(default=None, repr=False)
    document: dict | None = field(default=None, repr=False)
    restore: Callable[[], Method] | None = field(default=None, repr=False)
    from_record: bool = False
    _read_record: bool = field(default=False, init=False, repr=False)
    _remade_after_read: bool = field(default=False, init=False, repr=False)

    @property
    def source(self) -> str:
        """Where this run came from: ``"record"`` (its record in ``book/records``), ``"store"``
        (the store of trained runs) or ``"trained"`` (trained by this call)."""
        return "record" if self.from_record else "store" if self.loaded else "trained"

    @property
    def label(self) -> str:
        """The run's label: the registry's, or the published tables' for variants like ``bbh_single``."""
        return published_label(self.name) if self.name != self.method_name else method_label(self.name)

    @property
    def method(self) -> Method:
        """The trained method (for a run served from its record: loaded or trained again now)."""
        if self._method is None:
            if self.restore is None:
                raise RuntimeError(f"run {self.name!r} has no method and cannot restore one")
            self._method = self.restore()
        return self._method

    def release(self) -> None:
        """Let go of the method of a run that can restore it (see :attr:`method`)."""
        if self.restore is None:
            raise RuntimeError(f"run {self.name!r} cannot restore its method once released")
        self._method = None

    @property
    def in_memory(self) -> bool:
        """Whether the method is in memory (False for a run served from its record, until used)."""
        return self._method is not None

    def evaluated(self, name: str, arguments: Mapping[str, Any], version: int,
                  compute: Callable[[], Any]) -> Any:
        """``compute()``, or the value the run's record kept for the same evaluation.

        ``name``, ``arguments`` (plain values: data hashes, sample counts, seeds) and
        ``version`` identify the evaluation; ``compute`` must return plain JSON values (never
        None). Without records the value is computed every time; either way it is returned as
        a record reads it back (:func:`~hypernets.records.plain`), so a page does not depend on
        whether its runs kept records. Raises :class:`~hypernets.records.RecordRemade` (after
        keeping the value) where computing it re-made the record that earlier values were
        read from.
        """
        if self.records is None:
            return plain(compute())
        kept = self.records.evaluation(self.key, self.document, name, arguments, version)
        if kept is not None:
            self._read_record = True
            return kept
        value = self.records.save_evaluation(self.key, self.document, name, arguments, version,
                                             compute())
        if self._remade_after_read:
            self._remade_after_read = self._read_record = False
            raise RecordRemade(
                f"run {self.name!r} (key {self.key}): its record was re-made while evaluating "
                f"{name!r}, after values of the old record had been read; evaluate the run "
                "again (hypernets-run --train-only does) so that every value comes from one "
                "training")
        return value

    def remake_record(self, restored: TrainedMethod) -> None:
        """Re-make this run's record from ``restored`` (the same request, loaded from the store
        or trained again) if their training histories differ; values read from the old record
        are then stale (:meth:`evaluated` raises :class:`~hypernets.records.RecordRemade`)."""
        if _training_values(restored.history) == _training_values(self.history):
            return
        warnings.warn(
            f"run {self.name!r} (key {self.key}) as restored (trained with "
            f"{restored.trained_with}) differs from its record (trained with "
            f"{self.trained_with}); the record is re-made from it and its evaluations computed "
            "again", RuntimeWarning, stacklevel=3)
        self.records.save_run(self.key, self.document, history=restored.history,
                              train_time_s=restored.train_time_s,
                              trained_with=restored.trained_with, replace=True)
        self.history, self.train_time_s = restored.history, restored.train_time_s
        self.trained_with = restored.trained_with
        self._remade_after_read = self._read_record


def _training_values(history: list[dict]) -> list[dict]:
    """A training history without its wall times (which differ between machines and sittings)."""
    return plain([{k: v for k, v in epoch.items() if not k.startswith("time_")}
                  for epoch in history])


class TestError:
    """``fit``'s per-epoch evaluation: the test error (%) of the mean predictive of S nets.

    Sampling is seeded by ``seed`` and leaves the global RNG alone, so a run evaluated every
    epoch trains exactly as one that is not. Its :meth:`store_key` enters the run's key.
    """

    __test__ = False  # not a pytest class

    def __init__(self, x: Tensor, y: Tensor, *, n_samples: int, batch_size: int = 1000,
                 seed: int = 0):
        self.x, self.y = x, y
        self.n_samples = check_positive_int("n_samples", n_samples)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.seed = check_int("seed", seed)

    def __call__(self, method: Method) -> dict[str, float]:
        with seeded(self.seed, method.device):
            probs = predict(method, self.x, method.n_distinct_nets(self.n_samples),
                            batch_size=self.batch_size)
        error = (probs.mean(0).argmax(-1) != self.y.to(probs.device)).float().mean()
        return {"test_error_pct": 100 * float(error)}

    def store_key(self) -> dict[str, Any]:
        return {"kind": "test_error", "x": tensor_digest(self.x)["sha256"],
                "y": tensor_digest(self.y)["sha256"], "n_samples": self.n_samples,
                "batch_size": self.batch_size, "seed": self.seed}


@dataclass(frozen=True, eq=False)
class RunRequest:
    """One run: its name and options, target, data and training settings.

    ``options`` are the run's options as a profile gives them (constructor options and
    :data:`FIT_OPTIONS`); ``epochs`` or ``steps``, ``batch_size`` and ``precision`` are the
    shared settings that a run's own options override. ``evaluate`` (e.g. :class:`TestError`)
    runs every ``eval_every`` epochs and at the end, and must have a ``store_key()``; so must
    ``transform``.
    """

    name: str
    target: str | TargetNet
    x: Tensor
    y: Tensor
    batch_size: int
    epochs: int | None = None
    steps: int | None = None
    likelihood: Likelihood | None = None
    device: str | torch.device = "cpu"
    seed: int = 0
    options: Mapping[str, Any] | None = None
    transform: Transform | None = None
    evaluate: Callable[[Method], dict[str, float]] | None = None
    precision: str = "fp32"
    eval_every: int = 1

    def __post_init__(self):
        check_positive_int(f"run {self.name!r}: eval_every", self.eval_every)

    def settings(self) -> dict[str, Any]:
        """The resolved training settings: method, constructor options, epochs or steps,
        batch size, lr, precision (a run's own options override the shared ones)."""
        options = dict(self.options or {})
        fit_settings = {key: options.pop(key) for key in FIT_OPTIONS if key in options}
        method_name = fit_settings.get("method", self.name)
        if method_name not in METHODS:
            raise ValueError(f"run {self.name!r}: method must be one of {sorted(METHODS)}, got "
                             f"{method_name!r} (a variant names its registry method in the "
                             "option 'method')")
        epochs, steps = self.epochs, self.steps
        if "epochs" in fit_settings or "steps" in fit_settings:
            # A run's own training length replaces the shared one, whichever unit either is in.
            epochs, steps = fit_settings.get("epochs"), fit_settings.get("steps")
        if (epochs is None) == (steps is None):
            raise ValueError(f"run {self.name!r}: give exactly one of epochs or steps")
        precision = check_choice(f"run {self.name!r}: precision",
                                 fit_settings.get("precision", self.precision), ("fp32", "bf16"))
        batch_size = check_positive_int(f"run {self.name!r}: batch_size",
                                        fit_settings.get("batch_size", self.batch_size))
        return {"method": method_name, "options": options, "epochs": epochs, "steps": steps,
                "batch_size": min(batch_size, len(self.x)), "lr": fit_settings.get("lr"),
                "precision": precision}

    def total_steps(self) -> int:
        settings = self.settings()
        if settings["steps"] is not None:
            return settings["steps"]
        return settings["epochs"] * -(-len(self.x) // settings["batch_size"])

    def build(self) -> Method:
        """The run's method, initialised from its seed."""
        settings = self.settings()
        torch.manual_seed(self.seed)
        return make_method(settings["method"], resolve_target(self.target),
                           self.likelihood or Categorical(), **settings["options"])


def _hook_key(what: str, hook: Any) -> Any:
    if hook is None:
        return None
    if not callable(getattr(hook, "store_key", None)):
        raise TypeError(f"a stored run's {what} needs a store_key() method giving what decides "
                         f"it; {hook!r} has none")
    return hook.store_key()


def key_document(request: RunRequest, method: Method) -> dict[str, Any]:
    """What decides a run, as plain values: its hash is the run's store key.

    Besides the request's settings it holds the method's class, resolved settings, parameter
    shapes and ``training_version``, and :data:`~hypernets.training.TRAINING_VERSION`: a
    change to a method's training, or to ``fit``, increases one of them, and
    ``tests/test_store.py`` fails until it has (or the change is declared result-neutral).
    """
    settings = request.settings()
    target = method.target
    return {
        "store_format": STORE_FORMAT,
        "training_version": TRAINING_VERSION,
        "run": request.name,
        "method": qualified_name(type(method)),
        "method_version": type(method).training_version,
        "method_settings": plain_settings(method),
        "options": _plain_options(settings["options"]),
        "parameters": {name: list(t.shape) for name, t in method.state_dict().items()},
        "likelihood": qualified_name(type(method.likelihood)),
        "likelihood_settings": plain_settings(method.likelihood),
        "target": str(getattr(target, "name", type(target).__name__)),
        "target_layers": [[name, qualified_name(type(layer)), plain_settings(layer)]
                          for name, layer in target.layers],
        "x": tensor_digest(request.x), "y": tensor_digest(request.y),
        "epochs": settings["epochs"], "steps": settings["steps"],
        "batch_size": settings["batch_size"], "lr": settings["lr"],
        "seed": request.seed, "precision": settings["precision"],
        "device": torch.device(request.device).type,
        "transform": _hook_key("transform", request.transform),
        "evaluate": _hook_key("evaluate", request.evaluate),
        # Evaluated every epoch unless the document says otherwise (keys stay those of format 1).
        **({"eval_every": request.eval_every}
           if request.evaluate is not None and request.eval_every != 1 else {}),
    }


def _plain_options(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain_options(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_options(v) for v in value]
    if value is None or type(value) in (bool, int, float, str):
        return value
    raise ValueError(f"run options must be plain values (numbers, strings, lists, dicts), got "
                     f"{value!r}")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: str | torch.device = "cpu") -> str:
    """The GPU's name, or the CPU's model name (from /proc/cpuinfo where there is one)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_record(device: torch.device) -> dict[str, Any]:
    """Where a run was trained: torch version, device name, threads, finish time (UTC)."""
    name = device_name(device)
    return {"torch": str(torch.__version__), "device": name, "threads": torch.get_num_threads(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _from_entry(request: RunRequest, settings: dict, method: Method, entry: dict,
                key: str) -> TrainedMethod:
    method.load_state_dict(entry["method"])
    method.to(torch.device(request.device)).eval()
    return TrainedMethod(request.name, settings["method"], method, entry["train_time_s"],
                         entry["history"], key, loaded=True, trained_with=entry["trained_with"])


class RunNotAdmitted(Exception):
    """A run that would have to train was refused by the ``admit`` hook of :func:`train_run`."""


def train_run(request: RunRequest, *, store: RunStore | None = None,
              records: RunRecords | None = None, progress: bool = False,
              on_step: Callable[[int], None] | None = None,
              admit: Callable[[RunRequest], bool] | None = None) -> TrainedMethod:
    """Load ``request``'s run from ``store``, or train it there (resuming a stopped run).

    Without a store the run trains in memory. Either way the global RNG is left as it was, so
    what follows does not depend on whether the run was trained or loaded. ``on_step``
    is called after every step trained here (see :func:`~hypernets.training.fit`).

    With ``records`` (:mod:`hypernets.records`) a run that has a record is served from it
    without loading its weights (they are loaded, or trained again, when its method is first
    used; one whose training then differs from its record's re-makes the record, see
    :meth:`TrainedMethod.remake_record`), and a run trained or loaded here gets a record.
    ``admit``, if given, is asked
    before a run starts (or resumes) training; if it says no, :class:`RunNotAdmitted` is
    raised and nothing is trained.
    """
    if records is not None:
        with seeded(request.seed):
            document = key_document(request, request.build())
        key = request_hash(document)
        record = records.load(key, document)
        if record is None:
            run = train_run(request, store=store, progress=progress, on_step=on_step,
                            admit=admit)
            records.save_run(key, document, history=run.history, train_time_s=run.train_time_s,
                             trained_with=run.trained_with)
        else:
            run = TrainedMethod(request.name, request.settings()["method"], None,
                                record["train_time_s"], record["history"], key, loaded=True,
                                trained_with=record["trained_with"], from_record=True)

        def restore() -> Method:
            restored = train_run(request, store=store, progress=progress)
            run.remake_record(restored)
            return restored.method

        run.key, run.records, run.document, run.restore = key, records, document, restore
        return run
    settings = request.settings()
    device = torch.device(request.device)
    with seeded(request.seed):
        method = request.build()
        key = document = None
        if store is not None:
            document = key_document(request, method)
            key = request_hash(document)
            entry = store.load(key, document)
            if entry is not None:
                return _from_entry(request, settings, method, entry, key)
        if admit is not None and not admit(request):
            raise RunNotAdmitted(request.name)
        _synchronize(device)
        started = time.perf_counter()
        fit_kwargs = dict(epochs=settings["epochs"], steps=settings["steps"],
                          batch_size=settings["batch_size"], lr=settings["lr"], device=device,
                          seed=request.seed, transform=request.transform,
                          evaluate=request.evaluate, eval_every=request.eval_every,
                          precision=settings["precision"], progress=progress, on_step=on_step)
        if store is None:
            history = fit(method, request.x, request.y, **fit_kwargs)
        else:
            with store.training(key, request.name):
                entry = store.load(key, document)  # finished by another process meanwhile?
                if entry is not None:
                    return _from_entry(request, settings, method, entry, key)
                history = fit(method, request.x, request.y, checkpoint=store.checkpoint_path(key),
                              resume=True, checkpoint_every_s=CHECKPOINT_EVERY_S, **fit_kwargs)
        _synchronize(device)
        # A resumed run's time includes its earlier sittings (fit's history carries them).
        train_time_s = history[-1]["time_total_s"] if history else time.perf_counter() - started
        trained_with = machine_record(device)
        if store is not None:
            store.save(key, document, method_state=method.state_dict(), history=history,
                       train_time_s=train_time_s, trained_with=trained_with)
    return TrainedMethod(request.name, settings["method"], method, train_time_s, history, key,
                         trained_with=trained_with)


def timing_key(request: RunRequest) -> str:
    """What a run's step and evaluation times depend on: its request but its seed (a training
    seed changes the numbers a run computes, not the work)."""
    target = request.target if isinstance(request.target, str) else request.target.name
    return canonical_json({
        "run": request.name, "target": str(target), "settings": _plain_options(request.settings()),
        "x": [list(request.x.shape), str(request.x.dtype)],
        "y": [list(request.y.shape), str(request.y.dtype)],
        "device": str(request.device), "transform": _hook_key("transform", request.transform),
        "evaluate": _hook_key("evaluate", request.evaluate), "eval_every": request.eval_every})


def estimate_seconds(request: RunRequest, *, timed_steps: int = 3,
                     cache: dict[str, dict[str, float]] | None = None) -> dict[str, float]:
    """How long ``request`` takes to train here, from a few timed steps of the real run.

    A fresh copy of the run's method trains ``timed_steps + 1`` steps with the run's settings
    (precision, transform) on its first mini-batches; the first step is a warm-up and the
    others are timed. With an ``evaluate`` hook one call of it is timed too. Returns
    ``step_s``, ``steps``, ``eval_s`` and ``total_s = step_s * steps + eval_s * epochs``.
    Nothing is stored and the global RNG is left alone. With a ``cache`` (a dict), a run that
    differs from one timed before only in its seed (:func:`timing_key`) takes that one's
    numbers without timing it again.
    """
    timed_steps = check_positive_int("timed_steps", timed_steps)
    if cache is not None:
        key = timing_key(request)
        if key not in cache:
            cache[key] = estimate_seconds(request, timed_steps=timed_steps)
        return dict(cache[key])
    settings = request.settings()
    batch_size = settings["batch_size"]
    n = min(len(request.x), batch_size * (timed_steps + 1))
    stamps = []
    with seeded(request.seed):
        method = request.build()
        fit(method, request.x[:n], request.y[:n], steps=timed_steps + 1, batch_size=batch_size,
            lr=settings["lr"], device=request.device, seed=request.seed,
            transform=request.transform, precision=settings["precision"], progress=False,
            on_step=lambda step: (_synchronize(torch.device(request.device)),
                                  stamps.append(time.perf_counter())))
        eval_s = 0.0
        if request.evaluate is not None:
            started = time.perf_counter()
            with torch.no_grad():
                request.evaluate(method)
            eval_s = time.perf_counter() - started
    step_s = (stamps[-1] - stamps[0]) / timed_steps
    steps = request.total_steps()
    epochs = -(-steps // -(-len(request.x) // batch_size))
    return {"step_s": step_s, "steps": steps, "eval_s": eval_s,
            "total_s": step_s * steps + eval_s * epochs}


def check_requests(requests: Sequence[RunRequest]) -> None:
    """Refuse an empty list, a run named twice, or a run whose settings are invalid."""
    if isinstance(requests, RunRequest) or not requests:
        raise ValueError(f"requests must be a non-empty list of RunRequest, got {requests!r}")
    names = [request.name for request in requests]
    if len(set(names)) != len(names):
        raise ValueError(f"requests name a run twice: {names}")
    for request in requests:
        request.settings()


def _resolve(value: Any, kind: type, default: Callable[[], Any], what: str) -> Any:
    if isinstance(value, str):
        if value != "default":
            raise ValueError(f"{what} must be a {kind.__name__}, 'default' or None, got {value!r}")
        return default()
    if value is not None and not isinstance(value, kind):
        raise TypeError(f"{what} must be a {kind.__name__}, 'default' or None, got {value!r}")
    return value


def resolve_store(store: RunStore | None | str) -> RunStore | None:
    """A RunStore, ``"default"`` (:class:`~hypernets.store.RunStore` at its default root) or None."""
    return _resolve(store, RunStore, RunStore, "store")


def progress_bar(requests: Sequence[RunRequest]) -> tqdm:
    """One bar over the steps of ``requests`` (see :func:`train_runs`)."""
    return tqdm(total=sum(request.total_steps() for request in requests), unit="step",
                desc="training", smoothing=0.05, mininterval=2.0)


def resolve_records(records: RunRecords | None | str) -> RunRecords | None:
    """RunRecords, ``"default"`` (:func:`~hypernets.records.default_records`: those at
    ``$HYPERNETS_RECORDS``, or none) or None."""
    return _resolve(records, RunRecords, default_records, "records")


def train_runs(requests: Sequence[RunRequest], *, store: RunStore | None | str = "default",
               records: RunRecords | None | str = "default", progress: bool | tqdm = False,
               after_each: Callable[[TrainedMethod], None] | None = None,
               admit: Callable[[RunRequest], bool] | None = None) -> dict[str, TrainedMethod]:
    """Train (or load) every request one after the other: run name -> TrainedMethod.

    ``store`` is a :class:`~hypernets.store.RunStore`, ``"default"`` (the store at
    ``$HYPERNETS_RUNS`` or the per-user cache) or None (train in memory, store nothing);
    ``records`` likewise (:func:`resolve_records`; see :func:`train_run`).
    Every request is checked before the first one trains. ``progress`` draws one bar over the
    steps of all runs still to train, with its ETA (or advances a bar of
    :func:`progress_bar` shared with other calls). ``after_each`` is called with every run as
    soon as it is there (to evaluate it before the next one trains). A run that ``admit``
    refuses to train (see :func:`train_run`) is left out of the result.
    """
    check_requests(requests)
    store = resolve_store(store)
    records = resolve_records(records)
    bar = progress_bar(requests) if progress is True else progress or None
    trained = {}
    for request in requests:
        last = None  # steps done when this run's last step was counted

        def advance(step: int) -> None:
            nonlocal last
            if last is None:  # a resumed run: its earlier sittings' steps are not trained here
                bar.total -= step - 1
                last = step - 1
            bar.update(step - last)
            last = step

        if bar is not None:
            bar.set_description(f"training {request.name}")
        try:
            trained[request.name] = train_run(request, store=store, records=records,
                                              on_step=advance if bar is not None else None,
                                              admit=admit)
        except RunNotAdmitted:
            pass
        if bar is not None and last is None:  # loaded, or not admitted: nothing trained
            bar.total -= request.total_steps()
            bar.refresh()
        if after_each is not None and request.name in trained:
            after_each(trained[request.name])
    if progress is True:
        bar.close()
    return trained


def run_requests(methods: Sequence[str], target: str | TargetNet, x: Tensor, y: Tensor, *,
                 epochs: int | None = None, steps: int | None = None, batch_size: int,
                 likelihood: Likelihood | None = None, device: str | torch.device = "cpu",
                 seed: int = 0, options: Mapping[str, Mapping[str, Any]] | None = None,
                 transform: Transform | None = None,
                 evaluate: Callable[[Method], dict[str, float]] | None = None,
                 precision: str = "fp32") -> list[RunRequest]:
    """One :class:`RunRequest` per run of ``methods``, sharing data and settings.

    ``options`` maps run names to their options (see :class:`RunRequest`). A key that is
    neither a run here nor a registry method is refused as a likely typo; options of registry
    methods not run here are ignored, so one profile can serve several method lists.
    """
    if isinstance(methods, str) or not methods:
        raise ValueError(f"methods must be a non-empty list of run names, got {methods!r}")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods lists a run twice: {list(methods)}")
    options = dict(options or {})
    unknown = sorted(set(options) - set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"options name runs {unknown} that are neither in methods {list(methods)} "
                         f"nor registry methods {sorted(METHODS)}")
    target = resolve_target(target)
    requests = [RunRequest(name, target, x, y, batch_size, epochs=epochs, steps=steps,
                           likelihood=likelihood, device=device, seed=seed,
                           options=options.get(name), transform=transform, evaluate=evaluate,
                           precision=precision) for name in methods]
    for request in requests:
        request.settings()
    return requests


def train_methods(methods: Sequence[str], target: str | TargetNet, x: Tensor, y: Tensor, *,
                  store: RunStore | None | str = "default", progress: bool = False,
                  **settings: Any) -> dict[str, TrainedMethod]:
    """Train (or load from ``store``) every run of ``methods`` on (x, y): run name -> TrainedMethod.

    ``settings`` are those of :func:`run_requests`; ``store`` and ``progress`` as in
    :func:`train_runs`.
    """
    return train_runs(run_requests(methods, target, x, y, **settings), store=store,
                      progress=progress)


def train_method(name: str, target: str | TargetNet, x: Tensor, y: Tensor, *,
                 options: Mapping[str, Any] | None = None,
                 store: RunStore | None | str = "default", progress: bool = False,
                 **settings: Any) -> TrainedMethod:
    """Train (or load) run ``name`` with its ``options``; see :func:`train_methods`."""
    return train_methods([name], target, x, y, options={name: options or {}}, store=store,
                         progress=progress, **settings)[name]
