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
        # softmax "auto": the full softmax where it is cheap (MovieLens: the settings tuned
        # above), else mixed negatives with sparse updates, sized for 20M rows on 2 cores
        # (benchmarks/bench_scale.py, docs/scale.md)
        "default": dict(
            dim=32, softmax="auto", reduction="mean", history=True, item_bias=True,
            user_l2=0.01, init="normal", init_scale=0.01, optimizer="adam", learning_rate=0.02,
            batch_size=4096, epochs=5,
            large=dict(softmax="mixed", negatives=256, sampler="uniform", logq_correction=True,
                       sparse_updates=True, batch_size=1024, max_examples=8_000_000),
        ),
    },
    "most-popular": {"seed": {}, "default": {}},
    # Matrix factorization (#3). wals "seed" is implicit's ALS at the benchmark's settings;
    # "default" is chosen by benchmarks/tune_mf.py on a validation split (see docs/mf.md).
    "wals": {
        "seed": dict(dim=32, regularization=0.01, alpha=1.0, epochs=15, solver="cg"),
        "default": dict(dim=32, regularization=30.0, alpha=4.0, epochs=15, solver="cg"),
    },
    # EASE (#12): lambda chosen on validation splits carved from the training data of several
    # datasets (benchmarks/bench_quality.py, docs/quality.md); "seed" is Steck's ML-20M value.
    "ease": {
        "seed": dict(regularization=500.0),
        "default": dict(regularization=300.0),
    },
    "sgd-mf": {
        "seed": dict(dim=32, regularization=0.02, optimizer="sgd", learning_rate=0.005,
                     batch_size=1, epochs=20),
        "default": dict(dim=32, regularization=0.1, optimizer="adam", learning_rate=0.01,
                        batch_size=1024, epochs=20),
    },
    # bpr "seed" is Rendle's BPR (one uniform negative per positive); "default" (#12) samples 8
    # uniform negatives and regularizes 100x more: on validation splits of ML-100k and synthetic
    # data it was the only setting above most-popular (docs/quality.md).
    "bpr": {
        "seed": dict(dim=32, regularization=0.0001, negatives=1, learning_rate=0.01,
                     batch_size=1024, epochs=30),
        "default": dict(dim=32, regularization=0.01, negatives=8, sampling="uniform",
                        learning_rate=0.01, batch_size=1024, epochs=20),
    },
    # TFRS basic ranking: ids only, MLP 256-64-1 over [user, item], no biases; "default" is a
    # biased factorization machine over ids + side features + SVD++ implicit feedback, tuned on
    # a validation split carved from u1.base (benchmarks/bench_ranking.py, docs/ranking.md).
    "ranking": {
        "seed": dict(
            dim=32, head="mlp", hidden=[256, 64], features=False, history=False, biases=False,
            init_scale=0.05, optimizer="adagrad", learning_rate=0.1, batch_size=8192, epochs=3,
        ),
        "default": dict(
            dim=32, head="dot", features=True, history=True, l2=0.1, init_scale=0.01,
            optimizer="adam", learning_rate=0.003, batch_size=1024, epochs=25,
            autoencoder=500, autoencoder_l2=100.0, autoencoder_epochs=60, autoencoder_weight=0.6,
        ),
    },
    # TFRS multitask tutorial: dim 32, rating MLP 256-128-1, Adagrad 0.1, batch 8192, 3 epochs.
    "multitask": {
        "seed": dict(rating_weight=1.0, retrieval_weight=1.0),
        "default": dict(rating_weight=1.0, retrieval_weight=1.0),
    },
    # Sequential (#13): SASRec layout with the full-catalogue softmax (SASRec+), lr chosen on a
    # validation carved from the ML-1M training lines (docs/sequential.md); "gru" is the TFRS
    # sequential-retrieval query tower; "gsasrec" gSASRec's gBCE with 256 negatives, t = 0.75
    "sequential": {
        "default": {},
        "gru": dict(arch="gru", blocks=1),
        "gsasrec": dict(loss="gbce", negatives=256, gbce_t=0.75),
    },
}  # fmt: skip

# Two-stage: the two-tower preset of the same name shortlists 100 items; the ranker is the
# ranking model trained listwise, each positive against 10 negatives drawn from the user's own
# retrieval shortlist. The default ranker and ``blend`` were chosen on a validation split carved
# from the training part of the seeded 80/20 split (benchmarks/tune_two_stage.py,
# docs/ranking.md): ids and SVD++ history without side features, 3 epochs, blend 0.6.
PRESETS["two-stage"] = {
    "seed": dict(
        retrieval=PRESETS["two-tower"]["seed"], candidates=100, blend=0.5,
        ranker=dict(PRESETS["ranking"]["seed"], objective="listwise", negatives=10),
    ),
    "default": dict(
        retrieval=PRESETS["two-tower"]["default"], candidates=100, blend=0.6,
        ranker=dict(PRESETS["ranking"]["default"], objective="listwise", negatives=10, l2=0.0,
                    learning_rate=0.005, epochs=3, features=False, autoencoder=0),
    ),
}  # fmt: skip


def preset(model: str, name: str) -> dict:
    """Hyper-parameters of preset ``name`` for ``model``; a name ending in ``.toml`` is a preset
    file (see :func:`read_preset_file`)."""
    if str(name).endswith(".toml"):
        kind, params = read_preset_file(name)
        if kind is not None and kind != model:
            raise RecfunnelError(f"preset file {name} is for --model {kind}, not {model}")
        return params
    if model not in PRESETS:
        return {}
    try:
        return dict(PRESETS[model][name])
    except KeyError:
        raise RecfunnelError(
            f"unknown preset {name!r} for {model}; use one of {', '.join(PRESETS[model])}"
        ) from None


# --------------------------------------------------------------------------- preset files
def read_preset_file(path) -> tuple[str | None, dict]:
    """``(model, hyper-parameters)`` of a TOML preset file: top-level ``model = "NAME"``
    (optional) and the hyper-parameters as keys, nested configs as tables."""
    from pathlib import Path

    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise RecfunnelError("preset files need Python 3.11 or later (tomllib)") from None

    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecfunnelError(f"preset file {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RecfunnelError(f"cannot read preset file {path}: {exc}") from None
    kind = data.pop("model", None)
    data.pop("comment", None)
    return kind, data


def _toml_value(value) -> str:
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise RecfunnelError(f"cannot write {type(value).__name__} to a preset file")


def preset_toml(model: str, params: dict, comment: str = "") -> str:
    """A preset file's text: ``model``, then scalars, then one table per nested config."""
    lines = [f"# {line}" for line in comment.splitlines()]
    lines.append(f"model = {_toml_value(model)}")

    def emit(prefix: str, table: dict) -> None:
        nested = {k: v for k, v in table.items() if isinstance(v, dict)}
        for key, value in table.items():
            if value is not None and key not in nested:
                lines.append(f"{key} = {_toml_value(value)}")
        for key, value in nested.items():
            lines.append("")
            lines.append(f"[{prefix}{key}]")
            emit(f"{prefix}{key}.", value)

    emit("", params)
    return "\n".join(lines) + "\n"
