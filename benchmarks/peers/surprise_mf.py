"""scikit-surprise peer: SVD or SVD++ with default hyper-parameters on explicit 1-5 ratings.

Trains on the whole train TSV (``user item rating timestamp`` with header), predicts every row of
the test TSV in file order and writes the predictions plus RMSE/MAE computed here with numpy.
Surprise clips predictions to the rating scale and falls back to the global mean (plus the known
biases) for users or items unseen in training; ``result.json`` counts such test rows.

Run with the peer venv's python, e.g.::

    .venv-peers/bin/python benchmarks/peers/surprise_mf.py --train u1.base.tsv \\
        --test u1.test.tsv --out out/surprise --algo svd --seed 42
"""

from __future__ import annotations

import argparse
import json
import time
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
from surprise import SVD, Dataset, Reader, SVDpp

ALGOS = {"svd": SVD, "svdpp": SVDpp}


def read_ratings(path: Path) -> pd.DataFrame:
    """Read ``user item rating`` with raw ids kept as strings (titles may contain anything)."""
    users, items, ratings = [], [], []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:3] != ["user", "item", "rating"]:
            raise ValueError(f"{path}: unexpected header {header}")
        for line in f:
            fields = line.rstrip("\n").split("\t")
            users.append(fields[0])
            items.append(fields[1])
            ratings.append(float(fields[2]))
    return pd.DataFrame({"user": users, "item": items, "rating": ratings})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="train ratings TSV")
    parser.add_argument("--test", type=Path, required=True, help="test ratings TSV")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--algo", choices=sorted(ALGOS), default="svd")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    train = read_ratings(args.train)
    test = read_ratings(args.test)
    trainset = Dataset.load_from_df(train, Reader(rating_scale=(1, 5))).build_full_trainset()
    algo = ALGOS[args.algo](random_state=args.seed)

    start = time.perf_counter()
    algo.fit(trainset)
    fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    predictions = [
        algo.predict(u, i, r_ui=r)
        for u, i, r in zip(test["user"], test["item"], test["rating"], strict=True)
    ]
    predict_seconds = time.perf_counter() - start

    estimate = np.array([p.est for p in predictions], dtype=np.float64)
    truth = test["rating"].to_numpy(dtype=np.float64)
    errors = estimate - truth

    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "predictions.tsv", "w", encoding="utf-8") as f:
        f.write("user\titem\trating\tprediction\n")
        for p in predictions:
            f.write(f"{p.uid}\t{p.iid}\t{p.r_ui:g}\t{float(p.est)!r}\n")

    result = {
        "library": "surprise",
        "algo": args.algo,
        "fit_seconds": fit_seconds,
        "predict_seconds": predict_seconds,
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "num_train": len(train),
        "num_test": len(test),
        "num_test_unknown_user": int((~test["user"].isin(train["user"])).sum()),
        "num_test_unknown_item": int((~test["item"].isin(train["item"])).sum()),
        "seed": args.seed,
        "params": {
            k: getattr(algo, k)
            for k in ("n_factors", "n_epochs", "biased", "lr_bu", "reg_bu", "lr_pu", "reg_pu")
            if hasattr(algo, k)
        },
        "versions": {"surprise": metadata.version("scikit-surprise"), "numpy": np.__version__},
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
