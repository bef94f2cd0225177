"""Time one hypernetwork training step on HyperGAN's MNIST target, for S weight samples.

The step: a HyperGAN-like generator maps S noise vectors through an MLP to S flat weight
vectors of ``get_target("mnist_small_conv")`` (split with ``unflatten``), the S nets classify
one batch of MNIST-shaped inputs, the mean cross-entropy is backpropagated to the generator and
Adam takes a step. Only the way the S nets run changes between modes; a mode is a ``+``-joined
list of tokens:

- ``loop``: a Python loop over the S nets, each through ``forward_single`` (the reference).
- ``vmap``: ``torch.func.vmap`` over ``forward_single``.
- ``batched``: the target's own batched call, ``target(params, x)``.
- ``compile``: ``torch.compile`` of the batched loss (generator, target, cross-entropy).
- ``bf16``: the batched loss under bfloat16 autocast.

``compile`` and ``bf16`` combine (``compile+bf16``) and imply the batched step. Each (mode, S)
is warmed up (compilation included), then timed per step (CUDA events on the GPU); the table
gives the median. Random inputs suffice for timing. The FLOP count is analytic: 2 FLOP per
multiply-accumulate of every convolution and linear layer in the forward, times 3 for forward
plus backward (the backward costs about twice the forward).

Usage::

    python benchmarks/step_time.py --device cuda
    python benchmarks/step_time.py --device cpu --samples 1 10 32 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hypernets.targets import Conv2d, Linear, TargetNet, get_target

REPO = Path(__file__).resolve().parents[1]
TOKENS = ("loop", "vmap", "batched", "compile", "bf16")
BATCHED_MODIFIERS = {"compile", "bf16"}


@dataclass(frozen=True)
class Mode:
    name: str
    runner: str  # "loop", "vmap" or "batched"
    compile: bool = False
    bf16: bool = False


def parse_mode(name: str) -> Mode:
    tokens = name.split("+")
    unknown = [t for t in tokens if t not in TOKENS]
    if unknown or len(set(tokens)) != len(tokens):
        raise ValueError(f"mode {name!r}: tokens must be distinct, from {TOKENS}")
    runners = [t for t in tokens if t in ("loop", "vmap", "batched")]
    modifiers = set(tokens) & BATCHED_MODIFIERS
    if len(runners) > 1 or (runners and runners[0] != "batched" and modifiers):
        raise ValueError(f"mode {name!r}: {sorted(BATCHED_MODIFIERS)} apply to the batched "
                         "step only, and one of loop, vmap, batched at most")
    return Mode(name, runners[0] if runners else "batched", "compile" in modifiers,
                "bf16" in modifiers)


class HyperGenerator(nn.Module):
    """HyperGAN-like generator: noise [S, noise_dim] -> MLP -> flat target weights [S, P].

    (HyperGAN mixes the noise into one code per layer and has one generator per layer; a single
    MLP has the same inputs, outputs and a similar cost, which is all the timing needs.)
    """

    def __init__(self, n_params: int, noise_dim: int, hidden: int):
        super().__init__()
        self.noise_dim = noise_dim
        self.net = nn.Sequential(nn.Linear(noise_dim, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, n_params))

    def forward(self, noise: Tensor) -> Tensor:
        return self.net(noise)


def forward_macs(target: TargetNet) -> int:
    """Multiply-accumulates of one net on one input, from its layers' output shapes."""
    macs = 0
    h = torch.zeros(1, *target.input_shape)
    params = {n: torch.zeros(s) for n, s in target.param_shapes.items()}
    with torch.no_grad():
        for layer_name, layer in target.layers:
            local = {k: params[f"{layer_name}.{k}"] for k in layer.param_shapes()}
            h = layer.forward_single(local, h)
            if isinstance(layer, Conv2d):
                macs += h[0].numel() * layer.in_channels * layer.kernel_size**2
            elif isinstance(layer, Linear):
                macs += layer.in_features * layer.out_features
            elif layer.param_shapes():
                raise ValueError(f"forward_macs: no MAC count for {type(layer).__name__}")
    return macs


def generator_macs(generator: HyperGenerator) -> int:
    return sum(m.in_features * m.out_features for m in generator.modules()
               if isinstance(m, nn.Linear))


def make_step(mode: Mode, target: TargetNet, generator: HyperGenerator,
              optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, n_samples: int,
              compile_mode: str):
    device = x.device

    def logits_of(noise: Tensor) -> Tensor:
        params = target.unflatten(generator(noise))
        if mode.runner == "loop":
            return torch.stack([target.forward_single({k: v[s] for k, v in params.items()}, x)
                                for s in range(n_samples)])
        if mode.runner == "vmap":
            return torch.func.vmap(target.forward_single, in_dims=(0, None))(params, x)
        return target(params, x)

    def loss_of(noise: Tensor) -> Tensor:
        logits = logits_of(noise)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.repeat(n_samples))

    if mode.compile:
        torch._dynamo.reset()  # a fresh cache per configuration: no recompile limits
        loss_of = torch.compile(loss_of, dynamic=False, mode=compile_mode)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if mode.bf16
                else nullcontext())

    def step():
        noise = torch.randn(n_samples, generator.noise_dim, device=device)
        with autocast:
            loss = loss_of(noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def time_steps(step, device: torch.device, warmup: int, repeats: int) -> tuple[list[float], float]:
    """Per-step times in ms after ``warmup`` steps, and the warm-up's total seconds."""
    started = time.perf_counter()
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    warmup_s = time.perf_counter() - started
    times = []
    if device.type == "cuda":
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                  for _ in range(repeats)]
        for start, end in events:
            start.record()
            step()
            end.record()
        torch.cuda.synchronize(device)
        times = [start.elapsed_time(end) for start, end in events]
    else:
        for _ in range(repeats):
            started = time.perf_counter()
            step()
            times.append((time.perf_counter() - started) * 1e3)
    return times, warmup_s


def git_commit() -> tuple[str, bool | None]:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip() != ""
        return commit, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)", None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 10, 32, 100])
    parser.add_argument("--modes", nargs="+", default=None,
                        help="default: loop vmap batched, plus on CUDA bf16, compile and "
                             "compile+bf16")
    parser.add_argument("--repeats", type=int, default=20, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--loop-max-samples", type=int, default=None,
                        help="skip the loop mode above this S (it is slow on a CPU)")
    parser.add_argument("--noise-dim", type=int, default=256)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    parser.add_argument("--tf32", action="store_true",
                        help="let fp32 matrix products use TF32 (cuDNN convolutions do already)")
    parser.add_argument("--no-cudnn-benchmark", action="store_true",
                        help="keep cuDNN's heuristic algorithm choice")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON path (default benchmarks/results/step_time-<device>.json)")
    parser.add_argument("--commit", default=None,
                        help="commit to record where the copy has no .git (default: git HEAD)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.batch_size < 1 or min(args.samples) < 1:
        parser.error("--repeats, --batch-size and --samples must be >= 1, --warmup >= 0")
    return args


def run_configuration(mode: Mode, n_samples: int, target: TargetNet, args,
                      device: torch.device) -> dict:
    """Build a fresh generator and optimiser, warm up and time one (mode, S)."""
    torch.manual_seed(args.seed)
    generator = HyperGenerator(target.num_params, args.noise_dim, args.hidden).to(device)
    optimizer = torch.optim.Adam(generator.parameters(), lr=1e-3, fused=device.type == "cuda")
    x = torch.randn(args.batch_size, *target.input_shape, device=device)
    y = torch.randint(0, target.n_outputs, (args.batch_size,), device=device)
    step = make_step(mode, target, generator, optimizer, x, y, n_samples, args.compile_mode)
    times, warmup_s = time_steps(step, device, args.warmup, args.repeats)
    target_gflop = 3 * 2 * forward_macs(target) * args.batch_size * n_samples / 1e9
    gflop = target_gflop + 3 * 2 * generator_macs(generator) * n_samples / 1e9
    median = statistics.median(times)
    return {"mode": mode.name, "S": n_samples,
            "compile_mode": args.compile_mode if mode.compile else None,
            "ms_per_step": median, "ms_min": min(times),
            "ms_max": max(times), "warmup_s": warmup_s, "gflop_per_step": gflop,
            "target_gflop_per_step": target_gflop, "gflop_per_s": gflop / (median / 1e3)}


def main(argv=None):
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available")
    if args.modes is None:
        args.modes = ["loop", "vmap", "batched"]
        if device.type == "cuda":
            args.modes += ["bf16", "compile", "compile+bf16"]
    modes = [parse_mode(m) for m in args.modes]
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not args.no_cudnn_benchmark
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True

    target = get_target("mnist_small_conv")
    name = device_name(device)
    commit, dirty = (args.commit, None) if args.commit else git_commit()
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or device.type
    output = args.output or REPO / "benchmarks" / "results" / f"step_time-{slug}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "hypernetwork training step, mnist_small_conv target",
        "device": str(device), "device_name": name, "torch": torch.__version__,
        "cuda": torch.version.cuda, "commit": commit, "dirty": dirty,
        "settings": {
            "batch_size": args.batch_size, "repeats": args.repeats, "warmup": args.warmup,
            "noise_dim": args.noise_dim, "hidden": args.hidden,
            "target_params": target.num_params,
            "target_macs_per_input": forward_macs(target),
            "compile_mode": args.compile_mode,
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "threads": torch.get_num_threads(),
        },
        "results": [],
    }
    for n_samples in args.samples:
        for mode in modes:
            if (mode.runner == "loop" and args.loop_max_samples is not None
                    and n_samples > args.loop_max_samples):
                continue
            row = run_configuration(mode, n_samples, target, args, device)
            print(f"{mode.name:>24s}  S={n_samples:<4d} {row['ms_per_step']:10.2f} ms/step",
                  flush=True)
            record["results"].append(row)
            output.write_text(json.dumps(record, indent=2))  # partial results survive a kill
            if device.type == "cuda":
                torch.cuda.empty_cache()

    table = pd.DataFrame(record["results"])
    columns = [m.name for m in modes]
    print(f"\n{name} | torch {torch.__version__} | batch {args.batch_size} | "
          f"commit {commit[:12]}{' (dirty)' if dirty else ''}\nms per training step:")
    print(table.pivot(index="S", columns="mode", values="ms_per_step")
          .reindex(columns=columns).round(2).to_string())
    print("\nachieved GFLOP/s (analytic FLOP count, target + generator):")
    print(table.pivot(index="S", columns="mode", values="gflop_per_s")
          .reindex(columns=columns).round(0).to_string())
    print(f"\nwrote {output}")
    return table


if __name__ == "__main__":
    main()
