"""Named hyper-parameter sets per model.

* ``seed`` reproduces the TFRS MovieLens retrieval tutorial exactly: dimension 32, Keras'
  U(-0.05, 0.05) initialisation, Adagrad (lr 0.1, accumulators from 0.1), batch 8192, 3 epochs,
  in-batch softmax with sum reduction.
* ``default`` is tuned for quality on a validation split carved from the training data of the
  seeded random 80/20 MovieLens 100k split (``benchmarks/tune_two_tower.py``; the test set is
  never looked at). See docs/benchmarks.md for how it was chosen.
"""

from __future__ import annotations

from recfunnel.errors import RecfunnelError

PRESETS: dict[str, dict[str, dict]] = {
    "two-tower": {
        "seed": dict(
            dim=32, softmax="in-batch", reduction="sum", init="uniform", init_scale=0.05,
            optimizer="adagrad", learning_rate=0.1, batch_size=8192, epochs=3,
        ),
        "default": dict(
            dim=64, softmax="full", reduction="mean", history=True, init="normal",
            init_scale=0.01, optimizer="adam", learning_rate=0.005, batch_size=2048, epochs=15,
            user_l2=0.0,
        ),
    },
    "most-popular": {"seed": {}, "default": {}},
    # Matrix factorization (#3). wals "seed" is implicit's ALS at the benchmark's settings;
    # "default" is chosen by benchmarks/tune_mf.py on a validation split (see docs/mf.md).
    "wals": {
        "seed": dict(dim=32, regularization=0.01, alpha=1.0, epochs=15, solver="cg"),
        "default": dict(dim=32, regularization=30.0, alpha=4.0, epochs=15, solver="cg"),
    },
    "sgd-mf": {
        "seed": dict(dim=32, regularization=0.02, optimizer="sgd", learning_rate=0.005,
                     batch_size=1, epochs=20),
        "default": dict(dim=32, regularization=0.1, optimizer="adam", learning_rate=0.01,
                        batch_size=1024, epochs=20),
    },
    "bpr": {
        "seed": dict(dim=32, regularization=0.0001, learning_rate=0.01, batch_size=1024,
                     epochs=30),
        "default": dict(dim=32, regularization=0.0001, learning_rate=0.01, batch_size=1024,
                        epochs=30),
    },
}  # fmt: skip


def preset(model: str, name: str) -> dict:
    """Hyper-parameters of preset ``name`` for ``model``."""
    if model not in PRESETS:
        return {}
    try:
        return dict(PRESETS[model][name])
    except KeyError:
        raise RecfunnelError(
            f"unknown preset {name!r} for {model}; use one of {', '.join(PRESETS[model])}"
        ) from None
