"""Named configs per model: presets are config instances (:mod:`recfunnel.config`).

* ``seed`` reproduces the TFRS MovieLens tutorials exactly (two-tower: dimension 32, Keras'
  U(-0.05, 0.05) initialisation, Adagrad (lr 0.1, accumulators from 0.1), batch 8192, 3 epochs,
  in-batch softmax with sum reduction), or a peer library's settings (wals: implicit's ALS).
* ``default`` is tuned for quality on a validation split carved from the training data of the
  seeded random 80/20 MovieLens 100k split (``benchmarks/tune_*.py``; the test set is never
  looked at). See docs/benchmarks.md, docs/mf.md and docs/ranking.md for how each was chosen.

``--preset FILE.toml`` (or ``.json``) reads a config written by :func:`config_toml` — every saved
run stores one (``config.toml``), so any run can be re-trained exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

from recfunnel.config import (
    BlendConfig,
    BPRConfig,
    Config,
    EASEConfig,
    LargeCatalogueConfig,
    MostPopularConfig,
    MultitaskConfig,
    RankingConfig,
    RP3betaConfig,
    SequentialConfig,
    SGDMFConfig,
    TrainerConfig,
    TwoStageConfig,
    TwoTowerConfig,
    WALSConfig,
)
from recfunnel.errors import RecfunnelError

_TFRS_TRAINER = TrainerConfig(optimizer="adagrad", learning_rate=0.1, batch_size=8192, epochs=3)

_TWO_TOWER_SEED = TwoTowerConfig(
    dim=32, softmax="in-batch", reduction="sum", init="uniform", init_scale=0.05,
    trainer=_TFRS_TRAINER,
)  # fmt: skip
# softmax "auto": the full softmax where it is cheap, else mixed negatives with sparse updates,
# sized for 20M rows on 2 cores (benchmarks/bench_scale.py, docs/scale.md). The full-softmax
# settings: the history tower with an item bias and user L2 (benchmarks/tune_two_tower.py, ML-100k,
# within its 5 s fit budget), then the step (Adam 0.04 falling linearly to 0, weight decay 1e-4)
# chosen on the validation splits of four datasets (#12, benchmarks/validation_curves.py,
# docs/quality.md). The large settings keep the constant step they were sized with.
_TWO_TOWER_DEFAULT = TwoTowerConfig(
    dim=32, softmax="auto", reduction="mean", pool_seen_items=True, item_bias=True, user_l2=0.01,
    init="normal", init_scale=0.01,
    large=LargeCatalogueConfig(softmax="mixed", negatives=256, sampler="uniform",
                               logq_correction=True, sparse_updates=True, batch_size=1024,
                               max_examples=8_000_000, user_l2=0.1, item_l2=0.1,
                               history_sample=32, learning_rate=0.02, weight_decay=0.0,
                               lr_schedule="constant"),
    trainer=TrainerConfig(optimizer="adam", learning_rate=0.04, weight_decay=1e-4,
                          lr_schedule="linear", batch_size=4096, epochs=5),
)  # fmt: skip

# TFRS basic ranking: ids only, MLP 256-64-1 over [user, item], no biases; "default" is a
# biased factorization machine over ids + side features + SVD++ implicit feedback, tuned on
# a validation split carved from u1.base (benchmarks/bench_ranking.py, docs/ranking.md).
_RANKING_SEED = RankingConfig(
    dim=32, head="mlp", hidden=(256, 64), features=False, pool_seen_items=False, biases=False,
    init_scale=0.05, trainer=_TFRS_TRAINER,
)  # fmt: skip
_RANKING_DEFAULT = RankingConfig(
    dim=32, head="dot", features=True, pool_seen_items=True, l2=0.1, init_scale=0.01,
    autoencoder=500, autoencoder_l2=100.0, autoencoder_epochs=60, autoencoder_weight=0.6,
    trainer=TrainerConfig(optimizer="adam", learning_rate=0.003, batch_size=1024, epochs=25),
)  # fmt: skip

PRESETS: dict[str, dict[str, Config]] = {
    "two-tower": {"seed": _TWO_TOWER_SEED, "default": _TWO_TOWER_DEFAULT},
    "most-popular": {"seed": MostPopularConfig(), "default": MostPopularConfig()},
    # Matrix factorization (#3). wals "seed" is implicit's ALS at the benchmark's settings;
    # "default" is chosen by benchmarks/tune_mf.py on a validation split (see docs/mf.md).
    "wals": {
        "seed": WALSConfig(dim=32, regularization=0.01, alpha=1.0, solver="cg"),
        "default": WALSConfig(dim=32, regularization=30.0, alpha=4.0, solver="cg"),
    },
    # EASE (#12): lambda and the order-aware Gram's window chosen on validation splits carved
    # from the training data of several datasets (benchmarks/derive_defaults.py,
    # docs/quality.md; the window applies where rows have timestamps); "seed" is Steck's
    # ML-20M value, plain Gram.
    "ease": {
        "seed": EASEConfig(regularization=500.0),
        "default": EASEConfig(regularization=300.0, window=50.0, floor=0.3),
    },
    # RP3beta (#12): alpha and beta chosen on validation splits of several datasets
    # (benchmarks/derive_defaults.py, docs/quality.md); "seed" is the plain random walk P^3.
    "rp3beta": {
        "seed": RP3betaConfig(alpha=1.0, beta=0.0),
        "default": RP3betaConfig(alpha=0.8, beta=0.5),
    },
    "sgd-mf": {
        "seed": SGDMFConfig(dim=32, regularization=0.02, trainer=TrainerConfig(
            optimizer="sgd", learning_rate=0.005, batch_size=1, epochs=20, device="cpu")),
        "default": SGDMFConfig(dim=32, regularization=0.1, trainer=TrainerConfig(
            optimizer="adam", learning_rate=0.01, batch_size=1024, epochs=20, device="cpu")),
    },
    # bpr "seed" is Rendle's BPR (one uniform negative per positive); "default" (#12) samples 8
    # uniform negatives, regularizes 100x more, and steps from 0.02 down to 0 linearly: on the
    # validation splits of ML-100k, ML-1M users, and two synthetic sets it is above most-popular
    # on all four (docs/quality.md).
    "bpr": {
        "seed": BPRConfig(dim=32, regularization=0.0001, negatives=1, trainer=TrainerConfig(
            optimizer="adam", learning_rate=0.01, batch_size=1024, epochs=30, device="cpu")),
        "default": BPRConfig(dim=32, regularization=0.01, negatives=8, sampling="uniform",
                             trainer=TrainerConfig(optimizer="adam", learning_rate=0.02,
                                                   lr_schedule="linear", batch_size=1024,
                                                   epochs=20, device="cpu")),
    },
    "ranking": {"seed": _RANKING_SEED, "default": _RANKING_DEFAULT},
    # TFRS multitask tutorial: dim 32, rating MLP 256-128-1, Adagrad 0.1, batch 8192, 3 epochs.
    "multitask": {"seed": MultitaskConfig(), "default": MultitaskConfig()},
    # Two-stage: the two-tower preset of the same name shortlists 100 items; the ranker is the
    # ranking model trained listwise, each positive against 10 negatives drawn from the user's
    # own retrieval shortlist. The default ranker and ``blend`` were chosen on a validation
    # split carved from the training part of the seeded 80/20 split
    # (benchmarks/tune_two_stage.py, docs/ranking.md): ids and SVD++ history without side
    # features, 3 epochs, blend 0.6.
    "two-stage": {
        "seed": TwoStageConfig(
            retrieval=_TWO_TOWER_SEED, candidates=100, blend=0.5,
            ranker=_RANKING_SEED.override(objective="listwise", negatives=10),
        ),
        "default": TwoStageConfig(
            retrieval=_TWO_TOWER_DEFAULT, candidates=100, blend=0.6,
            ranker=_RANKING_DEFAULT.override(
                objective="listwise", negatives=10, l2=0.0, learning_rate=0.005, epochs=3,
                features=False, autoencoder=0,
            ),
        ),
    },
    # SASRec's layout at the defaults of docs/sequential.md (the model's own defaults)
    # "gru" is the TFRS sequential-retrieval query tower; "gsasrec" gSASRec's gBCE with 256
    # negatives per sequence and t = 0.75
    "sequential": {
        "seed": SequentialConfig(),
        "default": SequentialConfig(),
        "gru": SequentialConfig(arch="gru", blocks=1),
        "gsasrec": SequentialConfig(loss="gbce", negatives=256, gbce_t=0.75),
    },
    # --model auto's ensemble; trained directly it needs its members (see models/blend.py)
    "blend": {"seed": BlendConfig(), "default": BlendConfig()},
}  # fmt: skip


def preset(model: str, name: str = "default") -> Config:
    """The config of preset ``name`` (``seed``, ``default`` or a TOML/JSON file) for ``model``."""
    from recfunnel.models import model_class

    model_class(model)  # an unknown model is named first
    if name.endswith((".toml", ".json")) or "/" in name or Path(name).is_dir():
        path = Path(name)
        if path.is_dir():  # a saved run folder: its config.json
            path = path / "config.json"
        return read_config(path, model)
    try:
        return PRESETS[model][name]
    except KeyError:
        choices = ", ".join(PRESETS.get(model, {"default": None}))
        raise RecfunnelError(
            f"unknown preset {name!r} for {model}; use one of {choices}, or FILE.toml"
        ) from None


def read_config(path: Path, model: str) -> Config:
    """A model's config from a TOML or JSON file: a table of options, or a saved run's config
    file (``model = "..."`` and its options under ``[params]``)."""
    from recfunnel.models import model_class

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecfunnelError(
            f"preset file {path} does not exist; give a .toml or .json file"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecfunnelError(f"cannot read preset file {path}: {exc}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RecfunnelError(
            f"preset file {path} is not valid {path.suffix[1:].upper()}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise RecfunnelError(f"preset file {path} must hold a table of options")
    saved = data.get("model")
    if saved is not None and saved != model:
        raise RecfunnelError(
            f"preset file {path} configures --model {saved}, not {model}; pass --model {saved}"
        )
    if "params" in data:  # a saved run's or `tune`'s config: every option, read as written
        return model_class(model).config_class.from_dict(data["params"])
    # a hand-written table of options (beside model = "..." and a comment): the model's default
    # preset with these options set as `--set` sets them (Config.override: a partial [trainer]
    # table keeps the model's other trainer settings)
    data = {k: v for k, v in data.items() if k not in ("model", "comment")}
    default = PRESETS.get(model, {}).get("default") or model_class(model).config_class()
    return default.override(**data)


def config_toml(config: Config, *, model: str | None = None, comment: str = "") -> str:
    """``config`` as TOML text (read back by :func:`read_config`), after ``comment`` lines."""
    lines: list[str] = [f"# {line}" for line in comment.splitlines()]
    if model is not None:
        lines.append(f"model = {_toml_value(model)}")
        lines.append("")
    _write_table(lines, config.to_dict(), "params" if model is not None else "")
    return "\n".join(lines).strip() + "\n"


def _write_table(lines: list[str], table: dict, name: str) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
    tables = {k: v for k, v in table.items() if isinstance(v, dict)}
    if name and (scalars or not tables):
        lines.append(f"[{name}]")
    for key, value in scalars.items():
        if value is None:
            lines.append(f"# {key} = none (the default)")
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    if scalars or name:
        lines.append("")
    for key, value in tables.items():
        _write_table(lines, value, f"{name}.{key}" if name else key)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):  # an inline table (a blend's members); none values left out
        pairs = [f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in value.items()
                 if v is not None]  # fmt: skip
        return "{" + ", ".join(pairs) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")
