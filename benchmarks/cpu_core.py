"""Training-step time of every method on LeNet on this CPU, beside plain PyTorch doing the same work.

For each method (registry name, with the MNIST table's sizes) and precision, one training step
is what :func:`hypernets.training.fit` does per mini-batch: ``training_loss`` under the
precision's autocast, backward, optimiser step. The FLOPs of the forward are counted once with
``torch.utils.flop_counter.FlopCounterMode`` (every matrix product and convolution) and tripled
for forward plus backward (the counter's own backward formula overcounts grouped convolutions
about ``groups``-fold in torch 2.13), so the achieved rate can be set against the
matrix-product rate this machine reaches on a 2048^3 product in bf16 and in fp32, measured in
the same run.

The baselines are what a user would write: an ``nn.Module`` LeNet trained with Adam, in fp32
and under bf16 autocast with channels-last inputs, one net, and ten nets trained one after
another (the plain way to train an ensemble of ten).

Usage::

    python benchmarks/cpu_core.py                       # every method, fp32 and bf16
    python benchmarks/cpu_core.py --methods map ensemble --precisions bf16 --repeats 20
    python benchmarks/cpu_core.py --quick               # seconds: what the test suite runs

``--target`` times another of the papers' targets (no plain baselines then). Writes
``benchmarks/results/cpu_core-<target>-<cpu>.json`` (``--output`` elsewhere) after every row,
and prints the table.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from hypernets.likelihoods import Categorical
from hypernets.methods.registry import METHODS, make_method
from hypernets.runs import device_name
from hypernets.targets import get_target
from hypernets.training import autocast

REPO = Path(__file__).resolve().parents[1]

#: The MNIST table's sizes: 10 ensemble members, 5 Bayes by Hypernet samples, 32 HyperGAN nets.
OPTIONS = {"ensemble": {"n_members": 10}}
QUICK_OPTIONS = {"ensemble": {"n_members": 2}, "bbh": {"train_samples": 2, "hidden": (8, 16)},
                 "hypergan": {"train_samples": 2, "hidden": 16, "noise_dim": 16, "code_dim": 16},
                 "hypergan_mi": {"train_samples": 2, "hidden": 16, "noise_dim": 16, "code_dim": 16,
                                 "stats_hidden": (16,)},
                 "apd": {"hidden": 8, "noise_dim": 4, "burn_in": 1, "thin": 1, "pool_size": 4,
                         "gan_batch": 2}}


def cpu_name() -> str:
    return device_name("cpu")


def matmul_rate(dtype: torch.dtype, n: int, repeats: int) -> float:
    """GFLOP/s of an n^3 matrix product in ``dtype`` (median of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * n**3 / statistics.median(times) / 1e9


def timed(step, repeats: int, warmup: int) -> float:
    """Median wall time of ``step()`` in ms after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return 1e3 * statistics.median(times)


def method_step(name: str, options: dict, precision: str, x, y, target: str = "lenet",
                compiled: bool = False):
    torch.manual_seed(0)
    method = make_method(name, get_target(target), Categorical(), **options)
    method.train()
    optimizer = method.configure_optimizer()

    def loss_of(xb, yb):
        return method.training_loss(xb, yb, n_train=60000, epoch=1.0)[0]

    # torch.compile (inductor's C++ backend): the loss and its backward; the optimiser stays eager
    loss_fn = torch.compile(loss_of) if compiled else loss_of

    def step():
        with autocast("cpu", precision):
            loss = loss_fn(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def flops():
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            with autocast("cpu", precision):
                method.training_loss(x, y, n_train=60000, epoch=1.0)
        return 3 * counter.get_total_flops()

    return step, flops


class LeNet(nn.Module):
    """The LeNet of Bayes by Hypernet as a user writes it (the same shapes as ``get_target("lenet")``)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.fc1, self.fc2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def plain_step(n_nets: int, precision: str, x, y):
    torch.manual_seed(0)
    nets = [LeNet() for _ in range(n_nets)]
    channels_last = precision == "bf16"
    if channels_last:
        nets = [net.to(memory_format=torch.channels_last) for net in nets]
        x = x.contiguous(memory_format=torch.channels_last)
    optimizers = [torch.optim.Adam(net.parameters(), lr=1e-3) for net in nets]

    def run(net, optimizer):
        with autocast("cpu", precision):
            loss = F.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    def step():
        for net, optimizer in zip(nets, optimizers):
            run(net, optimizer)

    def flops():
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            for net in nets:
                with autocast("cpu", precision):
                    F.cross_entropy(net(x).float(), y)
        return 3 * counter.get_total_flops()

    return step, flops


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS), choices=sorted(METHODS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--target", default="lenet",
                        help="target net (get_target); the plain baselines are LeNets, so only with lenet")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--compile", action="store_true",
                        help="also time each method's step with the loss compiled by torch.compile")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one repeat: checks that the benchmark runs")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = QUICK_OPTIONS if args.quick else OPTIONS
    batch = 8 if args.quick else args.batch_size
    repeats, warmup = (1, 1) if args.quick else (args.repeats, args.warmup)
    n = 256 if args.quick else 2048
    rates = {"bf16": matmul_rate(torch.bfloat16, n, 3), "fp32": matmul_rate(torch.float32, n, 3)}
    print(f"{cpu_name()}, {args.threads} threads, torch {torch.__version__}: {n}^3 matrix product "
          f"{rates['bf16']:.0f} GFLOP/s in bf16, {rates['fp32']:.0f} in fp32")
    generator = torch.Generator().manual_seed(0)
    target = get_target(args.target)
    x = torch.randn(batch, *target.input_shape, generator=generator)
    y = torch.randint(target.n_outputs, (batch,), generator=generator)
    output = args.output or REPO / "benchmarks" / "results" / (
        f"cpu_core-{args.target}-" + re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-") + ".json")
    rows = []
    configs = [(name, "method", precision) for name in args.methods for precision in args.precisions]
    if args.compile:
        configs += [(name, "compiled", precision) for name in args.methods
                    for precision in args.precisions]
    if args.target == "lenet":
        configs += [(f"plain x{k}", "plain", precision) for k in (1, 2 if args.quick else 10)
                    for precision in args.precisions]
    for name, kind, precision in configs:
        if kind in ("method", "compiled"):
            step, flops = method_step(name, dict(options.get(name, {})), precision, x, y, args.target,
                                      compiled=kind == "compiled")
        else:
            step, flops = plain_step(int(name.split("x")[1]), precision, x, y)
        gflop = flops() / 1e9
        started = time.perf_counter()
        step()  # the first step: compilation, for a compiled loss
        first_step_s = time.perf_counter() - started
        ms = timed(step, repeats, warmup)
        if kind == "compiled":
            name = f"{name} compiled"
        rows.append({"what": name, "precision": precision, "ms_per_step": ms,
                     "first_step_s": first_step_s, "gflop_per_step": gflop,
                     "gflop_per_s": gflop / ms * 1e3,
                     "fraction_of_bf16_matmul": gflop / ms * 1e3 / rates["bf16"]})
        print(f"{name:>12} {precision}: {ms:8.1f} ms  {gflop:6.2f} GFLOP  {gflop / ms * 1e3:7.1f} GFLOP/s",
              flush=True)
        if not args.quick:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps({
                "cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
                "target": args.target, "batch_size": batch, "repeats": repeats, "warmup": warmup,
                "matmul_gflop_per_s": rates, "options": options, "rows": rows}, indent=2) + "\n")
    table = pd.DataFrame(rows)
    print(table.round(3).to_string(index=False))
    return table


if __name__ == "__main__":
    main()
