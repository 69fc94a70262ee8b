"""Distributed training: 2 processes (torch.distributed, gloo) against 1, same global batch.

Trains the same model twice through the command line: once in one process with batch ``2B``,
once as ``--nproc 2`` with batch ``B`` per process (the same global batch, so the same
training in exact arithmetic), and prints Recall@10 and throughput side by side. With
``--write-docs`` the table goes into docs/scale.md.

    python benchmarks/bench_distributed.py --preset seed --preset default --write-docs
    python benchmarks/bench_distributed.py --train big.parquet --preset default

Thread settings: every process runs torch with 1 thread (OMP/MKL 1), so 2 processes use 2
cores and 1 process 1 core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from common import machine, table, write_with_command
from recfunnel.data import sources
from recfunnel.data.sources import DataSpec

COLUMNS = [
    ("preset", "preset", ""),
    ("processes", "nproc", "d"),
    ("batch / process", "batch", "d"),
    ("Recall@10", "recall@10", ".4f"),
    ("fit s", "fit_seconds", ".1f"),
    ("rows/s", "rows_per_second", ".0f"),
    ("wall s", "wall", ".1f"),
]


def train(data_args, preset: str, nproc: int, batch: int, epochs: int | None) -> dict:
    argv = [sys.executable, "-m", "recfunnel", "train", *data_args, "--model", "two-tower",
            "--preset", preset, "--batch-size", str(batch), "--json", "--quiet"]  # fmt: skip
    if epochs:
        argv += ["--epochs", str(epochs)]
    if nproc > 1:
        argv += ["--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"training failed:\n{done.stderr[-3000:]}")
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    metrics["wall"] = time.perf_counter() - started
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="folder holding ml-100k (default: RECFUNNEL_DATA_DIR)")
    parser.add_argument("--train", help="interaction file instead of MovieLens 100k")
    parser.add_argument("--preset", action="append", help="two-tower presets (default: seed)")
    parser.add_argument("--batch", type=int, default=4096, help="batch per process (2 procs)")
    parser.add_argument("--epochs", type=int, help="override the presets' epochs")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    data_args = ["--train", args.train] if args.train else (
        ["--data-dir", args.data_dir] if args.data_dir else []
    )  # fmt: skip
    spec = DataSpec(dataset=None if args.train else "movielens-100k", train=args.train,
                    data_dir=args.data_dir)  # fmt: skip
    _, train_rows, _ = sources.load(spec)
    rows = []
    for preset in args.preset or ["seed"]:
        for nproc in (1, 2):
            metrics = train(data_args, preset, nproc, args.batch * 2 // nproc, args.epochs)
            trainer = metrics.get("resolved_config", metrics["config"])["trainer"]
            epochs, budget = trainer["epochs"], trainer.get("max_examples")
            seen = len(train_rows) * epochs if not budget else min(budget, len(train_rows) * epochs)
            rows.append({"preset": preset, "nproc": nproc, "batch": args.batch * 2 // nproc,
                         "rows_per_second": seen / metrics["fit_seconds"], **metrics})  # fmt: skip
            print(f"{preset} x{nproc}: recall@10 {metrics['recall@10']:.4f}", file=sys.stderr)
    text = table(rows, COLUMNS)
    data = args.train or "MovieLens 100k (seeded random 80/20 split)"
    notes = [
        f"- {data}: {len(train_rows)} training rows; global batch {2 * args.batch} in both "
        f"rows of a preset. {machine()}; each process 1 thread; the machine was shared with "
        "other jobs, so times are noisy: compare the rows of one run.",
        "- rows/s counts training rows per second of fit (evaluation excluded); 2 processes on "
        "2 cores also pay the gradient all-reduce and the all-gather of the global negatives.",
    ]
    text = text + "\n\n" + "\n".join(notes)
    print(text)
    if args.write_docs:
        write_with_command("scale.md", "distributed", text)


if __name__ == "__main__":
    main()
