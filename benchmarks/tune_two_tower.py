"""How the two-tower ``default`` preset was chosen: validation only, never the test set.

The training part of the seeded random 80/20 MovieLens 100k split is split again 80/20 (seed + 1)
into fit and validation rows. Each candidate configuration is fitted on the fit rows with
validation Recall@10 recorded after every epoch; the table lists each configuration's best
epoch. The test rows are never loaded into the comparison.

    python benchmarks/tune_two_tower.py --write-docs
"""

from __future__ import annotations

import argparse
import time

from common import machine, table, write_section
from recfunnel.data import random_split, sources
from recfunnel.data.sources import DataSpec
from recfunnel.models import TwoTower

BASE = dict(softmax="full", reduction="mean", init="normal", init_scale=0.01, optimizer="adam")
CANDIDATES = [
    dict(
        dim=32,
        learning_rate=0.01,
        batch_size=2048,
        pool_seen_items=False,
        item_bias=False,
        user_l2=0.0,
    ),
    dict(
        dim=32,
        learning_rate=0.01,
        batch_size=2048,
        pool_seen_items=False,
        item_bias=True,
        user_l2=0.01,
    ),
    dict(
        dim=32,
        learning_rate=0.01,
        batch_size=2048,
        pool_seen_items=True,
        item_bias=True,
        user_l2=0.01,
    ),
    dict(
        dim=64,
        learning_rate=0.005,
        batch_size=2048,
        pool_seen_items=True,
        item_bias=True,
        user_l2=0.01,
    ),
    dict(
        dim=32,
        learning_rate=0.01,
        batch_size=2048,
        pool_seen_items=True,
        item_bias=True,
        user_l2=0.0,
    ),
    dict(
        dim=32,
        learning_rate=0.02,
        batch_size=4096,
        pool_seen_items=True,
        item_bias=True,
        user_l2=0.01,
    ),
    dict(
        dim=32,
        learning_rate=0.01,
        batch_size=4096,
        pool_seen_items=True,
        item_bias=True,
        user_l2=0.01,
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    spec = DataSpec(data_dir=args.data_dir, seed=args.seed)
    dataset = sources.load_dataset(spec)
    train, _ = sources.split(dataset, spec)  # the test part is dropped here
    fit, validation = random_split(train, 0.2, seed=args.seed + 1)
    rows = []
    for params in CANDIDATES:
        model = TwoTower(**BASE, **params, epochs=args.epochs, seed=args.seed)
        started = time.perf_counter()
        model.fit(fit, validation=validation)
        seconds = time.perf_counter() - started
        curve = [e["recall@10"] for e in model.training_log_.epochs]
        best = max(range(len(curve)), key=curve.__getitem__)
        rows.append({
            "config": ", ".join(f"{k}={v}" for k, v in params.items()),
            "best_epoch": best + 1,
            "recall": curve[best],
            "seconds": seconds,
        })  # fmt: skip
        print(rows[-1], flush=True)
    columns = [
        ("configuration", "config", ""),
        ("best epoch", "best_epoch", "d"),
        ("validation Recall@10", "recall", ".4f"),
        (f"fit s ({args.epochs} epochs + validation)", "seconds", ".1f"),
    ]
    text = table(rows, columns)
    text += (f"\n\nFit rows: {len(fit)}, validation rows: {len(validation)} (80/20 of the training "
             f"part, seed {args.seed + 1}). Common settings: {BASE}. {machine()}.")  # fmt: skip
    print(text)
    if args.write_docs:
        write_section("benchmarks.md", "tuning", text)


if __name__ == "__main__":
    main()
