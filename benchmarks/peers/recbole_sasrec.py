"""RecBole peer: RecBole's SASRec on the SASRec folder protocol (ML-1M sequences).

The model is RecBole's own ``SASRec`` class with RecBole's default SASRec settings (read from
RecBole's ``Config``: 2 layers, 2 heads, inner size 256, dropout 0.5, GELU, CE loss over the
whole catalogue), sequence length and dimension as given. It is trained as RecBole's sequential
pipeline trains it: every prefix of every training line is one example (RecBole's data
augmentation), padded to the full ``MAX_ITEM_LIST_LENGTH``, the loss on its last position,
Adam, batches of 2048 shuffled every epoch. The loop is this script's (RecBole's ``Trainer``
needs RecBole's own leave-one-out split, which would hold out two training items per user
that the protocol trains on), so the fit can stop at a CPU-time budget mid-epoch.

Writes into ``--out``: ``scores.npy`` (float32 [512, items], the validation users' scores of
every item, column ``j`` = item id ``j + 1``), ``curve.json`` (NDCG@10 and HR@10 on the
validation users every ``--eval-every`` CPU minutes, seen items excluded, computed here for
the curve only) and ``result.json`` (fit seconds, CPU seconds, examples trained, settings,
versions). The recfunnel side computes the reported metrics from ``scores.npy``.

Run with the peer venv's python (RecBole and PyTorch only)::

    /work/peers/recbole/bin/python benchmarks/peers/recbole_sasrec.py \\
        --folder $RECFUNNEL_DATA_DIR/ml-1m-sasrec --out out/recbole --minutes 30
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from importlib import metadata
from pathlib import Path


def read_lines(path: Path) -> list[list[int]]:
    with open(path, encoding="utf-8") as fh:
        return [[int(t) for t in line.split()] for line in fh if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=30.0, help="CPU-time budget of the fit")
    parser.add_argument("--eval-every", type=float, default=3.0, help="CPU minutes per point")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(args.threads)

    import numpy as np
    import torch
    from recbole.config import Config
    from recbole.model.sequential_recommender.sasrec import SASRec

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    folder, out = Path(args.folder), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = read_lines(folder / "train" / "input.txt")
    val_in = read_lines(folder / "val" / "input.txt")
    val_out = np.array([line[0] for line in read_lines(folder / "val" / "output.txt")])
    num_items = max(max(line) for line in train)  # ids 1..N, 0 is RecBole's padding

    config = Config(model="SASRec", dataset="ml-1m-sasrec", config_dict={
        "hidden_size": args.dim, "MAX_ITEM_LIST_LENGTH": args.max_len, "loss_type": "CE",
        "device": "cpu", "use_gpu": False, "seed": args.seed, "show_progress": False,
        "train_neg_sample_args": None,
    })  # fmt: skip

    class Catalogue:  # what SASRec reads from a RecBole dataset: the number of item ids
        def num(self, field):
            return num_items + 1

    model = SASRec(config, Catalogue())
    settings = {k: config[k] for k in ("n_layers", "n_heads", "hidden_size", "inner_size",
                                       "hidden_dropout_prob", "attn_dropout_prob", "hidden_act",
                                       "layer_norm_eps", "initializer_range", "loss_type",
                                       "MAX_ITEM_LIST_LENGTH")}  # fmt: skip

    # RecBole's augmentation: each position t >= 1 of a line is a target, the items before
    # it (the last max_len of them) its input
    L = args.max_len
    lines = [np.asarray(line, dtype=np.int64) for line in train]
    owner = np.concatenate([np.full(len(x) - 1, u) for u, x in enumerate(lines)])
    target_pos = np.concatenate([np.arange(1, len(x)) for x in lines])
    examples = len(owner)

    def batch_of(rows):
        seq = np.zeros((len(rows), L), dtype=np.int64)
        lengths = np.empty(len(rows), dtype=np.int64)
        targets = np.empty(len(rows), dtype=np.int64)
        for i, r in enumerate(rows):
            line, t = lines[owner[r]], target_pos[r]
            prefix = line[max(0, t - L) : t]
            seq[i, : len(prefix)] = prefix
            lengths[i] = len(prefix)
            targets[i] = line[t]
        return {
            model.ITEM_SEQ: torch.as_tensor(seq),
            model.ITEM_SEQ_LEN: torch.as_tensor(lengths),
            model.POS_ITEM_ID: torch.as_tensor(targets),
        }

    def val_scores() -> np.ndarray:
        model.eval()
        rows = []
        with torch.no_grad():
            for start in range(0, len(val_in), 128):
                chunk = val_in[start : start + 128]
                seq = np.zeros((len(chunk), L), dtype=np.int64)
                lengths = np.empty(len(chunk), dtype=np.int64)
                for i, line in enumerate(chunk):
                    tail = line[-L:]
                    seq[i, : len(tail)] = tail
                    lengths[i] = len(tail)
                batch = {model.ITEM_SEQ: torch.as_tensor(seq),
                         model.ITEM_SEQ_LEN: torch.as_tensor(lengths)}  # fmt: skip
                rows.append(model.full_sort_predict(batch)[:, 1:].float().numpy())
        model.train()
        return np.concatenate(rows)

    def metrics(scores: np.ndarray) -> dict:
        scores = scores.copy()
        for i, line in enumerate(val_in):
            scores[i, np.asarray(line) - 1] = -np.inf  # seen items leave the ranking
        target = scores[np.arange(len(scores)), val_out - 1]
        rank = (scores > target[:, None]).sum(1)
        hit = rank < 10
        return {"ndcg@10": float(np.mean(np.where(hit, 1.0 / np.log2(rank + 2.0), 0.0))),
                "hr@10": float(hit.mean())}  # fmt: skip

    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    rng = np.random.default_rng(args.seed)
    budget = 60.0 * args.minutes
    cpu0, wall0 = time.process_time(), time.perf_counter()
    eval_cpu = 0.0  # evaluation for the curve is not counted as fitting
    next_point = 60.0 * args.eval_every
    curve, trained, epoch, done = [], 0, 0, False
    model.train()
    while not done:
        epoch += 1
        order = rng.permutation(examples)
        for start in range(0, examples, args.batch_size):
            optimizer.zero_grad()
            loss = model.calculate_loss(batch_of(order[start : start + args.batch_size]))
            loss.backward()
            optimizer.step()
            trained += min(args.batch_size, examples - start)
            fit_cpu = time.process_time() - cpu0 - eval_cpu
            if fit_cpu >= next_point or fit_cpu >= budget:
                started = time.process_time()
                point = metrics(val_scores())
                eval_cpu += time.process_time() - started
                curve.append({"fit_cpu_minutes": fit_cpu / 60, "epochs": trained / examples,
                              "wall_minutes": (time.perf_counter() - wall0) / 60,
                              "loss": float(loss), **point})  # fmt: skip
                print(json.dumps(curve[-1]), flush=True)
                (out / "curve.json").write_text(json.dumps(curve, indent=1))  # survives a kill
                next_point += 60.0 * args.eval_every
            if fit_cpu >= budget:
                done = True
                break
    fit_cpu = time.process_time() - cpu0 - eval_cpu
    scores = val_scores()
    np.save(out / "scores.npy", scores.astype(np.float32))
    (out / "curve.json").write_text(json.dumps(curve, indent=1))
    result = {
        "fit_cpu_seconds": fit_cpu, "wall_seconds": time.perf_counter() - wall0,
        "examples_per_epoch": examples, "examples_trained": trained,
        "epochs": trained / examples, "batch_size": args.batch_size,
        "learning_rate": args.learning_rate, "threads": args.threads, "seed": args.seed,
        "settings": settings, "final": metrics(scores),
        "versions": {p: metadata.version(p) for p in ("recbole", "torch", "numpy")},
        "finite": bool(math.isfinite(float(loss))),
    }  # fmt: skip
    (out / "result.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
