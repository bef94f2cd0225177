"""One training loop for every method, and batched prediction over a whole data set."""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor
from tqdm import tqdm

from hypernets.methods.base import Method

Transform = Callable[[Tensor, torch.Generator], Tensor]
Evaluate = Callable[[Method], dict[str, float]]


def _check_data(x: Tensor, y: Tensor):
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) == 0:
        raise ValueError("training data is empty")


def _autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        if device.type != "cuda":
            raise ValueError("precision='bf16' is for CUDA devices; use 'fp32' on the CPU")
        return torch.autocast("cuda", dtype=torch.bfloat16)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")


def fit(method: Method, x: Tensor, y: Tensor, *, epochs: int | None = None,
        steps: int | None = None, batch_size: int = 128, lr: float | None = None,
        device: str | torch.device = "cpu", seed: int = 0, progress: bool = True,
        transform: Transform | None = None, evaluate: Evaluate | None = None,
        eval_every: int = 1, checkpoint: str | Path | None = None, resume: bool = False,
        precision: str = "fp32") -> list[dict]:
    """Train ``method`` on (x, y) with its paper's optimiser; return per-epoch records.

    Give exactly one of ``epochs`` or ``steps`` (with ``steps`` the last epoch may be
    partial). Mini-batches are drawn without replacement from a generator seeded by
    ``seed``, which also seeds torch's global RNG used by the methods' noise. ``transform``
    augments each batch (e.g. random crops). ``evaluate(method)`` is called every
    ``eval_every`` epochs and at the end, in eval mode without gradients; its numbers join
    the record. ``checkpoint`` is written after every epoch; with ``resume`` an existing one
    is loaded and training continues where it stopped, giving the same result as an
    uninterrupted run.

    Each record: epoch, step, the epoch's mean loss and logged terms, wall time of the epoch
    and in total, and the evaluation numbers.
    """
    _check_data(x, y)
    if (epochs is None) == (steps is None):
        raise ValueError("give exactly one of epochs or steps")
    if (epochs is not None and epochs < 1) or (steps is not None and steps < 1):
        raise ValueError(f"epochs/steps must be >= 1, got epochs={epochs}, steps={steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if resume and checkpoint is None:
        raise ValueError("resume=True needs a checkpoint path")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available")

    n_train = len(x)
    batch_size = min(batch_size, n_train)
    steps_per_epoch = math.ceil(n_train / batch_size)
    total_steps = steps if steps is not None else epochs * steps_per_epoch
    n_epochs = math.ceil(total_steps / steps_per_epoch)

    torch.manual_seed(seed)
    shuffle = torch.Generator().manual_seed(seed)
    method.to(device)
    x, y = x.to(device), y.to(device)
    optimizer = method.configure_optimizer(lr)
    history: list[dict] = []
    start_epoch = 0
    if resume and Path(checkpoint).exists():
        start_epoch, history = _load_checkpoint(checkpoint, method, optimizer, shuffle)

    step = start_epoch * steps_per_epoch
    total_time = history[-1]["time_total_s"] if history else 0.0
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
            with _autocast(device, precision):
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
        if checkpoint is not None:
            _save_checkpoint(checkpoint, method, optimizer, shuffle, epoch + 1, history)
    method.eval()
    return history


def _save_checkpoint(path, method, optimizer, shuffle, epoch, history):
    state = {
        "method": method.state_dict(), "optimizer": optimizer.state_dict(),
        "shuffle": shuffle.get_state(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "epoch": epoch, "history": history,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint behind


def _load_checkpoint(path, method, optimizer, shuffle):
    state = torch.load(path, map_location=method.device, weights_only=False)
    method.load_state_dict(state["method"])
    optimizer.load_state_dict(state["optimizer"])
    shuffle.set_state(state["shuffle"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["epoch"], state["history"]


@torch.no_grad()
def predict(method: Method, x: Tensor, n_samples: int, *, batch_size: int = 1000,
            device: str | torch.device | None = None) -> Tensor:
    """Predictive of S sampled nets on all of x, in chunks, on the CPU: [S, N, C or 1].

    The S weight sets are drawn once, so every chunk sees the same S networks.
    """
    method.eval()
    device = method.device if device is None else torch.device(device)
    params = method.sample_params(n_samples)
    chunks = [method.predict(x[i:i + batch_size].to(device), n_samples, params=params).float().cpu()
              for i in range(0, len(x), batch_size)]
    return torch.cat(chunks, dim=1)
