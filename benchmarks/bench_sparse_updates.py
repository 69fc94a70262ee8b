"""Sparse updates for BPR, SGD-MF and the ranking model: speed and quality.

A dense Adam step updates every row of the user and item tables (their gradients are dense
[U + N, D] tensors, mostly zeros), so its cost grows with the tables, not the batch: at 20M rows
(1M users x 200k items) BPR's default ran at a few hundred rows a second. The ranking model's
SVD++ term also pooled every user's history in each step; sparse, it pools the batch's users. With
``sparse_updates`` the embeddings give sparse gradients and a lazy Adam moves only the rows a
step touches (:class:`recfunnel.training.LazyAdam`); unset, it turns on above the model's
``sparse_above`` users + items (BPR 100k, SGD-MF 20k, ranking 100k). Two parts, each printed
as a table and written to docs/scale.md:

* ``speed``: training rows a second of the default BPR, SGD-MF and ranking model (without its
  item autoencoder, which trains apart, and side features), dense and sparse, on random rows
  over tables from ML-100k's size to the 20M set's (1M x 200k): one epoch of ``--examples``
  rows, the time of the fit call.
* ``quality``: the default BPR dense and sparse (lazy Adam) on data where both run: ML-100k's
  seed split and a synthetic power-law set
  of the same shape (40k users x 10k items, 1M rows, 80/20 seeded; dense there by default, at
  100k users + items and more sparse); test Recall@10 / NDCG@10, fit time; and SGD-MF's and
  the ranking model's default (autoencoder and side features included) test RMSE on ML-100k's
  u1 and u2 folds, dense and sparse.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/bench_sparse_updates.py speed quality

Threads: torch 1 thread (set below); run with OMP/MKL/OpenBLAS at 1 too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

import quality_data as qd  # noqa: E402
from bench_quality import RandomSplit  # noqa: E402
from common import machine, markdown_table, write_section  # noqa: E402
from recfunnel.config import SPARSE_RANKING_ABOVE  # noqa: E402
from recfunnel.data import Interactions, power_law, random_split  # noqa: E402
from recfunnel.models import BPR, SGDMF, MostPopular, RankingModel  # noqa: E402
from recfunnel.presets import preset  # noqa: E402

TABLES = [(943, 1682), (6040, 3706), (20_000, 10_000), (100_000, 20_000), (1_000_000, 200_000)]


def make(kind, sparse: bool, epochs: int | None = None):
    """``kind``'s default preset with ``sparse_updates`` set. With ``epochs`` (the speed part),
    that many epochs, and the ranking model without its autoencoder and side features (random
    rows have none)."""
    config = preset(kind.kind, "default").override(sparse_updates=sparse)
    if epochs is not None:
        config = config.override(**{"trainer.epochs": epochs})
        if kind is RankingModel:
            config = config.override(autoencoder=0, features=False)
    return kind(config)


def rows_per_second(kind, users: int, items: int, sparse: bool, examples: int) -> float:
    rng = np.random.default_rng(0)
    data = Interactions(
        users=rng.integers(0, users, examples),
        items=rng.integers(0, items, examples),
        num_users=users,
        num_items=items,
        ratings=rng.integers(1, 6, examples).astype(np.float32),
    )
    model = make(kind, sparse, epochs=1)
    started = time.perf_counter()
    model.fit(data)
    return examples / (time.perf_counter() - started)


def speed(args) -> str:
    rows = []
    kinds = (BPR, SGDMF, RankingModel)
    for kind in kinds:  # warm-up: the first fit of a process pays for lazy imports
        rows_per_second(kind, 100, 100, True, 1000)
    for users, items in TABLES:
        for kind in kinds:
            dense, sparse = (rows_per_second(kind, users, items, s, args.examples)
                             for s in (False, True))  # fmt: skip
            above = getattr(kind, "sparse_above", SPARSE_RANKING_ABOVE)
            default = "sparse" if users + items > above else "dense"
            rows.append([f"{users:,} x {items:,}", kind.kind, f"{dense:,.0f}", f"{sparse:,.0f}",
                         f"{sparse / dense:.2f}x", default])  # fmt: skip
            print(rows[-1], flush=True)
    header = ["users x items", "model", "dense rows/s", "sparse rows/s", "sparse / dense",
              "default (unset)"]  # fmt: skip
    return markdown_table(header, rows)


def quality(args) -> str:
    ml_train, ml_test = qd.ml100k_seed()
    synthetic = power_law(40_000, 10_000, 1_000_000, seed=0)
    sets = {"ML-100k seed split": (ml_train, ml_test),
            "synthetic 40k x 10k, 1M rows": random_split(synthetic, 0.2, seed=0)}  # fmt: skip
    rows = []
    for name, (train, test) in sets.items():
        task = RandomSplit(name, train, test)
        popular = task.score(MostPopular().fit(train))
        rows.append([name, "most-popular", popular["recall@10"], popular["ndcg@10"], "", ""])
        for sparse in (False, True):
            started = time.perf_counter()
            model = make(BPR, sparse).fit(train)
            seconds = time.perf_counter() - started
            got = task.score(model)
            label = "bpr, sparse (lazy Adam)" if sparse else "bpr, dense (Adam)"
            rows.append([name, label, got["recall@10"], got["ndcg@10"], "", f"{seconds:.1f}"])
            print(rows[-1], flush=True)
    from recfunnel.data.sources import DataSpec, load

    # on ratings, ML-100k's u1 and u2 folds: the ranking model's default with its side
    # features and item autoencoder
    for kind in (SGDMF, RankingModel):
        for fold in (1, 2):
            dataset, train, test = load(DataSpec(data_dir=str(qd.DATA / "ml-100k"),
                                                 item_key="id", split=f"u{fold}"))  # fmt: skip
            for sparse in (False, True):
                started = time.perf_counter()
                model = make(kind, sparse).fit(train, dataset=dataset)
                seconds = time.perf_counter() - started
                error = model.predict(test.users, test.items) - test.ratings
                label = f"{kind.kind}, " + ("sparse (lazy Adam)" if sparse else "dense (Adam)")
                rows.append([f"ML-100k u{fold}", label, "", "",
                             float(np.sqrt(np.mean(error**2))), f"{seconds:.1f}"])  # fmt: skip
                print(rows[-1], flush=True)
    return markdown_table(["data", "model", "Recall@10", "NDCG@10", "RMSE", "fit s"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parts", nargs="+", choices=("speed", "quality"))
    parser.add_argument("--examples", type=int, default=200_000, help="rows per speed fit")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    command = " ".join(["python", "benchmarks/bench_sparse_updates.py", *sys.argv[1:]])
    for part in args.parts:
        text = {"speed": speed, "quality": quality}[part](args)
        text = f"`{command}` ({machine()})\n\n{text}"
        print(f"\n{text}\n", flush=True)
        if not args.no_docs:
            write_section("scale.md", f"sparse-updates-{part}", text)


if __name__ == "__main__":
    main()
