"""One training loop for every method, and batched prediction over a whole data set."""

from __future__ import annotations

import hashlib
import io
import math
import numbers
import os
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor
from tqdm import tqdm

from hypernets import memory
from hypernets.likelihoods import Categorical, check_class_labels
from hypernets.methods.base import Method
from hypernets.validation import (
    check_bool,
    check_int,
    check_positive,
    check_positive_int,
    check_real,
)

Transform = Callable[[Tensor, torch.Generator], Tensor]
Evaluate = Callable[[Method], dict[str, float]]


#: First bytes of a checkpoint file; the header line also holds the format version, the
#: payload's SHA-256 and its length (see :func:`write_verified`).
CHECKPOINT_MAGIC = b"hypernets-checkpoint"
CHECKPOINT_FORMAT = 1

#: Version of the training loop of :func:`fit`: a change that can change what a run learns
#: must increase it, so that stored runs (:mod:`hypernets.store`) trained by the old loop are
#: not returned (``tests/test_store.py`` checks the code against ``tests/training_code.json``).
TRAINING_VERSION = 1
_PRECISIONS = ("fp32", "bf16")


def _check_tensor(name: str, value: Any) -> Tensor:
    if not isinstance(value, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def _check_data(method: Method, x: Tensor, y: Tensor, transform: Transform | None):
    _check_tensor("x", x)
    _check_tensor("y", y)
    if x.dim() == 0 or y.dim() == 0:
        raise ValueError(f"x and y must have a leading example dimension, got shapes "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ValueError("training data is empty")
    if transform is None and not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype} (convert it, or "
                         "pass a transform that does)")
    if isinstance(method.likelihood, Categorical):
        if y.dim() != 1:
            raise ValueError(f"y must hold one class index per example (shape [{len(y)}]) for a "
                             f"Categorical likelihood, got shape {tuple(y.shape)}")
        check_class_labels("y", y, method.target.n_outputs)


def _check_settings(device: torch.device, precision: str):
    if not isinstance(precision, str) or precision not in _PRECISIONS:
        raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
    if precision == "bf16" and device.type not in ("cpu", "cuda"):
        raise ValueError(f"precision='bf16' runs on the CPU or CUDA, not on {device.type!r}")


def autocast(device: str | torch.device, precision: str):
    """The context of a ``precision``: nothing for fp32, bf16 autocast for the matrix work.

    Under ``bf16`` convolutions and matrix products run in bfloat16 (on the CPU through
    oneDNN, on CUDA through cuBLAS/cuDNN), while parameters, optimiser state, gradients and
    everything autocast keeps in float32 stay there; likelihoods, KL terms and flows compute
    in float32 themselves (see :mod:`hypernets.likelihoods` and the methods).
    """
    device = torch.device(device)
    _check_settings(device, precision)
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def fit(method: Method, x: Tensor, y: Tensor, *, epochs: int | None = None,
        steps: int | None = None, batch_size: int = 128, lr: float | None = None,
        device: str | torch.device = "cpu", seed: int = 0, progress: bool = True,
        transform: Transform | None = None, evaluate: Evaluate | None = None,
        eval_every: int = 1, checkpoint: str | Path | None = None, resume: bool = False,
        checkpoint_every_s: float = 0.0,
        precision: str = "fp32", on_step: Callable[[int], None] | None = None) -> list[dict]:
    """Train ``method`` on (x, y) with its paper's optimiser; return per-epoch records.

    Give exactly one of ``epochs`` or ``steps`` (with ``steps`` the last epoch may be
    partial). Mini-batches are drawn without replacement from a generator seeded by
    ``seed``, which also seeds torch's global RNG used by the methods' noise. ``transform``
    augments each batch (e.g. random crops). ``evaluate(method)`` is called every
    ``eval_every`` epochs and at the end, in eval mode without gradients; its numbers join
    the record. For a Categorical likelihood ``y`` must hold int64 class indices in
    [0, C - 1], C being the target's outputs.

    ``checkpoint`` is written after every epoch (atomically: a temporary file, then a rename),
    or, with ``checkpoint_every_s``, after the first epoch that ends at least that many seconds
    after the last write, and after the last epoch (full-batch runs have one step an epoch).
    With ``resume`` an existing one is loaded and training continues where it stopped, giving
    the same result as an uninterrupted run; a resumed call may ask for more epochs or steps
    than the run that wrote it (train 2 epochs, then resume to 4). The checkpoint holds a
    fingerprint of what decides the run (method class, settings and parameter shapes,
    likelihood, target, hashes of x and y, batch size, steps per epoch, resolved learning
    rates, seed, precision, whether a transform is used); resuming with any of them different
    is refused, naming each field that differs. So is a truncated or corrupt file (a SHA-256 of
    the content is stored in its header), a checkpoint that has trained past the requested
    length, and one that stopped in the middle of an epoch when more steps are asked for. It
    is loaded with ``torch.load(weights_only=True)``: tensors and plain containers only.

    ``on_step(step)`` is called after every optimiser step with the number of steps done
    (e.g. to drive one progress bar over several runs).

    Each record: epoch, step, the epoch's mean loss and logged terms, wall time of the epoch
    and in total, and the evaluation numbers.
    """
    if not isinstance(method, Method):
        raise ValueError(f"method must be a hypernets Method, got {type(method).__name__}")
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs or steps")
    if epochs is not None:
        epochs = check_positive_int("epochs", epochs)
    if steps is not None:
        steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    if lr is not None:
        lr = check_positive("lr", lr)
    seed = check_int("seed", seed)
    eval_every = check_positive_int("eval_every", eval_every)
    resume = check_bool("resume", resume)
    if transform is not None and not callable(transform):
        raise ValueError(f"transform must be callable or None, got {transform!r}")
    if evaluate is not None and not callable(evaluate):
        raise ValueError(f"evaluate must be callable or None, got {evaluate!r}")
    if on_step is not None and not callable(on_step):
        raise ValueError(f"on_step must be callable or None, got {on_step!r}")
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise ValueError(f"checkpoint must be a path or None, got {checkpoint!r}")
        checkpoint = Path(checkpoint)
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    checkpoint_every_s = check_real("checkpoint_every_s", checkpoint_every_s, minimum=0.0)
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available")
    _check_settings(device, precision)
    _check_data(method, x, y, transform)

    n_train = len(x)
    batch_size = min(batch_size, n_train)
    steps_per_epoch = math.ceil(n_train / batch_size)
    total_steps = steps if steps is not None else epochs * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    method.to(device)
    x_given, y_given = x, y
    x, y = x.to(device), y.to(device)
    optimizer = method.configure_optimizer(lr)
    fingerprint = None
    if checkpoint is not None:  # hashes x and y: only worth it when there is a checkpoint
        fingerprint = _fingerprint(method, optimizer, x_given, y_given, batch_size=batch_size,
                                   steps_per_epoch=steps_per_epoch, seed=seed,
                                   precision=precision, transform=transform)
    del x_given, y_given
    history: list[dict] = []
    start_epoch = step = 0
    if resume and checkpoint.exists():
        state = read_verified(checkpoint)
        _check_fingerprint(checkpoint, fingerprint, state["fingerprint"])
        start_epoch, step = _check_progress(checkpoint, state, steps_per_epoch, total_steps)
        history = _restore(state, method, optimizer, shuffle)

    total_time = history[-1]["time_total_s"] if history else 0.0
    verified = False
    last_write = time.perf_counter()
    step_precision = autocast(device, precision)  # checked once; re-entered every step
    bar = tqdm(range(start_epoch, n_epochs), disable=not progress, desc=type(method).__name__)
    for epoch in bar:
        method.train()
        started = time.perf_counter()
        sums: dict[str, Tensor] = {}
        n_batches = 0
        order = torch.randperm(n_train, generator=shuffle).to(device)
        for k in range(steps_per_epoch):
            if step >= total_steps:
                break
            idx = order[k * batch_size:(k + 1) * batch_size]
            xb, yb = x[idx], y[idx]
            if transform is not None:
                xb = transform(xb, shuffle)
            with step_precision:
                loss, logs = method.training_loss(xb, yb, n_train=n_train,
                                                  epoch=epoch + k / steps_per_epoch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{type(method).__name__}: loss is {loss.item()} at "
                                         f"epoch {epoch}, step {step} (batch {k})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for name, value in {"loss": loss.detach(), **logs}.items():
                sums[name] = sums.get(name, 0.0) + value.detach().float()
            n_batches += 1
            step += 1
            if on_step is not None:
                on_step(step)
        elapsed = time.perf_counter() - started
        total_time += elapsed
        record = {"epoch": epoch + 1, "step": step}
        record.update({name: float(total / n_batches) for name, total in sums.items()})
        record.update(time_epoch_s=elapsed, time_total_s=total_time)
        if evaluate is not None and ((epoch + 1) % eval_every == 0 or epoch + 1 == n_epochs):
            method.eval()
            with torch.no_grad():
                record.update(evaluate(method))
        history.append(record)
        bar.set_postfix(loss=f"{record['loss']:.4g}")
        due = time.perf_counter() - last_write >= checkpoint_every_s or epoch + 1 == n_epochs
        if checkpoint is not None and due:
            state = _checkpoint_state(fingerprint, method, optimizer, shuffle, epoch + 1, step,
                                      history)
            write_verified(checkpoint, state, verify=not verified)
            verified = True
            last_write = time.perf_counter()
    method.eval()
    return history


# --- checkpoints -------------------------------------------------------------------------------

def qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_plain_setting(value: Any) -> bool:
    if value is None or type(value) in (bool, int, float, str):
        return True
    return type(value) in (tuple, list) and all(_is_plain_setting(v) for v in value)


def plain_settings(obj: Any) -> dict[str, Any]:
    """The public plain-valued attributes of ``obj`` (a method's or a likelihood's settings),
    without those at a default its class declares key-neutral (``key_neutral_defaults``)."""
    neutral = getattr(type(obj), "key_neutral_defaults", {})
    return {name: list(value) if isinstance(value, tuple) else value
            for name, value in sorted(vars(obj).items())
            if not name.startswith("_") and name != "training" and _is_plain_setting(value)
            and not (name in neutral and value == neutral[name])}


def tensor_digest(t: Tensor) -> dict[str, Any]:
    data = t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()
    return {"shape": list(t.shape), "dtype": str(t.dtype),
            "sha256": hashlib.sha256(data).hexdigest()}


def _fingerprint(method, optimizer, x, y, *, batch_size, steps_per_epoch, seed, precision,
                 transform) -> dict[str, Any]:
    """What decides the run, as plain values; ``lr`` is the optimiser's, one per group."""
    target = method.target
    return {
        "method": qualified_name(type(method)),
        "method_settings": plain_settings(method),
        "parameters": {name: [list(t.shape), str(t.dtype)] if isinstance(t, Tensor)
                       else type(t).__name__ for name, t in method.state_dict().items()},
        "likelihood": qualified_name(type(method.likelihood)),
        "likelihood_settings": plain_settings(method.likelihood),
        "target": str(getattr(target, "name", type(target).__name__)),
        "x": tensor_digest(x),
        "y": tensor_digest(y),
        "batch_size": batch_size,
        "steps_per_epoch": steps_per_epoch,
        "lr": [float(group["lr"]) for group in optimizer.param_groups],
        "seed": seed,
        "precision": precision,
        "transform": transform is not None,
    }


def _plain(value: Any, where: str) -> Any:
    """``value`` as what a weights-only load accepts (NumPy scalars become Python numbers)."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, Tensor):
        return value.detach().cpu()
    if isinstance(value, (list, tuple)):
        items = [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    if getattr(value, "shape", None) == () and hasattr(value, "item"):  # NumPy scalar, bool_
        return _plain(value.item(), where)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{where} is a {type(value).__name__}; a checkpoint stores numbers, strings, "
                    "tensors and lists/dicts of them (check what evaluate returns)")


def _checkpoint_state(fingerprint, method, optimizer, shuffle, epoch, step, history) -> dict:
    return {
        "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint,
        "epoch": epoch, "step": step,
        "history": [_plain(record, f"history[{i}]") for i, record in enumerate(history)],
        "method": method.state_dict(), "optimizer": optimizer.state_dict(),
        "shuffle": shuffle.get_state(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def write_verified(path: Path, state: dict, *, verify: bool = False):
    """Write ``state`` atomically: one header line (magic, format, SHA-256 and length of the
    payload), then the payload (``torch.save``); :func:`read_verified` checks both.

    ``verify`` loads the payload back with ``weights_only=True`` first (done once per run), so
    a state that could not be read back fails when it is written, not when it is read.
    """
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    if verify:
        try:
            torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as err:
            raise TypeError(f"the training state cannot be stored in {path}: a "
                            f"weights-only load refuses it ({type(err).__name__}: "
                            f"{_first_line(err)})") from err
    digest = hashlib.sha256(payload).hexdigest()
    header = b"%s %d sha256=%s bytes=%d\n" % (CHECKPOINT_MAGIC, CHECKPOINT_FORMAT,
                                              digest.encode(), len(payload))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(payload)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)  # never leave a half-written checkpoint behind


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"


_STATE_KEYS = ("format", "fingerprint", "epoch", "step", "history", "method", "optimizer",
               "shuffle", "torch_rng", "cuda_rng")


def read_verified(path: Path, *, required: tuple[str, ...] = _STATE_KEYS,
                  what: str = "checkpoint", writer: str = "hypernets.training.fit") -> dict:
    """The checked payload of a file written by :func:`write_verified`, or ValueError saying
    what is wrong (empty, truncated, corrupt, another format, or lacking the ``required`` keys)."""
    raw = path.read_bytes()
    start_over = "; delete it to start the run over"

    def refuse(problem: str):
        raise ValueError(f"{what} {path} {problem}{start_over}")

    if not raw.startswith(CHECKPOINT_MAGIC + b" "):
        if not raw:
            refuse("is empty (truncated)")
        if raw.startswith(b"PK\x03\x04"):
            refuse("is a plain torch file, written by an older version of hypernets without "
                   "the fingerprint and content hash this version checks")
        refuse("is corrupt or truncated: it does not start with the hypernets checkpoint header")
    newline = raw.find(b"\n", 0, 256)
    fields = raw[:newline].split(b" ") if newline > 0 else []
    try:
        _, version, digest, size = fields
        version = int(version)
        if not (digest.startswith(b"sha256=") and size.startswith(b"bytes=")):
            raise ValueError
        digest, size = digest[7:].decode("ascii"), int(size[6:])
    except ValueError:
        refuse("is corrupt or truncated: its header line is damaged")
    if version != CHECKPOINT_FORMAT:
        refuse(f"has checkpoint format {version}; this version of hypernets reads format "
               f"{CHECKPOINT_FORMAT}")
    payload = raw[newline + 1:]
    if len(payload) < size:
        refuse(f"is truncated: it holds {len(payload)} of its {size} payload bytes")
    if len(payload) > size or hashlib.sha256(payload).hexdigest() != digest:
        refuse("is corrupt: its content does not match the SHA-256 stored in its header")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as err:
        refuse(f"holds objects that a weights-only load refuses ({type(err).__name__}: "
               f"{_first_line(err)}), so it was not written by {writer}")
    if not isinstance(state, dict) or any(key not in state for key in required):
        refuse(f"is corrupt: its payload lacks the fields {list(required)}")
    return state


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out = {}
        for key, item in value.items():
            name = (f"{prefix}.{key}" if prefix else str(key)) if str(key).isidentifier() \
                else f"{prefix}[{key!r}]"
            out.update(_flatten(item, name))
        return out
    return {prefix: value}


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_fingerprint(path: Path, expected: dict, found: Any, max_lines: int = 12):
    """Refuse a checkpoint of another run: name every field that differs."""
    if not isinstance(found, dict):
        raise ValueError(f"checkpoint {path} is corrupt: its fingerprint is not a dict; delete it "
                         "to start the run over")
    missing = object()
    mine, theirs = _flatten(expected), _flatten(found)
    differ = [key for key in list(mine) + [k for k in theirs if k not in mine]
              if mine.get(key, missing) != theirs.get(key, missing)]
    if not differ:
        return

    def show(value):
        return "(absent)" if value is missing else _short(value)

    lines = [f"  {key}: expected {show(mine.get(key, missing))}, found "
             f"{show(theirs.get(key, missing))}" for key in differ[:max_lines]]
    if len(differ) > max_lines:
        lines.append(f"  ... and {len(differ) - max_lines} more")
    raise ValueError(f"checkpoint {path} was written by another run: {len(differ)} field(s) of "
                     "its fingerprint differ (expected = this call of fit, found = the "
                     "checkpoint):\n" + "\n".join(lines) + "\nResume with the settings and data "
                     "of the run that wrote it, or delete it (or pass another checkpoint path) "
                     "to start over.")


def _check_progress(path: Path, state: dict, steps_per_epoch: int,
                    total_steps: int) -> tuple[int, int]:
    """(epochs, steps) done by the checkpoint, refusing one this call cannot continue."""
    epoch, step, history = state["epoch"], state["step"], state["history"]
    if (type(epoch) is not int or type(step) is not int or not isinstance(history, list)
            or len(history) != epoch or epoch < 1
            or not (epoch - 1) * steps_per_epoch < step <= epoch * steps_per_epoch):
        raise ValueError(f"checkpoint {path} is corrupt: its epoch ({epoch!r}), step ({step!r}) "
                         "and history do not agree; delete it to start the run over")
    if step > total_steps:
        raise ValueError(f"checkpoint {path} has already trained {step} steps ({epoch} epochs), "
                         f"more than the {total_steps} steps this call asks for; ask for at "
                         "least as many, or delete it to start over")
    if step < epoch * steps_per_epoch and step < total_steps:
        raise ValueError(f"checkpoint {path} stopped {step - (epoch - 1) * steps_per_epoch} of "
                         f"{steps_per_epoch} steps into epoch {epoch} (step {step}); a partial "
                         f"epoch cannot be continued as an uninterrupted run would, so it cannot "
                         f"be extended to {total_steps} steps. Delete it to start over")
    return epoch, step


def _restore(state: dict, method, optimizer, shuffle) -> list[dict]:
    method.load_state_dict(state["method"])
    optimizer.load_state_dict(state["optimizer"])
    shuffle.set_state(state["shuffle"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["history"]


@torch.no_grad()
def predict(method: Method, x: Tensor, n_samples: int, *, batch_size: int = 1000,
            device: str | torch.device | None = None, precision: str = "fp32") -> Tensor:
    """Predictive of S sampled nets on all of x, in chunks, on the CPU: [S, N, C or 1].

    The S weight sets are drawn once, so every chunk sees the same S networks. ``precision``
    as in :func:`fit`; the predictive is returned in float32.
    """
    n_samples = check_positive_int("n_samples", n_samples)
    batch_size = check_positive_int("batch_size", batch_size)
    if not _check_tensor("x", x).is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    method.eval()
    device = method.device if device is None else torch.device(device)
    with memory.return_freed_memory(), autocast(device, precision):  # chunk sizes vary
        params = method.sample_params(n_samples)
        chunks = [method.predict(x[i:i + batch_size].to(device), n_samples, params=params).float().cpu()
                  for i in range(0, max(len(x), 1), batch_size)]  # an empty x gives [S, 0, ...]
    return torch.cat(chunks, dim=1)
