"""implicit peer: CPU AlternatingLeastSquares on binary (or weighted) implicit feedback.

Input is either a TSV (``user item rating timestamp`` with header; every row counts as one
positive interaction, ratings are ignored) or an ``.npz`` with dense 0-based ``users``/``items``
index arrays, optional ``weights`` and scalars ``num_users``/``num_items``.

implicit 0.7 treats the matrix values as confidences and multiplies them by the model's
``alpha`` inside ``fit``; we therefore pass the binary (or weighted) matrix and ``alpha=...``.

Only ``model.fit`` is timed. The factors are written for the recfunnel side to evaluate.

Run with the peer venv's python, e.g.::

    .venv-peers/bin/python benchmarks/peers/implicit_als.py --train train.tsv \\
        --out out/implicit --factors 32 --iterations 15 --seed 42
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from importlib import metadata
from pathlib import Path

# implicit warns (and runs much slower) when BLAS has its own thread pool: pin it to one thread
# before numpy/scipy load their BLAS.
os.environ["OPENBLAS_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from implicit.cpu.als import AlternatingLeastSquares  # noqa: E402
from threadpoolctl import threadpool_info  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def read_tsv(path: Path) -> tuple[sp.csr_matrix, list[str], list[str]]:
    """Binary user x item matrix from a TSV; ids are numbered in order of first appearance."""
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    rows, cols = [], []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:2] != ["user", "item"]:
            raise ValueError(f"{path}: unexpected header {header}")
        for line in f:
            user, item = line.rstrip("\n").split("\t")[:2]
            rows.append(user_index.setdefault(user, len(user_index)))
            cols.append(item_index.setdefault(item, len(item_index)))
    shape = (len(user_index), len(item_index))
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    matrix.data[:] = 1.0  # repeated (user, item) pairs stay a single positive
    return matrix, list(user_index), list(item_index)


def read_npz(path: Path) -> sp.csr_matrix:
    data = np.load(path)
    users, items = data["users"], data["items"]
    binary = "weights" not in data
    weights = np.ones(len(users), np.float32) if binary else data["weights"].astype(np.float32)
    shape = (int(data["num_users"]), int(data["num_items"]))
    matrix = sp.csr_matrix((weights, (users, items)), shape=shape)
    if binary:
        matrix.data[:] = 1.0
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--train", type=Path, help="train interactions TSV")
    source.add_argument("--train-npz", type=Path, help="npz with users/items[/weights] arrays")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--factors", type=int, default=100)
    parser.add_argument("--regularization", type=float, default=0.01)
    parser.add_argument("--iterations", type=int, default=15)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    args = parser.parse_args()

    user_ids = item_ids = None
    if args.train is not None:
        matrix, user_ids, item_ids = read_tsv(args.train)
    else:
        matrix = read_npz(args.train_npz)
    matrix.sort_indices()
    rss_before_fit = peak_rss_mb()

    model = AlternatingLeastSquares(
        factors=args.factors,
        regularization=args.regularization,
        alpha=args.alpha,
        iterations=args.iterations,
        num_threads=args.threads,
        random_state=args.seed,
    )
    start = time.perf_counter()
    model.fit(matrix, show_progress=False)
    fit_seconds = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    if user_ids is not None:
        (args.out / "user_ids.txt").write_text("".join(f"{u}\n" for u in user_ids), "utf-8")
        (args.out / "item_ids.txt").write_text("".join(f"{i}\n" for i in item_ids), "utf-8")
    np.save(args.out / "user_factors.npy", np.asarray(model.user_factors, dtype=np.float32))
    np.save(args.out / "item_factors.npy", np.asarray(model.item_factors, dtype=np.float32))

    blas_threads = {
        info["internal_api"]: info["num_threads"]
        for info in threadpool_info()
        if info["user_api"] == "blas"
    }
    result = {
        "library": "implicit",
        "fit_seconds": fit_seconds,
        "peak_rss_mb": peak_rss_mb(),
        "peak_rss_mb_before_fit": rss_before_fit,
        "factors": args.factors,
        "regularization": args.regularization,
        "iterations": args.iterations,
        "alpha": args.alpha,
        "seed": args.seed,
        "threads_requested": args.threads,
        "threads": args.threads or len(os.sched_getaffinity(0)),
        "blas_threads": blas_threads,
        "num_users": matrix.shape[0],
        "num_items": matrix.shape[1],
        "nnz": int(matrix.nnz),
        "versions": {"implicit": metadata.version("implicit"), "numpy": np.__version__},
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
