"""Two-tower learning curve on a validation split carved from a training split (never the test).

    PYTHONPATH=src python benchmarks/tower_curve.py /tmp/recfunnel-scale/1M/train.npz \\
        --rows 3900000 --every 650000 [--set '{"large.item_l2": 0}']

Reads the training split bench_scale.py saves (``train.npz``), holds out a seeded 10% of its
rows as validation, and trains the two-tower ``default`` preset's resolved settings (the large
catalogue ones at these sizes) with one thread, printing recall@10 on a seeded sample of the
validation users every ``--every`` rows, beside most-popular's on the same users, the training
loss and the mean norms of the user, history and item vectors (how docs/scale.md found the
large settings memorising their training rows).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from recfunnel.data import Interactions
from recfunnel.metrics import evaluate_scores
from recfunnel.models import TwoTower
from recfunnel.presets import preset
from recfunnel.training import Optimizers, seed_everything, to_tensors, train_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_npz")
    parser.add_argument("--rows", type=int, default=2_000_000, help="training rows in all")
    parser.add_argument("--every", type=int, default=200_000, help="validate every N rows")
    parser.add_argument("--set", default="{}", help="overrides of the preset, as JSON")
    parser.add_argument("--eval-users", type=int, default=3000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = np.load(args.train_npz)
    shape = int(raw["num_users"]), int(raw["num_items"])
    rng = np.random.default_rng(7)
    held = rng.random(len(raw["users"])) < 0.1
    train = Interactions(raw["users"][~held], raw["items"][~held], *shape)
    valid = Interactions(raw["users"][held], raw["items"][held], *shape)
    model = TwoTower(preset("two-tower", "default"), **json.loads(args.set))
    model.fit_config_ = model._resolve(train)
    print(model.fit_config_, flush=True)
    model._remember(train)
    seed_everything(0)
    net = model._build_network(train)
    trainer = model.fit_config_.trainer
    optimizer = Optimizers(net, trainer)
    tensors = to_tensors(train, torch.device("cpu"))
    users = np.sort(rng.choice(np.unique(valid.users), args.eval_users, replace=False))
    counts = torch.as_tensor(np.bincount(train.items, minlength=shape[1]).astype(np.float32))

    def recall(score) -> float:
        return evaluate_scores(score, train, valid, users=users, factorized_ks=(),
                               ranking_ks=(10,))["recall@10"]  # fmt: skip

    popular = recall(lambda u: counts[None, :].expand(len(u), -1).clone())
    print(f"most-popular validation recall@10 {popular:.4f}", flush=True)

    def norm(weight) -> float:
        return float(weight.detach().norm(dim=1).mean())

    generator = torch.Generator().manual_seed(0)
    seen, total, steps, started, due = 0, 0.0, 0, time.time(), args.every
    while seen < args.rows:
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(order), trainer.batch_size):
            rows = order[start : start + trainer.batch_size]
            optimizer.zero_grad()
            total += train_step(net, tensors, rows)
            optimizer.step()
            steps, seen = steps + 1, seen + len(rows)
            if seen >= due or seen >= args.rows:
                net.eval()
                model._refresh()
                value = recall(model.score)
                net.train()
                model._refresh()
                tower = net.query_tower
                print(f"rows {seen} loss {total / steps:.3f} validation recall@10 {value:.4f} "
                      f"{seen / (time.time() - started):,.0f} rows/s; mean norms: users "
                      f"{norm(tower.users.embedding.weight):.2f} history "
                      f"{norm(getattr(tower, 'history', torch.zeros(1, 1))):.2f} items "
                      f"{norm(net.item_tower.embedding.weight):.2f}", flush=True)  # fmt: skip
                total, steps, due = 0.0, 0, due + args.every
            if seen >= args.rows:
                break


if __name__ == "__main__":
    main()
