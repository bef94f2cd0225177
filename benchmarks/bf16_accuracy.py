"""Does bf16 change what a method learns? MAP and the deep ensemble on full MNIST, bf16 against fp32.

Trains each (method, precision, seed) on the 60,000 MNIST training images for ``--epochs``
epochs with batch 100 (LeNet, the MNIST table's target; the ensemble with 10 members) and
reports the test error of the mean predictive on the 10,000 test images, evaluated in fp32.
The verdict: for every method and seed, |error(bf16) - error(fp32)| <= ``--tolerance``
percentage points (the issue's 0.15).

Usage::

    python benchmarks/bf16_accuracy.py                      # 3 epochs, seeds 0 and 1
    python benchmarks/bf16_accuracy.py --epochs 1 --seeds 0 --methods map

Writes ``benchmarks/results/bf16_accuracy-<cpu>.json`` (``--output`` elsewhere) after every run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import pandas as pd
import torch

from hypernets import metrics
from hypernets.data import load_mnist_splits
from hypernets.evaluation import predict_probs
from hypernets.runs import train_method

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_core import cpu_name  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=["map", "ensemble"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--tolerance", type=float, default=0.15)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_mnist_splits()
    output = args.output or REPO / "benchmarks" / "results" / (
        "bf16_accuracy-" + re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-") + ".json")
    rows = []
    for name in args.methods:
        options = {"n_members": args.members} if name == "ensemble" else {}
        for seed in args.seeds:
            for precision in ("fp32", "bf16"):
                run = train_method(name, "lenet", data.train.x, data.train.y, epochs=args.epochs,
                                   batch_size=100, seed=seed, options=options, precision=precision)
                probs = predict_probs(run, data.test.x, 100, seed=seed)
                error = 100 * (1 - metrics.accuracy(probs, data.test.y))
                rows.append({"method": name, "seed": seed, "precision": precision,
                             "test_error_pct": error, "train_time_s": run.train_time_s,
                             "final_loss": run.history[-1]["loss"]})
                print(rows[-1], flush=True)
                output.parent.mkdir(parents=True, exist_ok=True)
                output.write_text(json.dumps({"cpu": cpu_name(), "threads": args.threads,
                                              "torch": torch.__version__, "epochs": args.epochs,
                                              "batch_size": 100, "members": args.members,
                                              "rows": rows}, indent=2) + "\n")
    table = pd.DataFrame(rows).pivot_table(index=["method", "seed"], columns="precision",
                                           values="test_error_pct")
    table["bf16 - fp32 (pp)"] = table["bf16"] - table["fp32"]
    table["within tolerance"] = table["bf16 - fp32 (pp)"].abs() <= args.tolerance
    print(table.round(3).to_string())
    return table


if __name__ == "__main__":
    main()
