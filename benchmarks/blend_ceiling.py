"""How far a blend of recfunnel's models could go on a test split: a ceiling, not a result.

#12 asks ``--model auto`` for filtered Recall@10 >= 0.45 on the ML-100k seed split. ``auto``
chooses its blend on a validation split carved from the training rows. This script asks the
opposite question: fit each model's ``default`` preset on all the training rows, then search
the blend weights **on the test rows themselves** (a grid over each member's weight, the same
standardised blend as :class:`recfunnel.models.Blend`). No honest method can choose better
weights than the test rows do, so the best cell bounds what any blend of these members reaches
on this split. Never use it to pick anything; it only says whether the target is within reach
of re-weighting the models we have.

    OMP_NUM_THREADS=1 python benchmarks/blend_ceiling.py --dataset ml100k

Threads: torch 1 thread (set below), OMP/MKL/OpenBLAS from the environment (run with 1).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "benchmarks")]

from bench_quality import make_task  # noqa: E402
from recfunnel.metrics import evaluate_scores  # noqa: E402
from recfunnel.models import model_class  # noqa: E402
from recfunnel.models.blend import standardise  # noqa: E402
from recfunnel.presets import preset  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml100k", help="a bench_quality random split")
    parser.add_argument("--models", default="ease,wals,rp3beta,two-tower")
    parser.add_argument("--grid", default="0,0.25,0.5,0.75,1", help="weights tried per member")
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = make_task(args.dataset)
    train, test = task.train, task.test
    users = torch.arange(train.num_users)

    def recall(scores: torch.Tensor) -> float:
        m = evaluate_scores(lambda u: scores[torch.as_tensor(u)], train, test, ranking_ks=(10,),
                            factorized_ks=())  # fmt: skip
        return m["recall@10"]

    members = {}
    print("| model | test Recall@10 | fit s |\n|---|---|---|")
    for kind in args.models.split(","):
        started = time.perf_counter()
        model = model_class(kind)(preset(kind, "default")).fit(train)
        seconds = time.perf_counter() - started
        with torch.no_grad():
            scores = model.score(users).float()
        members[kind] = standardise(scores)
        print(f"| {kind} default | {recall(scores):.4f} | {seconds:.1f} |", flush=True)
    grid = [float(w) for w in args.grid.split(",")]
    best, best_weights = 0.0, None
    for weights in itertools.product(grid, repeat=len(members)):
        if sum(weights) == 0 or max(weights) < grid[-1]:  # scale-free: one weight at the top
            continue
        blended = sum(w * z for w, z in zip(weights, members.values(), strict=True) if w)
        value = recall(blended)
        if value > best:
            best, best_weights = value, weights
    mix = " + ".join(f"{k} {w:g}" for k, w in zip(members, best_weights, strict=True) if w)
    print(f"| ceiling: best blend chosen on the test rows ({mix}) | {best:.4f} | |")


if __name__ == "__main__":
    main()
