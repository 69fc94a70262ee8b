"""Two-tower retrieval on MovieLens 100k: presets, the most-popular baseline, and TFRS.

Trains recfunnel's ``seed`` preset (the TFRS tutorial) and ``default`` preset, the most-popular
baseline and, with ``--tfrs``, the TFRS tutorial model itself (peer virtualenv) on the same
seeded random 80/20 split, in one run. Every model is scored by recfunnel's metric code (TFRS from
its dumped towers). Prints a table and, with ``--write-docs``, writes it into
docs/benchmarks.md.

    python benchmarks/bench_retrieval.py --tfrs --write-docs
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import (
    load_factors,
    machine,
    run_peer,
    table,
    write_lines,
    write_section,
    write_tsv,
)
from recfunnel.data import sources
from recfunnel.data.sources import DataSpec
from recfunnel.experiment import build_model
from recfunnel.metrics import evaluate_scores, factorized_key
from recfunnel.models import MostPopular

COLUMNS = [
    ("model", "model", ""),
    ("top-1", factorized_key(1), ".4f"),
    ("top-5", factorized_key(5), ".4f"),
    ("top-10", factorized_key(10), ".4f"),
    ("top-50", factorized_key(50), ".4f"),
    ("top-100", factorized_key(100), ".4f"),
    ("Recall@10", "recall@10", ".3f"),
    ("NDCG@10", "ndcg@10", ".3f"),
    ("fit s", "fit_seconds", ".2f"),
]


def fit_and_score(name, make_model, train, test, repeats: int = 1):
    """Fit a fresh ``make_model()`` ``repeats`` times (median fit seconds); score the last."""
    seconds = []
    for _ in range(repeats):
        model = make_model()
        started = time.perf_counter()
        model.fit(train)
        seconds.append(time.perf_counter() - started)
    metrics = evaluate_scores(model.score, train, test)
    return {"model": name, "fit_seconds": float(np.median(seconds)), **metrics}


def tfrs(dataset, train, test, seed: int, train_metrics: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        users, items = dataset.users.ids, dataset.items.ids
        write_tsv(
            tmp / "train.tsv", [users[u] for u in train.users], [items[i] for i in train.items]
        )
        write_tsv(tmp / "test.tsv", [users[u] for u in test.users], [items[i] for i in test.items])
        write_lines(tmp / "users.txt", users)
        write_lines(tmp / "items.txt", items)
        flag = "--train-metrics" if train_metrics else "--no-train-metrics"
        run_peer(
            "tfrs_retrieval.py", "--train", str(tmp / "train.tsv"), "--test",
            str(tmp / "test.tsv"), "--users", str(tmp / "users.txt"), "--items",
            str(tmp / "items.txt"), "--out", str(tmp / "out"), "--seed", str(seed), flag,
        )  # fmt: skip
        peer_users, peer_items, uf, itf, result = load_factors(tmp / "out")
    # Reorder the peer's rows to recfunnel's indices, then score with the same metric code.
    user_row = {u: r for r, u in enumerate(peer_users)}
    item_row = {i: r for r, i in enumerate(peer_items)}
    uf = uf[torch.as_tensor([user_row[u] for u in users])]
    itf = itf[torch.as_tensor([item_row[i] for i in items])]
    metrics = evaluate_scores(lambda u: uf[torch.as_tensor(u)] @ itf.T, train, test)
    label = "TFRS tutorial (metrics during fit, as the tutorial)" if train_metrics else (
        "TFRS tutorial (no metrics during fit)")  # fmt: skip
    return {"model": label, "fit_seconds": result["fit_seconds"], **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="folder holding ml-100k (default: RECFUNNEL_DATA_DIR)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--tfrs", action="store_true", help="also run TFRS in the peer venv")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fits of each recfunnel preset; the median time is shown")  # fmt: skip
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    spec = DataSpec(data_dir=args.data_dir, seed=args.seed)
    dataset, train, test = sources.load(spec)
    rows = [fit_and_score("most popular", MostPopular, train, test)]
    for name, label in (
        ("seed", "recfunnel `seed` (TFRS tutorial)"),
        ("default", "recfunnel `default`"),
    ):
        make = lambda name=name: build_model("two-tower", name, seed=args.seed)  # noqa: E731
        rows.append(fit_and_score(label, make, train, test, args.repeats))
    if args.tfrs:
        rows.append(tfrs(dataset, train, test, args.seed, train_metrics=True))
        rows.append(tfrs(dataset, train, test, args.seed, train_metrics=False))
    text = table(rows, COLUMNS)
    seed_fit = rows[1]["fit_seconds"]
    notes = [
        f"MovieLens 100k, titles as item keys, seeded random 80/20 split (seed {args.seed}): "
        f"{len(train)} train / {len(test)} test rows, {len(dataset.items)} items. {machine()}.",
        "Metrics are computed by recfunnel for every model (TFRS from its dumped towers).",
        f"recfunnel fit seconds: median of {args.repeats} fits in one process (the first fit of "
        "the process also pays torch's one-time lazy imports); TFRS: one fit each.",
    ]
    for row in rows[3:]:
        notes.append(f"Fit speed-up of the `seed` preset over {row['model']}: "
                     f"{row['fit_seconds'] / seed_fit:.1f}x.")  # fmt: skip
    out = text + "\n\n" + "\n".join(f"- {n}" for n in notes)
    print(out)
    if args.write_docs:
        print("wrote", write_section("benchmarks.md", "retrieval", out))


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
