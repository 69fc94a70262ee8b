"""Hyper-parameter search (``recfunnel tune``) and automatic model choice (``--model auto``).

Both look only at a validation split carved from the training data (seeded, as ``train
--validation-fraction`` carves it: random rows, or each user's last rows for a temporal split);
the test rows are never seen.

* :func:`tune`: an Optuna study (TPE sampler, median pruning on the per-epoch validation metric)
  over the model's ``search_space`` (declared on each model class), stored in ``OUT/study.db``
  (SQLite), so running the same command again resumes it. The first trial is the preset itself,
  so tuning never reports worse than the defaults on validation. Writes ``OUT/best.toml`` (a
  preset file: ``recfunnel train --preset OUT/best.toml`` trains it), ``OUT/trials.csv`` and,
  with matplotlib installed, ``OUT/history.png``.
* :func:`auto`: a portfolio (most popular, RP3beta and EASE where ``items x items`` fits, WALS,
  BPR, two-tower, the sequential model where the rows have timestamps) tuned within one
  wall-time budget, ranked by the validation metric, with a weighted blend of the best few
  (weights fitted on validation); the winner is refitted on all the training data; returns the
  leaderboard.

**The budget is a limit, not a hint.** Every fit inside runs under
:func:`recfunnel.training.deadline`: a trial stops at an epoch boundary rather than start an
epoch that would end past its candidate's share (Optuna then starts no new trial). Before a
candidate is tuned its single fit is estimated (:func:`estimate_fit_seconds`: a short probe
fit, or a flop count for the closed forms); a candidate whose one fit needs more than what is
left, or more than three shares (:data:`BORROW`), is skipped. The time the final refit needs
(the leading models' fits on ~10% more rows) is held back from the search, the blend takes only
members whose refits fit in what is left, and the refit itself runs under the same deadline.

Optuna is an optional dependency (``pip install 'recfunnel[tune]'``).
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recfunnel.config import Config
from recfunnel.data.interactions import Interactions
from recfunnel.data.splits import random_split, temporal_split
from recfunnel.errors import RecfunnelError, TrainingError
from recfunnel.metrics import evaluate_scores
from recfunnel.models import Recommender, model_class
from recfunnel.presets import config_toml, preset
from recfunnel.training import deadline, epoch_hook, time_left

RANKING_METRICS = ("recall", "precision", "ndcg", "map", "hit_rate")
#: the portfolio of ``--model auto`` in the order it is tried (cheap first) and each member's
#: share of the search budget
PORTFOLIO = {
    "most-popular": 0.0, "rp3beta": 0.05, "ease": 0.2, "wals": 0.25, "two-tower": 0.2,
    "bpr": 0.15, "sequential": 0.1,
}  # fmt: skip
#: a candidate whose one fit needs more than its share may take up to this many shares
BORROW = 3.0
#: the refit reads ~10% more rows than the search's fits, and a busy machine varies
REFIT_MARGIN = 1.2


# --------------------------------------------------------------------------- input checks
def parse_budget(text) -> float:
    """Seconds from ``600``, ``600s``, ``10m``, ``1.5h`` (a bare number is seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([smh]?)\s*", str(text))
    seconds = None
    if match:
        seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if seconds is None or not seconds > 0:
        raise RecfunnelError(
            f"--budget must be a positive duration like 600, 10m or 1h, not {text!r}"
        )
    return seconds


@dataclass(frozen=True)
class Metric:
    """A validation metric: ``ndcg@10``, ``recall@20``, ``mrr``, ... or ``rmse`` (minimised)."""

    name: str
    k: int | None

    @classmethod
    def parse(cls, text: str) -> Metric:
        text = str(text).strip().lower()
        if text in ("mrr", "rmse"):
            return cls(text, None)
        name, _, k = text.partition("@")
        if name in RANKING_METRICS and k.isdigit() and int(k) >= 1:
            return cls(name, int(k))
        raise RecfunnelError(
            f"unknown --metric {text!r}; use NAME@K with NAME one of "
            f"{', '.join(RANKING_METRICS)} (e.g. ndcg@10), mrr or rmse"
        )

    @property
    def key(self) -> str:
        return self.name if self.k is None else f"{self.name}@{self.k}"

    @property
    def minimize(self) -> bool:
        return self.name == "rmse"

    def epoch_key(self) -> str:
        """The key of this metric in a trainer epoch record (models validate at k = 10)."""
        return "validation_rmse" if self.name == "rmse" else self.key

    def evaluate(self, model: Recommender, fit: Interactions, validation: Interactions) -> float:
        if self.name == "rmse":
            if not model.predicts_ratings or validation.ratings is None:
                raise RecfunnelError("--metric rmse needs a rating model and ratings")
            error = model.predict(validation.users, validation.items) - validation.ratings
            return float(np.sqrt(np.mean(np.square(error))))
        k = min(self.k or 10, fit.num_items)
        metrics = evaluate_scores(model.score, fit, validation, factorized_ks=(), ranking_ks=(k,))
        return float(metrics[self.key if self.k is None else f"{self.name}@{k}"])


def carve_validation(
    train: Interactions, fraction: float = 0.1, *, seed: int = 42, temporal: bool = False
) -> tuple[Interactions, Interactions]:
    """(fit, validation) from the training rows: each user's last row when ``temporal``, else a
    seeded random ``fraction`` (seed + 1, as ``train --validation-fraction`` carves it)."""
    if not 0.0 < fraction < 1.0:
        raise RecfunnelError(f"--validation-fraction must lie in (0, 1), not {fraction}")
    if temporal and train.timestamps is not None:
        return temporal_split(train, 1)
    return random_split(train, fraction, seed=seed + 1)


def _optuna():
    try:
        import optuna
    except ImportError:
        raise RecfunnelError(
            "tuning needs Optuna; pip install 'recfunnel[tune]' (optuna>=3)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# ----------------------------------------------------------------------------------- tune
@dataclass
class TuneResult:
    """The outcome of :func:`tune`: best hyper-parameters and validation value, all trials."""

    kind: str
    metric: str
    best_params: dict
    best_value: float
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    #: the best trial's fitted model when that trial ran in this call (not saved)
    best_model: Recommender | None = field(default=None, repr=False)


def _search_space(kind: str) -> dict:
    cls = model_class(kind)
    space = dict(getattr(cls, "search_space", {}) or {})
    return space


def _fit(model: Recommender, fit: Interactions, validation, dataset, progress=False):
    extra = {"dataset": dataset} if model.needs_dataset else {}
    return model.fit(fit, validation=validation, progress=progress, **extra)


def _build(kind: str, params: Config | dict) -> Recommender:
    return model_class(kind)(params)


def apply_fixed(config: Config, fixed: dict | None) -> Config:
    """``config`` with the ``fixed`` options set: text values (``--set``) are parsed by each
    field's type, others set as they are; an option the config lacks is refused (one line)."""
    text = {k: v for k, v in (fixed or {}).items() if isinstance(v, str)}
    values = {k: v for k, v in (fixed or {}).items() if not isinstance(v, str)}
    return config.with_strings(text).override(**values)


def _is_fixed(name: str, config: Config, fixed: dict | None) -> bool:
    """Whether searched option ``name`` is one the caller fixed (by the same or a bare name)."""
    paths = {path for path, _ in config.targets(name)}
    return any(paths & {path for path, _ in config.targets(f)} for f in fixed or {})


def tune(
    kind: str,
    fit: Interactions,
    validation: Interactions,
    *,
    out: Path | None = None,
    budget: float | None = None,
    trials: int | None = None,
    metric: str = "ndcg@10",
    base: dict | None = None,
    fixed: dict | None = None,
    seed: int = 0,
    dataset=None,
    study_name: str | None = None,
    log=None,
) -> TuneResult:
    """Search ``kind``'s hyper-parameters on ``validation`` (see the module docstring).

    Args:
        fit, validation: the training rows and the validation split carved from them.
        out: folder for ``study.db``, ``trials.csv``, ``best.toml``, ``history.png``; ``None``
            keeps the study in memory and writes nothing.
        budget: wall-time seconds for new trials; ``trials``: total trials in the study (a
            resumed study counts its earlier ones). At least one of them.
        metric: validation metric (:class:`Metric`).
        base: the config the trials start from (default: the ``default`` preset).
        fixed: options that are not searched (e.g. ``device``), set over ``base`` (text is
            parsed by the field's type, as ``--set`` does).
        log: callable taking one line of progress, or ``None``.
    """
    optuna = _optuna()
    if budget is None and trials is None:
        raise RecfunnelError("give --budget (e.g. 10m) or --trials N")
    if trials is not None and trials < 1:
        raise RecfunnelError(f"--trials must be at least 1, not {trials}")
    target = Metric.parse(metric)
    space = _search_space(kind)
    config_class = model_class(kind).config_class
    base = config_class.create(preset(kind, "default") if base is None else base)
    base = apply_fixed(base, fixed)
    space = {name: spec for name, spec in space.items() if not _is_fixed(name, base, fixed)}
    started = time.perf_counter()

    storage = None
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{(out / 'study.db').resolve()}"
    study = optuna.create_study(
        study_name=study_name or f"recfunnel-{kind}",
        storage=storage,
        load_if_exists=True,
        direction="minimize" if target.minimize else "maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1),
    )
    done = [t for t in study.trials if t.state.is_finished()]
    if not done and space:  # the preset itself first: tuning never reports worse on validation
        first = {name: _value(base, name) for name in space}
        study.enqueue_trial({n: v for n, v in first.items() if space[n].contains(v)})

    keep = {"value": None, "number": None, "model": None}
    # the least a new trial takes: its first epoch (validation included) or its one-shot fit
    shortest = {"seconds": 0.0}

    def objective(trial) -> float:
        config = base.override(**{name: spec.suggest(trial, name) for name, spec in space.items()})
        params = config.to_dict()
        model = _build(kind, config)
        epoch_key = target.epoch_key()

        def report(record: dict) -> None:
            value = record.get(epoch_key)
            if value is None or not math.isfinite(value):
                return
            trial.report(float(value), record["epoch"] - 1)
            if trial.should_prune():
                raise optuna.TrialPruned()

        t0 = time.perf_counter()
        with epoch_hook(report):
            _fit(model, fit, validation, dataset)
        value = target.evaluate(model, fit, validation)
        seconds = time.perf_counter() - t0
        epochs = getattr(getattr(model, "training_log_", None), "epochs", None) or []
        first = epochs[0].get("seconds", seconds) if epochs else seconds
        shortest["seconds"] = max(shortest["seconds"], min(seconds, 1.5 * first))
        log_ = getattr(model, "training_log_", None)
        if getattr(log_, "out_of_time", False) and config.targets("trainer.epochs"):
            # stopped by the deadline: the config that reproduces this trial trains its epochs
            params = config.override(**{"trainer.epochs": len(epochs)}).to_dict()
            trial.set_user_attr("out_of_time", True)
        trial.set_user_attr("fit_seconds", seconds)
        trial.set_user_attr("params", params)
        if keep["value"] is None or (value < keep["value"] if target.minimize
                                     else value > keep["value"]):  # fmt: skip
            keep.update(value=value, number=trial.number, model=model)
        if log is not None:
            chosen = {name: _value(config, name) for name in space}
            log(f"trial {trial.number}: {target.key} {value:.4f} {_short(chosen, space)}")
        return value

    remaining = None if trials is None else max(0, trials - len(done))
    ends = None if budget is None else started + budget

    def stop_in_time(study, trial) -> None:
        """No new trial when what is left cannot hold the shortest trial seen."""
        left = time_left()
        if left is not None and left < shortest["seconds"]:
            study.stop()

    if remaining != 0:
        with deadline(ends):
            left = time_left()
            study.optimize(
                objective,
                n_trials=remaining if remaining is not None else (1 if not space else None),
                timeout=None if left is None else max(left, 0.0),
                catch=(TrainingError,),
                callbacks=[stop_in_time],
                gc_after_trial=True,
            )
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        raise RecfunnelError(
            f"no {kind} trial finished within the budget; give a larger --budget or --trials"
        )
    best = study.best_trial
    best_params = config_class.from_dict(best.user_attrs.get("params") or base.to_dict())
    best_params = best_params.to_dict()  # a study saved by an older version reads as well
    result = TuneResult(
        kind=kind,
        metric=target.key,
        best_params=best_params,
        best_value=float(best.value),
        trials=_trial_rows(study, optuna),
        seconds=time.perf_counter() - started,
        best_model=keep["model"] if keep["number"] == best.number else None,
    )
    if out is not None:
        _write_outputs(out, result, study)
    return result


def _value(config: Config, name: str):
    """The value of option ``name`` (dotted or bare: the first field it sets) in ``config``."""
    targets = config.targets(name)
    if not targets:
        return None
    value = config
    for part in targets[0][0].split("."):
        value = getattr(value, part)
    return value


def _short(params: dict, space: dict) -> str:
    shown = []
    for name in space:
        value = params.get(name)
        shown.append(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join(shown)


def _trial_rows(study, optuna) -> list[dict]:
    rows = []
    for t in study.trials:
        rows.append({
            "number": t.number,
            "state": t.state.name.lower(),
            "value": t.value if t.value is not None else "",
            "seconds": round(t.duration.total_seconds(), 3) if t.duration else "",
            "epochs_reported": len(t.intermediate_values),
            **{f"param:{k}": v for k, v in t.params.items()},
        })  # fmt: skip
    return rows


def _write_atomic(path: Path, text: str | bytes) -> None:
    from recfunnel.artifacts import atomic_file

    with atomic_file(path, "wb") as fh:
        fh.write(text.encode("utf-8") if isinstance(text, str) else text)


def _write_outputs(out: Path, result: TuneResult, study) -> None:
    comment = (
        f"recfunnel tune --model {result.kind}: best of {len(result.trials)} trials, "
        f"validation {result.metric} = {result.best_value:.4f}\n"
        f"train it: recfunnel train --model {result.kind} --preset {out / 'best.toml'}"
    )
    config = model_class(result.kind).config_class.from_dict(result.best_params)
    _write_atomic(out / "best.toml", config_toml(config, model=result.kind, comment=comment))
    columns: list[str] = []
    for row in result.trials:
        columns += [c for c in row if c not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="")
    writer.writeheader()
    writer.writerows(result.trials)
    _write_atomic(out / "trials.csv", buffer.getvalue())
    note = plot_history(result.trials, out / "history.png", result.metric)
    if note:
        _write_atomic(out / "history.txt", note + "\n")


def plot_history(trials: list[dict], path: Path, metric: str) -> str | None:
    """Optimisation history (each trial's value and the best so far) as a PNG; returns a note
    instead when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "history.png skipped: matplotlib is not installed (pip install 'recfunnel[plot]')"
    done = [t for t in trials if t["state"] == "complete"]
    xs = [t["number"] for t in done]
    ys = [float(t["value"]) for t in done]
    better = min if metric == "rmse" else max
    best, running = [], None
    for y in ys:
        running = y if running is None else better(running, y)
        best.append(running)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.scatter(xs, ys, s=14, label="trial")
    ax.step(xs, best, where="post", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    _write_atomic(path, buffer.getvalue())
    return None


# ----------------------------------------------------------------------------------- auto
def portfolio(num_items: int, candidates=None, *, ordered: bool = True) -> list[str]:
    """The models ``--model auto`` tries: the item-item closed forms (EASE, RP3beta) only where
    ``items x items`` fits in memory, the sequential model only where the rows are ``ordered``
    (they have timestamps)."""
    from recfunnel.models.ease import ease_fits

    names = list(candidates or PORTFOLIO)
    return [
        name for name in names
        if (name not in ("ease", "rp3beta") or ease_fits(num_items))
        and (name != "sequential" or ordered or candidates)
    ]  # fmt: skip


# ------------------------------------------------------------------------- fit estimates
_FLOPS: dict[str, float] = {}


def _flops_per_second() -> float:
    """Dense float32 matrix-product speed of this process (measured once, a few ms)."""
    if "rate" not in _FLOPS:
        import torch

        a = torch.randn(512, 512)
        best = math.inf
        for _ in range(4):  # the best of four: the first warms up, a busy machine is noisy
            t0 = time.perf_counter()
            a @ a
            best = min(best, time.perf_counter() - t0)
        _FLOPS["rate"] = 2 * 512**3 / max(best, 1e-6)
    return _FLOPS["rate"]


def estimate_fit_seconds(
    kind: str, config: Config, fit: Interactions, validation: Interactions | None = None,
    target: Metric | None = None, dataset=None,
) -> float:  # fmt: skip
    """About how long one fit of ``config`` on ``fit`` (validated each epoch) takes, in seconds.

    * EASE / RP3beta: a flop count (the Gram matrix's sparse product, and for EASE a Cholesky
      inverse: ~``N^3`` flops, which run at about half the speed of a matrix product, so
      ``2.2 N^3``) over this process's measured matrix-product speed.
    * Models trained in epochs: a probe. Two short fits (``max_examples`` = 128 rows, then 3%
      of an epoch's rows or 384) give the per-row cost and the fixed cost; one validation pass
      is timed; the estimate is ``fixed + epochs x (rows x per-row + validation)``. A
      closed-form model in iterations (WALS) is probed with one full iteration.
    * Anything else (most popular): 0.
    """
    if kind in ("ease", "rp3beta"):
        counts = np.bincount(fit.users, minlength=fit.num_users).astype(np.float64)
        gram = float(np.sum(counts**2)) * 10e-9  # scipy's sparse product, ~10 ns a pair
        n = float(fit.num_items)
        dense = (2.2 * n**3 if kind == "ease" else 0.05 * n**3) / _flops_per_second()
        window = getattr(config, "window", None)
        if window is not None and fit.timestamps is not None:  # the order-aware Gram's pairs
            gram += len(fit) * min(3.0 * window, counts.max()) * 2 * 20e-9
        return gram + dense + 4e-9 * n * n
    trainer = getattr(config, "trainer", None)
    if trainer is None:
        return 0.0
    target = target or Metric.parse("ndcg@10")
    epochs = trainer.epochs
    if not config.targets("trainer.max_examples") or not trainer.applies("max_examples"):
        t0 = time.perf_counter()
        probe = _fit(_build(kind, config.override(**{"trainer.epochs": 1})), fit, None, dataset)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        if validation is not None:
            target.evaluate(probe, fit, validation)
        check = time.perf_counter() - t0
        return first + (epochs - 1) * first + epochs * check
    timings = []
    rows = None
    for share in (0.0, 0.03):  # 128 rows (and an epoch's size), then 3% of an epoch
        examples = max(128, int(share * (rows or 0)))
        if rows is not None and (examples >= rows or examples <= timings[0][0]):
            examples = min(rows, 3 * timings[0][0])
        one = config.override(**{"trainer.epochs": 1, "trainer.max_examples": examples})
        t0 = time.perf_counter()
        probe = _fit(_build(kind, one), fit, None, dataset)
        timings.append((examples, time.perf_counter() - t0))
        record = (getattr(getattr(probe, "training_log_", None), "epochs", None) or [{}])[0]
        rows = record.get("epoch_rows", rows or len(fit))
        if examples >= rows:
            break
    t0 = time.perf_counter()
    if validation is not None:
        target.evaluate(probe, fit, validation)
    check = time.perf_counter() - t0
    if len(timings) == 1:  # the probe was a whole epoch
        return timings[0][1] + (epochs - 1) * timings[0][1] * 0.9 + epochs * check
    (m1, t1), (m2, t2) = timings
    per_row = max((t2 - t1) / max(m2 - m1, 1), 0.3 * t2 / m2)
    fixed = max(t1 - per_row * m1, 0.0)
    return fixed + epochs * (per_row * rows + check)


# ----------------------------------------------------------------------------------- auto
def auto(
    fit: Interactions,
    validation: Interactions,
    *,
    budget: float,
    metric: str = "ndcg@10",
    out: Path | None = None,
    seed: int = 0,
    fixed: dict | None = None,
    candidates=None,
    dataset=None,
    blend: bool = True,
    log=None,
    started: float | None = None,
) -> tuple[str, dict, list[dict]]:
    """Tune each portfolio model within its share of ``budget`` seconds; returns the winner's
    kind and hyper-parameters and the leaderboard (best first). The caller refits the winner on
    all the training data under ``training.deadline(started + budget)``: the search leaves
    the time that refit is expected to need (see the module docstring).

    ``started``: the ``time.perf_counter()`` time the budget counts from (default: now; the
    CLI passes the time it started, so reading the data counts too).
    """
    started = time.perf_counter() if started is None else started
    ends = started + budget
    target = Metric.parse(metric)
    names = portfolio(fit.num_items, candidates, ordered=fit.timestamps is not None)
    check_fixed(fixed, names)
    fitted: dict[str, Recommender | None] = {}
    shares = {name: PORTFOLIO.get(name, 0.2) for name in names}
    board = []

    def say(line: str) -> None:
        if log is not None:
            log(f"[{time.perf_counter() - started:5.0f} s] {line}")

    for position, name in enumerate(names):
        model_fixed = {k: v for k, v in (fixed or {}).items() if _accepts(name, k)}
        reserve = refit_reserve(board)
        available = ends - time.perf_counter() - reserve
        if available <= 0 and name != "most-popular":
            note = "skipped: no time left in the budget"
            say(f"auto: {name} {note}")
            board.append({"model": name, "value": None, "trials": 0, "note": note})
            continue
        config = apply_fixed(model_class(name).config_class.create(preset(name, "default")),
                             model_fixed)  # fmt: skip
        try:
            with deadline(ends - reserve):
                estimate = estimate_fit_seconds(name, config, fit, validation, target, dataset)
        except RecfunnelError as exc:
            board.append({"model": name, "value": None, "trials": 0, "note": str(exc)})
            continue
        available = ends - time.perf_counter() - reserve
        left_share = sum(shares[n] for n in names[position:]) or 1.0
        share = available * shares[name] / left_share
        if estimate > min(available, BORROW * share if name != "most-popular" else available):
            note = (f"skipped: one fit takes about {estimate:.0f} s; its share is "
                    f"{share:.0f} s, {max(available, 0):.0f} s of the budget left")  # fmt: skip
            say(f"auto: {name} {note}")
            board.append({"model": name, "value": None, "trials": 0, "note": note,
                          "estimate_s": round(estimate, 1)})  # fmt: skip
            continue
        seconds = min(available, max(1.2 * estimate, share))
        searched = bool(model_class(name).search_space)
        say(f"auto: {name} ({f'{seconds:.0f} s' if searched else 'one fit'}, one fit ~"
            f"{estimate:.1f} s, {reserve:.0f} s kept for the refit)")  # fmt: skip
        try:
            with deadline(ends - reserve):
                result = tune(
                    name, fit, validation, out=out, budget=seconds if searched else None,
                    trials=None if searched else 1, metric=target.key, seed=seed,
                    fixed=model_fixed, dataset=dataset, study_name=f"auto-{name}", log=log,
                )  # fmt: skip
        except RecfunnelError as exc:
            board.append({"model": name, "value": None, "trials": 0, "note": str(exc)})
            continue
        complete = [t for t in result.trials if t["state"] == "complete"]
        best = max(complete, key=lambda t: t["value"] * (-1 if target.minimize else 1))
        board.append({
            "model": name, "value": result.best_value, "trials": len(complete),
            "seconds": round(result.seconds, 1), "params": result.best_params,
            "fit_s": round(float(best["seconds"] or 0.0), 2), "estimate_s": round(estimate, 1),
        })  # fmt: skip
        fitted[name] = result.best_model
    scored = [row for row in board if row["value"] is not None]
    if not scored:
        raise RecfunnelError("no model of the portfolio finished; give a larger --budget")
    scored.sort(key=lambda row: row["value"], reverse=not target.minimize)
    if blend and not target.minimize:
        row = _try_blend(scored, fitted, fit, validation, target, dataset, log, ends)
        if row is not None:
            board.append(row)
            scored.insert(0, row)
    board = scored + [row for row in board if row["value"] is None]
    for rank, row in enumerate(board, 1):
        row["rank"] = rank if row["value"] is not None else None
    return scored[0]["model"], scored[0]["params"], board


#: most members of the blend ``--model auto`` tries (the best models other than most-popular)
BLEND_MEMBERS = 4
#: the least time (s) worth starting a blend's weight search with
BLEND_SECONDS = 5.0
#: relative weights tried for each member in turn (coordinate ascent on validation)
BLEND_GRID = (0.0, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5)


def refit_reserve(board: list[dict]) -> float:
    """Seconds the final refit may need: the leading models' fits (the blend's members at most)
    times :data:`REFIT_MARGIN`."""
    rows = [r for r in board if r.get("value") is not None and r["model"] != "most-popular"]
    rows.sort(key=lambda r: r["value"], reverse=True)
    return REFIT_MARGIN * sum(r.get("fit_s", 0.0) for r in rows[:BLEND_MEMBERS])


def _try_blend(scored, fitted, fit, validation, target, dataset, log, ends) -> dict | None:
    """The best weighted blend of the best few models (other than most-popular), weights fitted
    on validation by coordinate ascent over :data:`BLEND_GRID` until ``ends`` (a
    ``time.perf_counter()`` time), as a leaderboard row when it beats the best single model
    there; else ``None``."""
    import torch

    from recfunnel.models.blend import Blend, standardise

    # members: the best models whose refits fit in what is left (with time to fit the weights)
    top, refit = [], 0.0
    for row in scored:
        need = REFIT_MARGIN * row.get("fit_s", 0.0)
        if row["model"] == "most-popular" or len(top) == BLEND_MEMBERS:
            continue
        if refit + need + BLEND_SECONDS <= ends - time.perf_counter():
            top.append(row)
            refit += need
    if len(top) < 2 or target.k is None:
        return None
    ends -= refit  # the weights are fitted in the time the members' refits do not need
    t0 = time.perf_counter()
    models = []
    for row in top:
        model = fitted.get(row["model"])
        if model is None:  # the best trial ran in an earlier session: refit it
            with deadline(ends):
                model = _fit(_build(row["model"], row["params"]), fit, None, dataset)
        models.append(model)
    users = np.unique(validation.users)
    # the members' standardised scores of the validation users, once: [M, B, N]
    if len(models) * len(users) * fit.num_items * 4 > 2**30:
        rng = np.random.default_rng(0)
        keep = max(1, 2**30 // (len(models) * fit.num_items * 4))
        users = np.sort(rng.choice(users, size=min(keep, len(users)), replace=False))
    with torch.no_grad():
        z = torch.stack([standardise(m.score(users)) for m in models])
    position = np.full(fit.num_users, -1, dtype=np.int64)
    position[users] = np.arange(len(users))
    chosen = np.isin(validation.users, users)
    part = validation.subset(chosen) if not chosen.all() else validation
    k = min(target.k, fit.num_items)

    def value(weights) -> float:
        combined = torch.einsum("m,mbn->bn", torch.as_tensor(weights, dtype=torch.float32), z)

        def scorer(batch):
            return combined[torch.as_tensor(position[np.asarray(batch)])].clone()

        metrics = evaluate_scores(scorer, fit, part, factorized_ks=(), ranking_ks=(k,))
        return float(metrics[f"{target.name}@{k}"])

    weights = [1.0] + [0.0] * (len(models) - 1)
    best = value(weights)
    single = best
    for _ in range(2):  # two passes of coordinate ascent
        for m in range(1, len(models)):
            for w in BLEND_GRID:
                if ends - time.perf_counter() < 1.0:
                    break
                trial = list(weights)
                trial[m] = w
                if trial == weights:
                    continue
                got = value(trial)
                if got > best + 1e-6:
                    best, weights = got, trial
    names = "+".join(row["model"] for row in top)
    if log is not None:
        log(f"auto: blend {names}: weights {[round(w, 2) for w in weights]}, "
            f"{best:.4f} on the validation users scored (best member {single:.4f})")  # fmt: skip
    used = [i for i, w in enumerate(weights) if w > 0]
    if len(used) < 2 or best <= single:
        return None
    total = sum(weights[i] for i in used)
    members = [top[i] for i in used]
    full = Blend.from_models([models[i] for i in used], [weights[i] / total for i in used],
                             [row["params"] for row in members])  # fmt: skip
    full_value = target.evaluate(full, fit, validation)  # on every validation user
    if full_value <= scored[0]["value"]:
        return None
    params = {"members": [{"model": row["model"], "params": row["params"]} for row in members],
              "weights": [round(weights[i] / total, 4) for i in used]}  # fmt: skip
    return {"model": "blend", "value": full_value, "trials": 1,
            "seconds": round(time.perf_counter() - t0, 1), "params": params,
            "fit_s": round(sum(row.get("fit_s", 0.0) for row in members), 2)}  # fmt: skip


def check_fixed(fixed: dict | None, kinds=None) -> None:
    """Refuse (one line) a fixed option that no model of ``kinds`` (default: the portfolio)
    has, or a value a model that has it cannot take: before any data is read."""
    kinds = list(kinds or PORTFOLIO)
    for name, value in (fixed or {}).items():
        having = [kind for kind in kinds if _accepts(kind, name)]
        if not having:
            raise RecfunnelError(
                f"--set {name}: no model of the portfolio ({', '.join(kinds)}) has that option"
            )
        for kind in having:
            apply_fixed(preset(kind, "default"), {name: value})


def _accepts(kind: str, name: str) -> bool:
    """Whether ``kind``'s config has option ``name`` (``--set`` reaches the models that do)."""
    return bool(model_class(kind).config_class().targets(name.replace("-", "_")))


def leaderboard_text(board: list[dict], metric: str) -> str:
    """The leaderboard as aligned text lines."""
    lines = [f"{'rank':>4}  {'model':14s} {'validation ' + metric:>22s} {'trials':>6} {'s':>7}"]
    for row in board:
        skipped = str(row.get("note", "")).startswith("skipped")
        value = (
            ("skipped" if skipped else "failed") if row["value"] is None else f"{row['value']:.4f}"
        )
        rank = "-" if row.get("rank") is None else str(row["rank"])
        line = (f"{rank:>4}  {row['model']:14s} {value:>22s} {row['trials']:>6} "
                f"{row.get('seconds', 0):>7}")  # fmt: skip
        if row["value"] is None and row.get("note"):
            line += f"  {row['note']}"
        lines.append(line)
    return "\n".join(lines)
