"""How the ``two-stage`` default's ranker and blend were chosen: validation only.

The training part of the seeded random 80/20 MovieLens 100k split is split again 90/10
(seed + 1) into fit and validation rows; the test rows are never loaded. Each ranker
configuration is fitted once inside the two-stage model (retrieval = the ``two-tower`` default)
on the fit rows, then the validation NDCG@10 (fit items excluded) is read for every ``blend``
(the blend only mixes scores, so one fit serves the whole sweep).

    python benchmarks/tune_two_stage.py --write-docs
"""

from __future__ import annotations

import argparse
import time

from common import machine, markdown_table, write_section
from recfunnel.data import random_split, sources
from recfunnel.data.sources import DataSpec
from recfunnel.metrics import evaluate_scores
from recfunnel.models.two_stage import TwoStage
from recfunnel.presets import preset

BLENDS = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
#: the ranker every candidate starts from: the previous two-stage default's (side features,
#: SVD++ history, listwise over 10 negatives, 5 epochs; the rating-only autoencoder off)
BASE_RANKER = preset("ranking", "default").override(
    objective="listwise", negatives=10, l2=0.0, learning_rate=0.005, epochs=5, autoencoder=0
)
NO_FEATURES = {"features": False}
#: (label, negatives from the retrieval shortlists?, ranker overrides)
CANDIDATES = [
    ("popularity negatives (previous default)", False, {}),
    ("shortlist negatives", True, {}),
    ("shortlist negatives, 20 per list", True, {"negatives": 20}),
    ("shortlist negatives, 10 epochs", True, {"epochs": 10}),
    ("shortlist negatives, L2 0.1", True, {"l2": 0.1}),
    ("shortlist negatives, no features", True, NO_FEATURES),
    ("popularity negatives, no features", False, NO_FEATURES),
    ("shortlist negatives, no features, 20 per list", True, {**NO_FEATURES, "negatives": 20}),
    ("shortlist negatives, no features, 2 epochs", True, {**NO_FEATURES, "epochs": 2}),
    ("shortlist negatives, no features, 3 epochs", True, {**NO_FEATURES, "epochs": 3}),
    (
        "shortlist negatives, no features, 3 epochs, dim 64",
        True,
        {**NO_FEATURES, "epochs": 3, "dim": 64},
    ),
    (
        "shortlist negatives, no features, no history, 3 epochs",
        True,
        {**NO_FEATURES, "epochs": 3, "pool_seen_items": False},
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--only", type=int, nargs="*", help="indices of CANDIDATES to run")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    spec = DataSpec(data_dir=args.data_dir, seed=args.seed)
    dataset = sources.load_dataset(spec)
    train, _ = sources.split(dataset, spec)  # the test part is dropped here
    fit, validation = random_split(train, 0.1, seed=args.seed + 1)
    retrieval = preset("two-tower", "default")
    rows = []
    chosen = args.only if args.only is not None else range(len(CANDIDATES))
    for index in chosen:
        label, hard, ranker = CANDIDATES[index]
        model = TwoStage(retrieval=retrieval, ranker=BASE_RANKER.override(**ranker), candidates=100,
                         hard_negatives=hard, seed=args.seed)  # fmt: skip
        started = time.perf_counter()
        model.fit(fit, dataset=dataset)
        seconds = time.perf_counter() - started
        row = [label]
        for blend in BLENDS:
            model.config = model.config.override(blend=blend)
            metrics = evaluate_scores(model.score, fit, validation, factorized_ks=(),
                                      ranking_ks=(10,))  # fmt: skip
            row.append(metrics["ndcg@10"])
        rows.append([*row, seconds])
        print(rows[-1], flush=True)
    headers = ["ranker", *(f"blend {b:g}" for b in BLENDS), "fit s"]
    text = markdown_table(headers, rows)
    text += (f"\n\nValidation NDCG@10 (fit items excluded). Fit rows: {len(fit)}, validation "
             f"rows: {len(validation)} (90/10 of the training part, seed {args.seed + 1}); "
             f"blend 1 is retrieval alone. {machine()}.")  # fmt: skip
    print(text)
    if args.write_docs:
        write_section("ranking.md", "tuning_two_stage", text)


if __name__ == "__main__":
    main()
