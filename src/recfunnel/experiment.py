"""Train -> evaluate -> save: what ``recfunnel train`` does, as a function."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from recfunnel import distributed
from recfunnel.data import sources
from recfunnel.data.dataset import Dataset
from recfunnel.data.interactions import Interactions
from recfunnel.data.sources import DataSpec
from recfunnel.data.splits import random_split
from recfunnel.errors import RecfunnelError
from recfunnel.metrics import choose_users, dot_scorer, evaluate_scores, rating_metrics
from recfunnel.models import Recommender, model_class
from recfunnel.models.base import FactorizedRecommender
from recfunnel.presets import preset
from recfunnel.progress import stage
from recfunnel.runs import Run


def build_model(kind: str, preset_name: str = "default", **overrides) -> Recommender:
    """A model from its registry name, a preset (``seed``, ``default`` or FILE.toml) and
    keyword overrides (``None`` = keep; a bare name sets every field of that name)."""
    cls = model_class(kind)
    return cls(preset(kind, preset_name), **overrides)


#: prefix of a two-stage model's top-K accuracy (its unseen shortlist ranked first)
UNSEEN_FIRST = "unseen_first_top_k/"


def evaluate(
    model: Recommender,
    train: Interactions,
    test: Interactions,
    *,
    eval_users: int | str | None = None,
    eval_seed: int = 0,
    **kwargs,
) -> dict:
    """Test metrics of a fitted model: retrieval metrics, plus rmse/mae for rating models.

    ``eval_users`` picks the users (see :func:`recfunnel.metrics.choose_users`: by default a
    seeded sample of 10,000 when there are more); ``metrics["evaluation"]`` records the choice.
    Other keywords (``memory``, ``progress``) go to :func:`~recfunnel.metrics.evaluate_scores`.
    """
    users, choice = choose_users(test, eval_users, seed=eval_seed)
    kwargs.setdefault("users", users)
    scorer = model.score
    if isinstance(model, FactorizedRecommender):
        scorer = dot_scorer(model.user_vectors, model.item_vectors())
    metrics = evaluate_scores(scorer, train, test, **kwargs)
    if model.predicts_ratings and test.ratings is not None:
        metrics.update(rating_metrics(model.predict(test.users, test.items), test.ratings))
    first_stage = getattr(model, "retrieval_", None)  # a two-stage model's retrieval alone
    if first_stage is not None:
        # A two-stage score ranks its unseen shortlist before every seen item, so its
        # "factorized" accuracy in effect excludes seen items and is not TFRS's FactorizedTopK
        # (all items, seen included): it gets its own name (#12); retrieval/factorized_top_k/*
        # below is the comparable figure.
        for key in [k for k in metrics if k.startswith("factorized_top_k/")]:
            metrics[key.replace("factorized_top_k/", UNSEEN_FIRST, 1)] = metrics.pop(key)
        for key, value in evaluate_scores(first_stage.score, train, test, **kwargs).items():
            metrics[f"retrieval/{key}"] = value
    metrics["evaluation"] = choice
    return metrics


def _carve(train_rows: Interactions, fraction: float, spec: DataSpec, ordered: bool):
    """(fit, validation): each user's last training item for a sequential model or the
    ``last`` split (the item before the test), else a seeded random ``fraction``."""
    if ordered or spec.split == "last":
        if sources.context(spec) is not None:
            raise RecfunnelError(
                "the SASRec protocol has its own validation users; drop validation_fraction",
                cli="the SASRec protocol has its own validation users; drop --validation-fraction",
            )
        from recfunnel.data.sequences import leave_last_out

        fit_rows, _, validation = leave_last_out(train_rows, validation=False)
        return fit_rows, validation
    return random_split(train_rows, fraction, seed=spec.seed + 1)


def train(
    spec: DataSpec,
    model: Recommender,
    *,
    validation_fraction: float = 0.0,
    progress: bool = False,
    eval_users: int | str | None = None,
    eval_memory: int | str | None = None,
) -> tuple[Run, Dataset, Interactions, Interactions]:
    """Load and split the data, fit ``model``, evaluate it on the test split.

    With ``validation_fraction`` > 0 a validation split is carved from the training data
    (seeded) and used for per-epoch metrics and early stopping; the test split is only used for
    the final metrics.
    """
    if spec.duplicates == "auto":  # the model says how repeated rows are merged
        spec = dataclasses.replace(spec, duplicates=model.default_duplicates())
    dropped: dict = {}  # test-file rows with ids unseen in training
    stage("reading the data")  # what a heartbeat line says while nothing else prints
    dataset = sources.load_dataset(spec)
    stage("splitting the data")
    train_rows, test_rows = sources.split(dataset, spec, report=dropped)
    ordered = hasattr(model, "extend")  # a sequential model continues users' sequences
    fit_rows, validation = train_rows, None
    if validation_fraction > 0:
        stage("carving the validation split")
        fit_rows, validation = _carve(train_rows, validation_fraction, spec, ordered)
    stage(
        f"setting up {getattr(model, 'kind', 'the model')}"
    )  # a pass's own lines take over once training runs
    started = time.perf_counter()
    extra = {"dataset": dataset} if model.needs_dataset else {}
    context = sources.context(spec)  # the SASRec protocol's query items (not trained on)
    if context is not None and ordered:
        extra["context"] = context
    elif context is not None:  # a model of sets: the query items join its training rows
        fit_rows = fit_rows.concat(context)
    model.fit(fit_rows, validation=validation, progress=progress and distributed.rank() == 0,
              **extra)  # fmt: skip
    fit_seconds = time.perf_counter() - started
    if distributed.rank() != 0:  # rank 0 evaluates and saves; the others only train
        return None, dataset, fit_rows, test_rows
    seen_rows = fit_rows
    if ordered:  # the context, then the validation items, precede each user's test item
        for rows in (context, validation):
            if rows is not None and len(rows):
                if rows is validation:
                    model.extend(rows)
                seen_rows = seen_rows.concat(rows)
    stage("evaluating")
    started = time.perf_counter()
    metrics = evaluate(model, seen_rows, test_rows, eval_users=eval_users, eval_seed=spec.seed,
                       memory=eval_memory, progress=progress)  # fmt: skip
    evaluation = metrics.pop("evaluation")
    metrics["eval_seconds"] = time.perf_counter() - started
    metrics["fit_seconds"] = fit_seconds
    metrics["config"] = model.get_params()
    resolved = getattr(model, "fit_config_", None)
    if resolved is not None and resolved != model.config:  # e.g. two-tower softmax="auto"
        metrics["resolved_config"] = resolved.to_dict()
    metrics.update({f"test_{key}": value for key, value in dropped.items()})
    log = getattr(model, "training_log_", None)
    if log is not None:
        metrics["training_log"] = (
            {stage: part.epochs for stage, part in log.items()}
            if isinstance(log, dict)
            else log.epochs
        )
    popularity = np.bincount(fit_rows.items, minlength=len(dataset.items)).astype(np.float32)
    run = Run(
        model,
        dataset.users,
        dataset.items,
        item_titles=dataset.item_titles,
        config={
            "data": spec.to_dict(),
            "validation_fraction": validation_fraction,
            "evaluation": evaluation,
        },  # fmt: skip
        metrics=metrics,
        popularity=popularity,
    )
    return run, dataset, fit_rows, test_rows
