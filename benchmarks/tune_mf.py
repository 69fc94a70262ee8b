"""Choose the ``default`` WALS preset on a validation split carved from the training data.

The seeded random 80/20 MovieLens 100k split (``DataSpec()`` defaults) gives the training rows;
10% of them (seed 43, as ``recfunnel train --validation-fraction`` does) become the validation
set. The test set is never looked at. Prints the grid, best last.

    PYTHONPATH=src python benchmarks/tune_mf.py [--threads 1]
"""

from __future__ import annotations

import argparse
import itertools

import torch

from recfunnel.data import sources
from recfunnel.data.sources import DataSpec
from recfunnel.data.splits import random_split
from recfunnel.metrics import evaluate_scores
from recfunnel.models.als import WALS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = DataSpec()
    _, train, _ = sources.load(spec)
    fit, validation = random_split(train, 0.1, seed=spec.seed + 1)
    grid = itertools.product(
        (0.1, 1.0, 10.0, 30.0, 100.0, 300.0), (1.0, 2.0, 4.0, 8.0, 16.0), (0.0, 1.0)
    )
    rows = []
    print(f"{'regularization':>14} {'alpha':>6} {'reg_exp':>7} {'recall@10':>9}")
    for reg, alpha, exponent in grid:
        if exponent:
            reg = reg / 1000  # frequency scaling multiplies by ~(n_u + N) ~ 1.7e3
        model = WALS(dim=32, epochs=15, regularization=reg, alpha=alpha, reg_exponent=exponent)
        model.fit(fit)
        recall = evaluate_scores(model.score, fit, validation, factorized_ks=(), ranking_ks=(10,))[
            "recall@10"
        ]
        rows.append((recall, reg, alpha, exponent))
        print(f"{reg:14g} {alpha:6g} {exponent:7g} {recall:9.4f}", flush=True)
    best = max(rows)
    print(f"best: regularization={best[1]:g} alpha={best[2]:g} reg_exponent={best[3]:g} "
          f"(validation recall@10 {best[0]:.4f})")  # fmt: skip


if __name__ == "__main__":
    main()
