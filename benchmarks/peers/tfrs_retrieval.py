"""TensorFlow Recommenders peer: the MovieLens basic retrieval tutorial model.

Builds the two-tower model exactly as the TFRS "basic retrieval" tutorial does:
StringLookup + Embedding(len(vocab) + 1, 32) towers, a ``tfrs.tasks.Retrieval`` task with
``tfrs.metrics.FactorizedTopK`` over the whole candidate catalogue, Adagrad(0.1), a shuffled
train set batched by 8192 and cached, 3 epochs, evaluation with batches of 4096.

The script only trains. It writes the learned tower outputs so the recfunnel side can compute
every quality metric with its own code; TFRS's own ``evaluate()`` numbers are kept in
``result.json`` for cross-checking only.

Run with the peer venv's python, e.g.::

    .venv-peers/bin/python benchmarks/peers/tfrs_retrieval.py --train train.tsv \\
        --test test.tsv --items items.txt --users users.txt --out out/tfrs --seed 42
"""

from __future__ import annotations

import argparse
import json
import os
import time
from importlib import metadata
from pathlib import Path

# The tutorial targets Keras 2; TensorFlow >= 2.16 needs this before it is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402


def read_interactions(path: Path) -> tuple[list[str], list[str]]:
    """Read (user, item) raw string ids from a ``user item rating timestamp`` TSV with header."""
    users, items = [], []
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:2] != ["user", "item"]:
            raise ValueError(f"{path}: unexpected header {header}")
        for line in f:
            fields = line.rstrip("\n").split("\t")
            users.append(fields[0])
            items.append(fields[1])
    return users, items


def read_ids(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.rstrip("\n")]


def make_dataset(users: list[str], items: list[str]) -> tf.data.Dataset:
    return tf.data.Dataset.from_tensor_slices(
        {"user_id": tf.constant(users), "movie_title": tf.constant(items)}
    )


class MovielensModel(tfrs.Model):
    """The tutorial's model; ``train_metrics=False`` skips top-k metrics inside ``fit``."""

    def __init__(self, user_model, movie_model, task, train_metrics: bool = True):
        super().__init__()
        self.movie_model: tf.keras.Model = movie_model
        self.user_model: tf.keras.Model = user_model
        self.task: tf.keras.layers.Layer = task
        self.train_metrics = train_metrics

    def compute_loss(self, features, training=False):
        user_embeddings = self.user_model(features["user_id"])
        positive_movie_embeddings = self.movie_model(features["movie_title"])
        compute_metrics = self.train_metrics or not training
        return self.task(
            user_embeddings, positive_movie_embeddings, compute_metrics=compute_metrics
        )


def tower(vocabulary: list[str], dim: int) -> tf.keras.Model:
    return tf.keras.Sequential(
        [
            tf.keras.layers.StringLookup(vocabulary=vocabulary, mask_token=None),
            tf.keras.layers.Embedding(len(vocabulary) + 1, dim),
        ]
    )


def embed(model: tf.keras.Model, ids: list[str], chunk: int = 65536) -> np.ndarray:
    parts = [model(tf.constant(ids[i : i + chunk])).numpy() for i in range(0, len(ids), chunk)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="train interactions TSV")
    parser.add_argument("--test", type=Path, required=True, help="test interactions TSV")
    parser.add_argument("--items", type=Path, required=True, help="candidate ids, one per line")
    parser.add_argument("--users", type=Path, required=True, help="user ids, one per line")
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8192)
    parser.add_argument("--eval-batch-size", type=int, default=4096)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument(
        "--train-metrics",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compute FactorizedTopK during fit as the tutorial does (slow); "
        "--no-train-metrics only computes the loss while training",
    )
    parser.add_argument("--verbose", type=int, default=0, help="Keras verbosity for fit/evaluate")
    args = parser.parse_args()

    tf.keras.utils.set_random_seed(args.seed)
    train_users, train_items = read_interactions(args.train)
    test_users, test_items = read_interactions(args.test)
    item_ids = read_ids(args.items)
    user_ids = read_ids(args.users)

    user_model = tower(user_ids, args.dim)
    movie_model = tower(item_ids, args.dim)
    candidates = tf.data.Dataset.from_tensor_slices(tf.constant(item_ids))
    metrics = tfrs.metrics.FactorizedTopK(candidates=candidates.batch(128).map(movie_model))
    task = tfrs.tasks.Retrieval(metrics=metrics)
    model = MovielensModel(user_model, movie_model, task, train_metrics=args.train_metrics)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=args.learning_rate))

    # The tutorial shuffles once with a buffer covering the whole set, then caches the batches.
    train = make_dataset(train_users, train_items)
    cached_train = train.shuffle(len(train_users)).batch(args.batch_size).cache()
    cached_test = make_dataset(test_users, test_items).batch(args.eval_batch_size).cache()

    start = time.perf_counter()
    history = model.fit(cached_train, epochs=args.epochs, verbose=args.verbose)
    fit_seconds = time.perf_counter() - start

    start = time.perf_counter()
    tfrs_metrics = model.evaluate(cached_test, return_dict=True, verbose=args.verbose)
    eval_seconds = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "user_ids.txt").write_text("".join(f"{u}\n" for u in user_ids), encoding="utf-8")
    (args.out / "item_ids.txt").write_text("".join(f"{i}\n" for i in item_ids), encoding="utf-8")
    np.save(args.out / "user_factors.npy", embed(user_model, user_ids))
    np.save(args.out / "item_factors.npy", embed(movie_model, item_ids))

    result = {
        "library": "tensorflow_recommenders",
        "fit_seconds": fit_seconds,
        "eval_seconds": eval_seconds,
        "epochs": args.epochs,
        "dim": args.dim,
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "learning_rate": args.learning_rate,
        "train_metrics": args.train_metrics,
        "seed": args.seed,
        "num_users": len(user_ids),
        "num_items": len(item_ids),
        "num_train": len(train_users),
        "num_test": len(test_users),
        "train_loss_per_epoch": [float(x) for x in history.history["loss"]],
        "tfrs_eval_metrics": {k: float(v) for k, v in tfrs_metrics.items()},
        "versions": {
            "tensorflow": tf.__version__,
            "tensorflow_recommenders": metadata.version("tensorflow-recommenders"),
            "tf_keras": metadata.version("tf-keras"),
        },
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
