"""The ``recfunnel`` command line: one small function per sub-command.

    recfunnel train --dataset movielens-100k --model two-tower --preset default --out runs/ml
    recfunnel evaluate runs/ml --json
    recfunnel recommend runs/ml --user 9 -k 3
    recfunnel recommend runs/ml --all-users -k 10 --output recs.csv
    recfunnel serve runs/ml --port 8000 --workers 2
    recfunnel recommend runs/ml --history 50,172,181 -k 10
    recfunnel report runs/ml --out report.html
    recfunnel synth --users 1000000 --items 200000 --interactions 20000000 --out big.parquet

Bad input prints one line, ``error: <problem>; <fix>``, on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import sys
import time
from pathlib import Path

from recfunnel.errors import RecfunnelError, TrainingError, out_of_memory


def _json_default(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _dump(data) -> str:
    return json.dumps(data, default=_json_default)


def _print_metrics(metrics: dict) -> None:
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"{key:52s} {value:.4f}")
        elif isinstance(value, int):
            print(f"{key:52s} {value}")


# ------------------------------------------------------------------ train
def _data_spec(args):
    from recfunnel.data.sources import DataSpec

    if getattr(args, "sequences", None):
        if args.train or args.test:
            raise RecfunnelError("give --sequences or --train/--test, not both")
        return DataSpec(dataset=None, sequences=args.sequences, split=args.split, seed=args.seed,
                        test_fraction=args.test_fraction, n_last=args.n_last)  # fmt: skip
    if args.train:
        columns = {"user": args.user_col, "item": args.item_col, "rating": args.rating_col,
                   "time": args.time_col, "weight": args.weight_col}  # fmt: skip
        return DataSpec(
            dataset=None, train=args.train, test=args.test, columns=columns,
            split=args.split, seed=args.seed, test_fraction=args.test_fraction,
            n_last=args.n_last, duplicates=args.duplicates,
            user_features=args.user_features, item_features=args.item_features,
        )  # fmt: skip
    if args.test:
        raise RecfunnelError("--test needs --train; give both files, or --dataset alone")
    return DataSpec(
        dataset=args.dataset, data_dir=args.data_dir, item_key=args.item_key, split=args.split,
        seed=args.seed, test_fraction=args.test_fraction, n_last=args.n_last,
        user_features=args.user_features, item_features=args.item_features,
    )  # fmt: skip


#: the common training flags and the config field each sets (everywhere it occurs)
TRAIN_FLAGS = {
    "dim": "dim", "epochs": "epochs", "batch_size": "batch_size",
    "learning_rate": "learning_rate", "device": "device", "patience": "patience",
    "regularization": "regularization", "alpha": "alpha",
}  # fmt: skip


def train_config(args):
    """The model's config: the preset, then the common flags, then ``--set`` (each refused with
    one line before any data is read when it does not apply or is invalid)."""
    from recfunnel.presets import preset

    config = preset(args.model, args.preset)
    overrides = {}
    for flag, name in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if value is None:
            continue
        if not config.targets(name):
            known = ", ".join(f"--{f.replace('_', '-')}" for f, n in TRAIN_FLAGS.items()
                              if config.targets(n)) or "none"  # fmt: skip
            raise RecfunnelError(
                f"--{flag.replace('_', '-')} does not apply to --model {args.model}; its "
                f"options: {known} (and --set NAME=VALUE, see train --model {args.model} --help)"
            )
        overrides[name] = value
    if config.targets("seed"):  # --seed seeds the split and the model
        overrides["seed"] = args.seed
    config = config.override(**overrides)
    sets = {}
    for pair in args.set or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise RecfunnelError(f"--set expects NAME=VALUE, not {pair!r}")
        sets[name.strip()] = value
    config = config.with_strings(sets)
    stopping = [p for p, _ in config.targets("patience") if _value(config, p) is not None]
    if stopping and not args.validation_fraction:
        raise RecfunnelError("--patience needs a validation split: add --validation-fraction 0.1")
    return config


def _check_train_flags(args, config) -> None:
    """Refuse, in one line before any work, a flag that means nothing for this model."""
    from recfunnel.models import model_class

    for flag in ("budget", "metric"):
        if getattr(args, flag) is not None:
            raise RecfunnelError(f"--{flag} applies to --model auto only; leave it out")
    if (args.user_features or args.item_features) and not model_class(args.model).needs_dataset:
        raise RecfunnelError(
            f"--model {args.model} uses no side features; leave out --user-features/"
            "--item-features (ranking and two-stage read them)"
        )
    if config.targets("epochs"):  # trained in epochs: checkpoints, processes, validation apply
        return
    given = [
        name
        for name, value in (
            ("--checkpoint-every", args.checkpoint_every is not None),
            ("--resume", args.resume),
            ("--checkpoint-dir", args.checkpoint_dir is not None),
            ("--nproc", args.nproc is not None),
            ("--validation-fraction", bool(args.validation_fraction)),
        )
        if value
    ]
    if given:
        raise RecfunnelError(
            f"{given[0]} does not apply to --model {args.model} (it is not trained in epochs); "
            "leave it out"
        )


def _value(config, path: str):
    for part in path.split("."):
        config = getattr(config, part)
    return config


def cmd_train(args) -> int:
    from recfunnel.progress import Heartbeat, running_heartbeat

    # a line every 10 s through reading, splitting, setting up and saving (main's, from the
    # start of the process, or one of its own)
    running = running_heartbeat()
    if running is not None:
        return _train_with(args, running)
    rank0 = os.environ.get("RANK", "0") == "0"
    with Heartbeat("train", progress=not args.quiet and rank0) as heartbeat:
        return _train_with(args, heartbeat)


def _train_with(args, heartbeat) -> int:
    from recfunnel import distributed

    if args.model == "auto":
        heartbeat.stage("choosing a model (--model auto)")
        return _train_auto(args)
    config = train_config(args)  # a bad option stops here, before any process or data
    _check_train_flags(args, config)
    if args.nproc is not None:
        heartbeat.stage(None)  # the launched processes report (rank 0)
        return _launch(args)
    try:  # joining the group too: a peer that already failed can break it off
        distributed.init(args.device or "auto")
        code = _train_and_report(args, config, heartbeat)
        # every rank leaves together once rank 0 has saved the run (a process that exits while
        # its peers still hold gloo connections to it can abort); after an error, not: the
        # process exits and torchrun stops the others, rather than have them wait at a barrier
        distributed.shutdown()
    except Exception as exc:  # a peer failed: say so in one line, not with a traceback
        if distributed.lost_peer(exc):
            raise RecfunnelError(distributed.peer_error_message(exc)) from exc
        raise
    return code


def _train_and_report(args, config, heartbeat) -> int:
    """Train ``config`` as ``recfunnel train`` was asked (this process's part of a
    distributed job), then save and print the run (rank 0)."""
    from recfunnel import distributed, experiment
    from recfunnel.models import model_class
    from recfunnel.runs import check_run_target

    spec = _data_spec(args)
    model = model_class(args.model)(config)
    out = Path(args.out) if args.out else None
    if out is not None and distributed.rank() == 0:
        check_run_target(out, overwrite=args.overwrite)  # fail before training, not after
    options = _eval_options(args)  # bad values fail before training
    checkpoint_dir = _checkpoint_dir(args, out)
    with _checkpointing(args, checkpoint_dir):
        run, _, fit_rows, test_rows = experiment.train(
            spec, model, validation_fraction=args.validation_fraction,
            progress=not args.quiet, **options,
        )  # fmt: skip
        if run is None:  # a distributed job's rank > 0: rank 0 evaluates and saves
            return 0
        _say_which_users(run.config["evaluation"])
        run.config["preset"] = args.preset
        if out is not None:
            heartbeat.stage("saving the run")
            run.save(out, overwrite=args.overwrite)
    if checkpoint_dir is not None and out is not None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the run is saved: no longer needed
    metrics = {k: v for k, v in run.metrics.items() if k != "training_log"}
    _note_dropped(metrics, args.test)
    if args.json:
        print(_dump(metrics))
    else:
        print(headline(args, run, train_rows=len(fit_rows), test_rows=len(test_rows)))
        print()
        _print_metrics(metrics)
        if out is not None:
            print(f"saved run to {out}")
    return 0


#: the metrics a headline shows, by model family (the first ones present are shown)
RATING_HEADLINE = ("rmse", "mae", "recall@10", "ndcg@10")
RANKING_HEADLINE = (
    "recall@10", "ndcg@10", "factorized_top_k/top_100_categorical_accuracy", "coverage@10",
)  # fmt: skip


def headline(args, run, *, train_rows: int, test_rows: int) -> str:
    """A short summary before the full table: what was trained, on what, how long, how good."""
    m = run.metrics
    names = RATING_HEADLINE if "rmse" in m else RANKING_HEADLINE
    shown = [(n, m[n]) for n in names if isinstance(m.get(n), float)][:4]
    short = {"factorized_top_k/top_100_categorical_accuracy": "top-100 accuracy"}
    source = args.train or args.dataset
    lines = [
        f"{args.model} (preset {args.preset}) on {source}, {args.split} split: "
        f"{train_rows:,} training rows, {test_rows:,} test rows",
        f"fit {m['fit_seconds']:.1f} s, evaluation {m['eval_seconds']:.1f} s",
        "  ".join(f"{short.get(n, n)} {v:.4f}" for n, v in shown),
    ]
    return "\n".join(lines)


def _history_items(args, key_kind: str) -> list[str]:
    """The new user's items from --history (comma-separated), --history-item and
    --history-file (one a line), in that order."""
    items: list[str] = []
    if args.history is not None:
        items += [item.strip() for item in args.history.split(",") if item.strip()]
    items += [item.strip() for item in args.history_item or [] if item.strip()]
    if args.history_file is not None:
        path = Path(args.history_file)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except FileNotFoundError:
            raise RecfunnelError(
                f"--history-file {path} does not exist; give a file with one item {key_kind} a line"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise RecfunnelError(f"cannot read --history-file {path}: {reason}") from None
        items += [line.strip() for line in text.splitlines() if line.strip()]
    if not items:
        raise RecfunnelError(
            f"the history is empty; give item {key_kind}s, e.g. --history-item VALUE"
        )
    return items


# --------------------------------------------------------------- presets
def cmd_presets(args) -> int:
    from recfunnel.models import MODELS
    from recfunnel.presets import PRESETS, config_toml

    for kind in [args.model] if args.model else sorted(MODELS):
        for name, config in PRESETS.get(kind, {}).items():
            if args.toml:
                print(f"# --model {kind} --preset {name}")
                print(config_toml(config, model=kind))
                continue
            print(f"{kind} --preset {name}")
            rows = config.describe()
            if not rows:
                print("  (no hyper-parameters)")
            for path, value, _ in rows:
                print(f"  {path} = {_shown(value)}")
            print()
    return 0


def _shown(value) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _launch(args) -> int:
    """``--nproc N``: the same command in N processes (torch.distributed.run)."""
    from recfunnel import distributed

    if args.nproc < 1:
        raise RecfunnelError(f"--nproc must be at least 1, not {args.nproc}")
    if distributed.launched():
        raise RecfunnelError("--nproc inside torchrun; give one or the other")
    if args.out:  # refused here, before any process starts, not on rank 0 mid-start-up
        from recfunnel.runs import check_run_target

        check_run_target(Path(args.out), overwrite=args.overwrite)
    _eval_options(args)
    argv = list(sys.argv[1:] if args.argv is None else args.argv)
    skip = {"--nproc"}
    rest, i = [], 0
    while i < len(argv):
        if argv[i] in skip:
            i += 2
            continue
        if argv[i].startswith("--nproc="):
            i += 1
            continue
        rest.append(argv[i])
        i += 1
    return distributed.launch(rest, args.nproc)


def _checkpoint_dir(args, out: Path | None) -> Path | None:
    """``--checkpoint-dir``, else ``OUT.checkpoints`` beside the run folder, when
    ``--checkpoint-every`` or ``--resume`` is given."""
    if not args.checkpoint_every and not args.resume:
        return None
    if args.checkpoint_dir:
        return Path(args.checkpoint_dir)
    if out is None:
        raise RecfunnelError("--checkpoint-every/--resume need --out (or --checkpoint-dir DIR)")
    return out.parent / f"{out.name}.checkpoints"


def _checkpointing(args, directory: Path | None):
    from recfunnel.checkpoints import checkpointing

    if directory is None:
        return contextlib.nullcontext()
    if args.checkpoint_every is not None and args.checkpoint_every < 1:
        raise RecfunnelError(f"--checkpoint-every must be at least 1, not {args.checkpoint_every}")
    if args.resume and (directory / "fit-1" / "latest.json").is_file():
        print(f"resuming from the checkpoint in {directory}", file=sys.stderr)
    return checkpointing(directory, every=args.checkpoint_every or 1, resume=args.resume)


# ------------------------------------------------------------ tune / auto
def _fixed_options(args) -> dict[str, str]:
    """Hyper-parameters the search keeps fixed: ``--device`` and ``--set NAME=VALUE`` (text,
    parsed by each model's config field)."""
    fixed = {}
    if getattr(args, "device", None):
        fixed["device"] = args.device
    for pair in args.set or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise RecfunnelError(f"--set expects NAME=VALUE, not {pair!r}")
        fixed[name.strip().replace("-", "_")] = value
    return fixed


def _carved(args, duplicates: str):
    import dataclasses

    from recfunnel.data import sources
    from recfunnel.tuning import carve_validation

    spec = _data_spec(args)
    if spec.duplicates == "auto":  # as train resolves it; auto's portfolio keeps every row
        spec = dataclasses.replace(spec, duplicates=duplicates)
    dataset, train, _ = sources.load(spec)  # the test rows are never looked at
    fit, validation = carve_validation(
        train, args.validation_fraction or 0.1, seed=spec.seed, temporal=spec.split == "temporal"
    )
    return spec, dataset, fit, validation


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def cmd_tune(args) -> int:
    from recfunnel.models import model_class
    from recfunnel.presets import preset
    from recfunnel.tuning import apply_fixed, parse_budget, tune

    budget = parse_budget(args.budget) if args.budget is not None else None
    if budget is None and args.trials is None:
        raise RecfunnelError("give --budget (e.g. 10m) or --trials N")
    if not model_class(args.model).search_space:
        raise RecfunnelError(f"--model {args.model} has nothing to tune; pick another model")
    base = preset(args.model, args.preset)
    fixed = _fixed_options(args)
    duplicates = model_class(args.model)(apply_fixed(base, fixed)).default_duplicates()
    out = Path(args.out)
    if out.exists() and not out.is_dir():  # refused before any data is read
        raise RecfunnelError(f"{out} is a file; choose a folder for --out")
    _, dataset, fit, validation = _carved(args, duplicates)
    result = tune(
        args.model, fit, validation, out=out, budget=budget, trials=args.trials,
        metric=args.metric, base=base, fixed=fixed, seed=args.seed,
        dataset=dataset if model_class(args.model).needs_dataset else None,
        log=None if args.json else _log,
    )  # fmt: skip
    summary = {"model": args.model, "metric": result.metric, "best_value": result.best_value,
               "trials": len(result.trials), "best_params": result.best_params,
               "preset": str(out / "best.toml")}  # fmt: skip
    if args.json:
        print(_dump(summary))
        return 0
    print(f"best validation {result.metric}: {result.best_value:.4f} "
          f"({len(result.trials)} trials in the study)")  # fmt: skip
    print(f"wrote {out / 'best.toml'}, {out / 'trials.csv'} and the study {out / 'study.db'}")
    print(f"train it: recfunnel train --model {args.model} --preset {out / 'best.toml'}")
    return 0


def _train_auto(args) -> int:
    from recfunnel import experiment
    from recfunnel.models import model_class
    from recfunnel.runs import check_run_target
    from recfunnel.training import deadline
    from recfunnel.tuning import Metric, auto, check_fixed, leaderboard_text, parse_budget

    started = time.perf_counter()  # the budget counts reading the data and the refit too
    budget = parse_budget(args.budget or "5m")
    metric = Metric.parse(args.metric or "ndcg@10").key
    for flag, given in (("--preset", args.preset != "default"),
                        ("--checkpoint-every", args.checkpoint_every is not None),
                        ("--resume", args.resume), ("--nproc", args.nproc is not None),
                        ("--checkpoint-dir", args.checkpoint_dir is not None),
                        ("--patience", args.patience is not None)):  # fmt: skip
        if given:
            raise RecfunnelError(f"{flag} does not apply to --model auto; leave it out")
    fixed = _fixed_options(args)
    for flag in TRAIN_FLAGS:  # --epochs 2 etc.: fixed in every portfolio model that has it
        if flag != "patience" and getattr(args, flag) is not None:
            fixed[TRAIN_FLAGS[flag]] = str(getattr(args, flag))
    check_fixed(fixed)  # refused before any data is read
    out = Path(args.out) if args.out else None
    if out is not None:
        check_run_target(out, overwrite=args.overwrite)
    options = _eval_options(args)
    spec, dataset, fit, validation = _carved(args, "keep")
    kind, params, board = auto(
        fit, validation, budget=budget, metric=metric, seed=args.seed,
        fixed=fixed, dataset=dataset, log=None if args.json else _log, started=started,
    )  # fmt: skip
    model = model_class(kind)(params)
    with deadline(started + budget):  # the refit stops at an epoch boundary if it runs over
        run, _, _, _ = experiment.train(spec, model, progress=not args.quiet, **options)
    run.metrics["auto_seconds"] = round(time.perf_counter() - started, 1)
    run.config["preset"] = "auto"
    run.config["auto"] = {"metric": metric, "budget_seconds": budget, "chosen": kind}
    run.metrics["leaderboard"] = board
    if out is not None:
        run.save(out, overwrite=args.overwrite)
    metrics = {k: v for k, v in run.metrics.items() if k not in ("training_log", "leaderboard")}
    if args.json:
        print(_dump({**metrics, "model": kind, "leaderboard": board}))
        return 0
    print(leaderboard_text(board, metric))
    print(f"chosen: {kind} (refitted on all training rows)")
    _print_metrics(metrics)
    if out is not None:
        print(f"saved run to {out}")
    return 0


def _note_dropped(report: dict, path) -> None:
    """Say on stderr how many test rows were dropped for ids unseen in training."""
    from recfunnel.data.io import describe_dropped

    counts = {k.removeprefix("test_"): v for k, v in report.items() if k.startswith("test_rows")}
    line = describe_dropped(counts, path)
    if line:
        print(f"note: {line}", file=sys.stderr)


# --------------------------------------------------------------- evaluate
def _eval_options(args) -> dict:
    """``--eval-users`` / ``--eval-memory`` as keywords of :func:`experiment.train`."""
    from recfunnel.metrics import parse_eval_users, parse_memory

    memory = parse_memory(args.eval_memory) if args.eval_memory is not None else None
    return {"eval_users": parse_eval_users(args.eval_users), "eval_memory": memory}


def _say_which_users(record: dict) -> None:
    from recfunnel.metrics import describe_choice

    if describe_choice(record):
        print(describe_choice(record), file=sys.stderr)


def _add_eval_options(parser) -> None:
    group = parser.add_argument_group("evaluation")
    group.add_argument("--eval-users", metavar="all|N", help="test users to evaluate: 'all', or "
                       "a seeded sample of N (default: a sample of 10000 above 10000)")  # fmt: skip
    group.add_argument("--eval-memory", metavar="SIZE", help="memory for one block of scores "
                       "while evaluating, e.g. 512MB (the default) or 2GB")  # fmt: skip


def cmd_evaluate(args) -> int:
    from recfunnel.progress import Heartbeat, running_heartbeat

    running = running_heartbeat()
    if running is not None:
        return _evaluate_run(args, running)
    with Heartbeat("evaluate", progress=not args.quiet) as heartbeat:
        return _evaluate_run(args, heartbeat)


def _evaluate_run(args, heartbeat) -> int:
    from recfunnel.data import Dataset, sources
    from recfunnel.data.sources import DataSpec
    from recfunnel.experiment import evaluate
    from recfunnel.runs import Run

    heartbeat.stage("loading the run")
    run = Run.load(args.run_dir)
    spec = DataSpec.from_dict(run.config.get("data", {}))
    heartbeat.stage("reading the data")
    if args.test:
        dataset = Dataset(interactions=run.train_interactions(), users=run.users, items=run.items)
        report: dict = {}
        test, _ = sources.encode_file(args.test, dataset, spec, report=report)
        if len(test) == 0:
            raise RecfunnelError(f"no row of {args.test} has a user and item known to the run")
    else:
        dataset = sources.load_dataset(spec)
        if dataset.users != run.users or dataset.items != run.items:
            raise RecfunnelError(
                "the run's data has changed since training (vocabularies differ); pass --test FILE"
            )
        heartbeat.stage("splitting the data")
        _, test = sources.split(dataset, spec)
    options = _eval_options(args)
    heartbeat.stage("evaluating")
    started = time.perf_counter()
    metrics = evaluate(run.model, run.train_interactions(), test, eval_users=options["eval_users"],
                       eval_seed=spec.seed, memory=options["eval_memory"],
                       progress=not args.quiet)  # fmt: skip
    metrics["eval_seconds"] = time.perf_counter() - started
    _say_which_users(metrics["evaluation"])
    if args.test:
        metrics.update({f"test_{key}": value for key, value in report.items()})
        _note_dropped(metrics, args.test)
    if args.json:
        print(_dump(metrics))
    else:
        _print_metrics(metrics)
    return 0


# -------------------------------------------------------------- recommend
def cmd_recommend(args) -> int:
    from recfunnel.runs import Run

    given_history = any(x is not None for x in (args.history, args.history_item, args.history_file))
    if sum((args.user is not None, args.all_users, given_history)) != 1:
        raise RecfunnelError(
            "give exactly one of --user ID, --history ITEMS (or --history-item / "
            "--history-file) or --all-users"
        )
    run = Run.load(args.run_dir)
    if given_history:
        history = _history_items(args, run.item_key_kind)
        rec = run.recommend_history(history, args.k, exclude_seen=not args.include_seen)
        if args.json:
            print(_dump(rec.to_records()))
            return 0
        for rank, (title, score) in enumerate(zip(rec.titles, rec.scores, strict=False), 1):
            print(f"{rank:3d}. {title}  ({score:.4f})")
        return 0
    if args.all_users:
        if not args.output:
            raise RecfunnelError("--all-users needs --output FILE.csv")
        if Path(args.output).is_dir():
            raise RecfunnelError(f"--output {args.output} is a folder; give a file name, e.g. "
                                 f"{Path(args.output) / 'recs.csv'}")  # fmt: skip
        rows = run.recommend_all(args.k)
        _write_csv_atomic(Path(args.output), ["user", "rank", "item", "score"], rows)
        print(f"wrote recommendations for {len(run.users)} users to {args.output}", file=sys.stderr)
        return 0
    rec = run.recommend(args.user, args.k, exclude_seen=not args.include_seen)
    if args.json:
        print(_dump(rec.to_records()))
        return 0
    if rec.cold_start:
        print(f"user {args.user!r} is unknown: most popular items (cold start)", file=sys.stderr)
    for rank, (title, score) in enumerate(zip(rec.titles, rec.scores, strict=False), 1):
        print(f"{rank:3d}. {title}  ({score:.4f})")
    return 0


def _write_csv_atomic(path: Path, header, rows) -> None:
    from recfunnel.artifacts import atomic_file

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_file(path, "w", newline="") as fh:  # opened before any row is computed
            writer = csv.writer(fh)
            writer.writerow(header)
            for user, rank, item, score in rows:
                writer.writerow([user, rank, item, f"{score:.6f}"])
    except OSError as exc:
        raise RecfunnelError(
            f"cannot write --output {path}: {exc.strerror or exc}; choose a writable file path"
        ) from None


# ------------------------------------------------------------------ serve
def cmd_serve(args) -> int:
    from recfunnel.serving import require_serving, serve

    if args.workers < 1:
        raise RecfunnelError(f"--workers must be at least 1, not {args.workers}")
    if not 0 <= args.port <= 65535:
        raise RecfunnelError(f"--port must be between 0 and 65535, not {args.port}")
    require_serving()
    hosts = [h.strip() for h in args.allowed_hosts.split(",")] if args.allowed_hosts else None
    if hosts is not None and not all(hosts):
        raise RecfunnelError("--allowed-hosts takes comma-separated host names, or '*'")
    serve(args.run_dir, host=args.host, port=args.port, workers=args.workers,
          token=_serve_token(args), index=args.index, access_log=args.access_log,
          runs_root=args.runs_root, allowed_hosts=hosts)  # fmt: skip
    return 0


def _serve_token(args) -> str | None:
    """The bearer token: --token-file, else --token (visible in ps: warned), else the
    RECFUNNEL_TOKEN environment variable."""
    if args.token_file and args.token:
        raise RecfunnelError("give --token-file or --token, not both")
    if args.token_file:
        try:
            with open(args.token_file, "rb") as fh:
                raw = fh.read(4097)
            token = raw.decode("utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise RecfunnelError(f"cannot read --token-file: {why}; pass a readable file "
                                 "holding the token on one line") from None  # fmt: skip
        if not token or len(raw) > 4096 or any(c.isspace() for c in token):
            raise RecfunnelError("--token-file must hold one token (no spaces, at most 4 KiB)")
        return token
    if args.token:
        print("warning: --token is visible to every local user (ps); prefer RECFUNNEL_TOKEN "
              "or --token-file", file=sys.stderr)  # fmt: skip
        return args.token
    return os.environ.get("RECFUNNEL_TOKEN") or None


# ----------------------------------------------------------------- report
def cmd_report(args) -> int:
    from recfunnel.report import write_report

    out = Path(args.out)
    write_report(args.run_dir, out, users=args.users, k=args.k, baseline=not args.no_baseline)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ synth
def cmd_synth(args) -> int:
    from recfunnel.data.synthetic import power_law, write_interactions

    data = power_law(args.users, args.items, args.interactions, seed=args.seed)
    write_interactions(data, Path(args.out))
    print(f"wrote {data!r} to {args.out}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------ parser
DESCRIPTION = """\
Train, evaluate and serve recommenders (two-tower retrieval, matrix factorization, ranking).

examples:
  recfunnel train --dataset movielens-100k --model two-tower --preset default --out runs/ml
  recfunnel train --model wals --help        the options of one model, with their defaults
  recfunnel presets two-tower                the presets of a model, with their values
  recfunnel evaluate runs/ml
  recfunnel recommend runs/ml --user 9 -k 3
  recfunnel recommend runs/ml --history-item "Star Wars (1977)" -k 10
  recfunnel serve runs/ml --port 8000

Bad input prints one line, "error: <problem>; <fix>", on stderr and exits with status 2.
"""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written; an option with a default shows it."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default:" in text
            or default in (None, False, argparse.SUPPRESS)
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("recfunnel")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The value given to ``flag`` in ``argv`` (``--flag V`` or ``--flag=V``), else None."""
    for i, arg in enumerate(argv):
        if arg == flag and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None


def model_options_text(model: str, preset_name: str = "default") -> str:
    """The options of ``--model`` (set with ``--set NAME=VALUE``) and their values in a preset."""
    from recfunnel.presets import preset

    try:
        config = preset(model, preset_name)
    except RecfunnelError:
        config = preset(model, "default")
        preset_name = "default"
    rows = config.describe()
    if not rows:
        return f"--model {model} has no hyper-parameters."
    width = max(len(f"{path}={_shown(value)}") for path, value, _ in rows) + 2
    lines = [
        f"set with --set NAME=VALUE; values of preset {preset_name!r}. A bare NAME (epochs) "
        "sets every",
        "field of that name; a dotted one (retrieval.epochs) one part. Lists: --set hidden=256,64.",
        "",
    ]
    for path, value, help_text in rows:
        lines.append(f"  {f'{path}={_shown(value)}':{width}s}{help_text}")
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    """argparse with the house's one-line errors (no usage block): ``error: ...; see --help``."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    from recfunnel.data.sources import DATASETS, SPLITS
    from recfunnel.models import MODELS

    argv = list(argv or [])
    parser = _Parser(prog="recfunnel", description=DESCRIPTION, formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=f"recfunnel {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chosen = _flag_value(argv, "--model")
    chosen = chosen if chosen in MODELS else "two-tower"
    p = sub.add_parser(
        "train", help="train a model, evaluate it, save the run", formatter_class=_HelpFormatter,
        description="Train a model on a dataset or file, evaluate it on the test split, and "
        "save the run folder (--out).",
    )  # fmt: skip
    data = p.add_argument_group("data")
    data.add_argument("--dataset", default="movielens-100k", choices=DATASETS,
                      help="built-in dataset (ignored with --train)")  # fmt: skip
    data.add_argument("--data-dir", help="folder with the dataset files (default: "
                      "$RECFUNNEL_DATA_DIR, the cache, else download)")  # fmt: skip
    data.add_argument("--item-key", default="title", choices=("title", "id"),
                      help="MovieLens: key movies by title (TFRS) or by id")  # fmt: skip
    data.add_argument("--split", default="random", choices=SPLITS,
                      help="how to hold out the test rows; last: each user's last item by time "
                      "is the test (and, with --validation-fraction, the one before it the "
                      "validation)")  # fmt: skip
    data.add_argument("--test-fraction", type=float, default=0.2,
                      help="random split: share of rows held out for the test")  # fmt: skip
    data.add_argument(
        "--n-last", type=int, default=1, help="temporal split: rows held out per user"
    )
    data.add_argument("--seed", type=int, default=42, help="split and model seed")
    data.add_argument(
        "--train",
        help="interaction file (CSV/TSV/JSONL/Parquet) or a folder of Parquet files, "
        "instead of --dataset",
    )
    data.add_argument("--test", help="test file; default: split --train by --split")
    data.add_argument("--sequences", metavar="FILE|DIR", help="space-separated sequences, one "
                      "line per user, items oldest first (instead of --dataset); a SASRec "
                      "folder (train/input.txt, val/...) is split by its own protocol")  # fmt: skip
    data.add_argument("--user-col", default="user", help="--train: user id column")
    data.add_argument("--item-col", default="item", help="--train: item id column")
    data.add_argument("--rating-col", help="--train: rating column (explicit feedback)")
    data.add_argument("--time-col", help="--train: timestamp column (temporal split)")
    data.add_argument("--weight-col", help="--train: interaction weight column")
    data.add_argument(
        "--duplicates",
        default="auto",
        choices=("auto", "keep", "sum", "mean", "first", "last", "error"),
        help="repeated (user, item) rows: auto = the model's choice (keep for two-tower and "
        "most-popular, sum for wals/ease/bpr, mean for rating models), keep = one training "
        "example each, sum = add weights (count repeats), mean/first/last = one row",
    )
    for side in ("user", "item"):
        data.add_argument(
            f"--{side}-features",
            metavar="FILE",
            help=f"{side} side features: id column (--{side}-col) + named columns",
        )
    model = p.add_argument_group("model")
    model.add_argument("--model", default="two-tower", choices=[*sorted(MODELS), "auto"],
                       help="model to train (--model NAME --help lists its options); auto: "
                       "tune a portfolio within --budget, keep the best")  # fmt: skip
    model.add_argument("--budget",
                       help="--model auto: wall time, e.g. 600, 10m, 1h (default 5m)")  # fmt: skip
    model.add_argument(
        "--metric",
        help="--model auto: validation metric to choose by (default ndcg@10)",
    )
    model.add_argument(
        "--preset", default="default",
        help="named config: seed (the TFRS tutorial / peer settings), default (tuned), "
        "FILE.toml, FILE.json, or a saved run folder (re-trains its config exactly)",
    )  # fmt: skip
    model.add_argument("--dim", type=int, help="embedding dimension / factors (default: preset)")
    model.add_argument("--epochs", type=int, help="training epochs (default: preset)")
    model.add_argument("--batch-size", type=int, help="rows per gradient step (default: preset)")
    model.add_argument("--learning-rate", type=float, help="optimiser step (default: preset)")
    model.add_argument("--device", help="auto, cpu, cuda or cuda:N (default: preset)")
    model.add_argument("--regularization", type=float, help="L2 strength (wals, sgd-mf, bpr, ease)")
    model.add_argument(
        "--alpha", type=float, help="wals: confidence = alpha * weight; rp3beta: the walk's power"
    )
    model.add_argument("--set", action="append", metavar="NAME=VALUE",
                       help="any hyper-parameter listed below, e.g. --set temperature=0.1 or "
                       "--set retrieval.epochs=3 (repeatable)")  # fmt: skip
    model.add_argument(
        "--patience",
        type=int,
        help="early stopping: epochs without validation gain before stopping (needs "
        "--validation-fraction)",
    )
    model.add_argument(
        "--validation-fraction",
        type=float,
        default=0.0,
        help="carve this share of train for validation and early stopping",
    )
    _add_threads(p)
    p.add_argument_group(
        f"options of --model {chosen}", model_options_text(chosen, _flag_value(argv, "--preset")
                                                           or "default")
    )  # fmt: skip
    p.add_argument("--out", help="run folder to write: a new or empty folder, or an earlier "
                   "run holding nothing else (replaced atomically)")  # fmt: skip
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="also replace a damaged earlier run (files failing their checksums); never a "
        "folder holding other files",
    )
    p.add_argument("--json", action="store_true", help="print the test metrics as one JSON object")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train in N processes on this machine (torch.distributed; see "
                   "docs/scale.md for torchrun and several machines)")  # fmt: skip
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write a checkpoint every N epochs (to OUT.checkpoints)")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue from the last checkpoint after a crash or kill")  # fmt: skip
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="checkpoint folder (default: OUT.checkpoints beside --out)")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (default: a bar on "
                   "a terminal, else a line every 10 s)")  # fmt: skip
    _add_eval_options(p)
    p.set_defaults(func=cmd_train)
    _add_tune_parser(sub, data, model)

    p = sub.add_parser("evaluate", help="evaluate a saved run", formatter_class=_HelpFormatter)
    p.add_argument("run_dir", help="run folder written by train --out")
    p.add_argument("--test", help="test file (columns as at training); default: the run's split")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr (default: a bar on "
                   "a terminal, else a line every 10 s)")  # fmt: skip
    _add_threads(p)
    _add_eval_options(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("recommend", help="recommend items from a saved run",
                       formatter_class=_HelpFormatter)  # fmt: skip
    p.add_argument("run_dir", help="run folder written by train --out")
    p.add_argument("--user", help="raw user id")
    p.add_argument("--all-users", action="store_true", help="export every user's top k")
    history = p.add_argument_group(
        "a new user known by their items (folded in; ids or titles, as the run keys its items)"
    )
    history.add_argument("--history", help="comma-separated items, e.g. --history 50,172,181")
    history.add_argument("--history-item", action="append", metavar="ITEM",
                         help="one item (repeatable; for titles that contain commas)")  # fmt: skip
    history.add_argument("--history-file", metavar="FILE",
                         help="a file with one item per line")  # fmt: skip
    p.add_argument("-k", type=int, default=10, help="number of items to recommend")
    p.add_argument("--include-seen", action="store_true", help="do not drop the user's seen items")
    p.add_argument("--output", help="CSV file for --all-users (user,rank,item,score)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON records")
    _add_threads(p)
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("presets", help="list the presets of the models, with their values",
                       formatter_class=_HelpFormatter)  # fmt: skip
    p.add_argument("model", nargs="?", choices=sorted(MODELS), help="one model (default: all)")
    p.add_argument("--toml", action="store_true", help="print each preset as a TOML file")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("serve", help="serve recommendations over HTTP (needs the serve extra)")
    p.add_argument("run_dir")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    p.add_argument("--workers", type=int, default=1, help="worker processes")
    p.add_argument("--token-file", metavar="FILE", help="file holding the bearer token required "
                   "on every endpoint but /healthz (default: $RECFUNNEL_TOKEN); a token also "
                   "turns on the admin endpoint")  # fmt: skip
    p.add_argument("--token", help="the token itself (visible in ps: prefer the two above)")
    p.add_argument("--runs-root", metavar="DIR", help="folder whose runs /v1/admin/reload may "
                   "load (default: the served run's parent folder)")  # fmt: skip
    p.add_argument("--allowed-hosts", metavar="H1,H2", help="Host header names to answer "
                   "(default for a loopback bind: 127.0.0.1,localhost,::1; else any); '*' for "
                   "any; set it to the public name behind a proxy")  # fmt: skip
    p.add_argument("--index", default="auto", choices=("auto", "exact", "hnsw", "ivf"),
                   help="top-k index: auto = exact below 100k items, else FAISS IVF")  # fmt: skip
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("report", help="write a self-contained HTML report of a saved run")
    p.add_argument("run_dir")
    p.add_argument("--out", default="report.html", help="HTML file to write (default: %(default)s)")
    p.add_argument("--users", type=int, default=5, help="example users to show")
    p.add_argument("-k", type=int, default=10, help="recommendations per user")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip reloading the data for the most-popular baseline")  # fmt: skip
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("synth", help="write seeded power-law synthetic interactions")
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--items", type=int, required=True)
    p.add_argument("--interactions", type=int, required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="FILE.parquet, FILE.csv or FILE.npz")
    p.set_defaults(func=cmd_synth)
    return parser


def _add_threads(p) -> None:
    p.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads for PyTorch, OpenMP and BLAS together (default: "
                   "$OMP_NUM_THREADS where set, else the physical cores available)")  # fmt: skip


def _add_tune_parser(sub, data_group, model_group) -> None:
    """``recfunnel tune``: the train command's data options, plus the search's own."""
    from recfunnel.models import MODELS

    p = sub.add_parser("tune", help="search a model's hyper-parameters on a validation split")
    data = p.add_argument_group("data")
    for action in data_group._group_actions:  # the same options as train, kept in one place
        data._add_action(action)
    tunable = sorted(kind for kind, cls in MODELS.items() if cls.search_space)
    p.add_argument("--model", required=True, choices=tunable)
    p.add_argument("--preset", default="default", help="where the search starts (first trial)")
    p.add_argument("--budget", help="wall time for new trials: 600, 10m, 1h (bare number = s)")
    p.add_argument("--trials", type=int, help="trials in the study in all (resumes count)")
    p.add_argument("--metric", default="ndcg@10", help="validation metric (default ndcg@10)")
    p.add_argument(
        "--validation-fraction",
        type=float,
        default=0.1,
        help="share of the training rows carved for validation (default 0.1)",
    )
    p.add_argument("--device", help="auto, cpu or cuda (kept fixed)")
    p.add_argument("--set", action="append", metavar="NAME=VALUE",
                   help="keep a hyper-parameter fixed, e.g. --set dim=64")  # fmt: skip
    p.add_argument(
        "--out",
        required=True,
        help="folder for study.db (resumable), best.toml, trials.csv, history.png",
    )
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_tune)


@contextlib.contextmanager
def _early_heartbeat(argv: list[str], entry_point: bool = False):
    """``train`` / ``evaluate``'s heartbeat from the start: building the parser imports torch
    (seconds on a busy machine); the command then reports its stages to it. As the process's
    entry point, its silence counts from the process's start."""
    command = argv[0] if argv else ""
    if command not in ("train", "evaluate") or "--quiet" in argv or "--help" in argv:
        yield
        return
    from recfunnel.progress import Heartbeat, process_started

    started = process_started() if entry_point else None  # the interpreter's start-up too
    rank0 = os.environ.get("RANK", "0") == "0"
    with Heartbeat(command, progress=rank0, started=started) as heartbeat:
        heartbeat.stage("starting", since=started)
        yield


def _error(message: str) -> int:
    """Print ``error: MESSAGE`` on stderr in one write, so that the lines of several processes
    sharing it (``--nproc``) do not interleave (``print`` writes the newline apart), and return
    the exit status of bad input, 2."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return 2


def main(argv: list[str] | None = None) -> int:
    entry_point = argv is None  # the process's command line, not a caller's list
    argv = sys.argv[1:] if argv is None else list(argv)
    # the heartbeat first: sizing the thread pools and building the parser import torch, which
    # takes seconds on a busy machine
    with _early_heartbeat(argv, entry_point):
        try:
            # thread pools are sized when NumPy/PyTorch load: before the parser imports them
            from recfunnel.threads import set_threads

            threads = _flag_value(argv, "--threads")
            set_threads(int(threads) if threads and threads.lstrip("-").isdigit() else None)
        except RecfunnelError as exc:
            return _error(str(exc))
        parser = build_parser(argv)
        args = parser.parse_args(argv)
        args.argv = argv  # --nproc relaunches the same command
        try:
            return args.func(args)
        except (RecfunnelError, TrainingError) as exc:
            return _error(exc.for_cli() if isinstance(exc, RecfunnelError) else str(exc))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            return 0
        except (MemoryError, RuntimeError) as exc:  # an allocation too large, else a bug
            asked = out_of_memory(exc)
            if asked is None:
                raise
            size = f" (an allocation of {asked})" if asked else ""
            return _error(
                f"out of memory{size}; lower --batch-size, --dim or the model's sizes "
                "(recfunnel train --model M --help), or use a machine with more memory"
            )
        except OSError as exc:  # a user's file or folder: missing, unreadable, a folder, disk full
            where = f" ({exc.filename})" if exc.filename else ""
            return _error(f"{exc.strerror or exc}{where}; check the path and its permissions")


if __name__ == "__main__":
    sys.exit(main())
