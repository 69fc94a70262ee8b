"""How the ranking ``default`` preset's item autoencoder was chosen: validation only.

``u1.base`` is split 90/10 (seed 43) into fit and validation rows; ``u1.test`` is never loaded.
Fits the ranking network of the default preset once (autoencoder off), then item autoencoders
(I-AutoRec, 500 hidden units) over a grid of L2 penalties and epochs, and reports the
validation RMSE of each alone and of the chosen one blended with the network at several
weights.

    python benchmarks/tune_ranking.py --write-docs
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from common import machine, markdown_table, write_section
from recfunnel.data import random_split, sources
from recfunnel.data.sources import DataSpec
from recfunnel.metrics import rating_metrics
from recfunnel.models import RankingModel
from recfunnel.models.autoencoder import ItemAutoencoder
from recfunnel.presets import preset

GRID = [(1.0, 60), (20.0, 60), (100.0, 40), (100.0, 60), (100.0, 100), (300.0, 60), (300.0, 120)]
CHOSEN = (100.0, 60)
WEIGHTS = (0.0, 0.4, 0.5, 0.6, 0.7, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    spec = DataSpec(split="u1", item_key="id", data_dir=args.data_dir)
    dataset = sources.load_dataset(spec)
    train, _ = sources.split(dataset, spec)  # u1.test is dropped here
    fit, validation = random_split(train, 0.1, seed=43)
    low, high = float(fit.ratings.min()), float(fit.ratings.max())

    def rmse(predicted) -> float:
        return rating_metrics(np.clip(predicted, low, high), validation.ratings)["rmse"]

    params = preset("ranking", "default").override(autoencoder=0)
    started = time.perf_counter()
    network = RankingModel(params).fit(fit, dataset=dataset)
    net_seconds = time.perf_counter() - started
    net = network.predict(validation.users, validation.items)
    users, items = torch.as_tensor(validation.users), torch.as_tensor(validation.items)
    rows = [["ranking network alone (default, autoencoder off)", "", "", rmse(net),
             f"{net_seconds:.1f}"]]  # fmt: skip
    chosen = None
    for l2, epochs in GRID:
        started = time.perf_counter()
        auto = ItemAutoencoder.fit(fit, hidden=500, l2=l2, epochs=epochs)
        seconds = time.perf_counter() - started
        predicted = auto.predict(users, items).numpy()
        if (l2, epochs) == CHOSEN:
            chosen = predicted
        rows.append(["item autoencoder alone", l2, epochs, rmse(predicted), f"{seconds:.1f}"])
        print(rows[-1], flush=True)
    for weight in WEIGHTS:
        blended = (1 - weight) * net + weight * chosen
        rows.append([f"blend, autoencoder weight {weight:g}", CHOSEN[0], CHOSEN[1], rmse(blended),
                     ""])  # fmt: skip
    text = markdown_table(["model", "autoencoder L2", "epochs", "validation RMSE", "fit s"], rows)
    text += (
        f"\n\nFit rows: {len(fit)}, validation rows: {len(validation)} (90/10 of u1.base, "
        f"seed 43); 500 hidden units, Adam lr 1e-3, batches of 256 items. {machine()}."
    )
    print(text)
    if args.write_docs:
        write_section("ranking.md", "tuning_ranking", text)


if __name__ == "__main__":
    main()
