"""A model's variants: per-epoch validation curves against most-popular (#12), never the test rows.

    python benchmarks/validation_curves.py bpr synthetic-small,ml1m-small \
        '{"default": {}, "hardest of 32": {"weighting": "hardest", "negatives": 32}}'

Each dataset's training rows are carved by ``quality_data.tuning_split`` (a seeded random 10%
is the validation split); every variant is the model's ``default`` preset with the given
overrides (``--set`` names: ``{"trainer.epochs": 10}``), fitted once with validation after every
epoch. Prints one line per variant. Threads: torch 1.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_data as qd  # noqa: E402
from recfunnel.metrics import evaluate_scores  # noqa: E402
from recfunnel.models import model_class  # noqa: E402
from recfunnel.presets import preset  # noqa: E402

LOADERS = {"synthetic-small": qd.synthetic_small, "ml1m-small": qd.ml1m_small,
           "ml100k": qd.ml100k_seed, "synthetic": qd.synthetic,
           "ml1m": lambda: (qd.ml1m_sequences().train,)}  # fmt: skip
#: validation is each user's last item here (the sequences' protocol), a random 10% elsewhere
SEQUENTIAL = {"ml1m"}


def main() -> None:
    torch.set_num_threads(1)
    kind, datasets, variants = sys.argv[1], sys.argv[2].split(","), json.loads(sys.argv[3])
    for name in datasets:
        fit, validation = qd.tuning_split(LOADERS[name]()[0], sequential=name in SEQUENTIAL)
        popular = model_class("most-popular")(preset("most-popular")).fit(fit)
        m = evaluate_scores(popular.score, fit, validation, ranking_ks=(10,))
        print(f"{name} {fit.num_users}x{fit.num_items}, {len(fit)} rows: most-popular "
              f"R@10 {m['recall@10']:.4f} NDCG@10 {m['ndcg@10']:.4f}", flush=True)  # fmt: skip
        for label, overrides in variants.items():
            model = model_class(kind)(preset(kind, "default").override(**overrides))
            wall, cpu = time.perf_counter(), time.process_time()
            model.fit(fit, validation=validation)
            epochs = model.training_log_.epochs
            best = max(epochs, key=lambda e: e["ndcg@10"])
            curve = " ".join(f"{e['ndcg@10']:.3f}" for e in epochs)
            print(f"  {label}: last R@10 {epochs[-1]['recall@10']:.4f} NDCG@10 "
                  f"{epochs[-1]['ndcg@10']:.4f} | best NDCG@10 {best['ndcg@10']:.4f} (epoch "
                  f"{best['epoch']}) | {time.perf_counter() - wall:.0f} s wall, "
                  f"{time.process_time() - cpu:.0f} CPU s, load {os.getloadavg()[0]:.1f} | "
                  f"NDCG@10 per epoch {curve}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
