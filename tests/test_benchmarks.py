"""The CPU benchmark runs in its quick mode, so that it cannot rot between measurements."""

from __future__ import annotations

import importlib.util
import pathlib

from hypernets.methods.registry import METHODS

BENCHMARKS = pathlib.Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_core_quick_mode_times_every_method_and_the_plain_baselines(tmp_path):
    table = load("cpu_core").main(["--quick", "--output", str(tmp_path / "out.json")])
    expected = {(name, precision) for name in [*METHODS, "plain x1", "plain x2"]
                for precision in ("fp32", "bf16")}
    assert set(zip(table["what"], table["precision"])) == expected
    assert (table["ms_per_step"] > 0).all() and (table["gflop_per_step"] > 0).all()
    # The ensemble of two runs two LeNets: twice MAP's matrix work.
    flops = table.set_index(["what", "precision"])["gflop_per_step"]
    assert flops["ensemble", "fp32"] == 2 * flops["map", "fp32"]
    assert flops["plain x2", "fp32"] == 2 * flops["plain x1", "fp32"]
