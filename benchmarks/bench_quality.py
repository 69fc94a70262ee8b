"""Quality on several datasets (#12): every model's default and tuned scores, EASE, implicit.

    python benchmarks/bench_quality.py                      # all datasets, writes docs/quality.md
    python benchmarks/bench_quality.py --datasets ml100k --tune-budget 60 --auto-budget 300

Per dataset: each retrieval model with its ``default`` preset, then tuned (``recfunnel.tuning``:
Optuna on a validation split carved from the training rows, ``--tune-budget`` seconds per model)
and refitted on all training rows, ``--model auto`` (``--auto-budget``), and implicit's ALS
(peer venv, ``RECFUNNEL_PEER_PYTHON``; skipped with a note if missing). Test rows are scored once,
after every choice is made.

* ``ml100k``: the TFRS seeded 80/20 split of MovieLens 100k, titles as keys; filtered
  Recall@10 / NDCG@10 (training items excluded) and TFRS's FactorizedTopK@100 (all items).
* ``ml1m``: ML-1M sequences with the protocol of ``ml-1m-sasrec/README.md`` (train on
  ``train/input.txt``, score the 512 validation users from their ``val/input.txt`` histories);
  tuning looks at each training user's last training item only.
* ``synthetic``: power-law data with cluster structure (3,000 users, 2,000 items, 90k rows),
  seeded 80/20.
* ``ml1m-small`` and ``synthetic-small``: look-alikes of the set #12 is checked on (a few hundred
  users, several times ML-100k's catalogue, many items with 1-3 rows; seeded 80/20, all rows as
  interactions, filtered Recall@10): 600 seeded random ML-1M users with the items they touched,
  and 600 x ~9,300 synthetic power-law data (``quality_data.ml1m_small`` / ``synthetic_small``).
  Model ``ease-200`` is #12's baseline (EASE, lambda 200, plain Gram); with it in the run, the
  table is followed by #12's three targets read against it.
* ``folds``: ML-100k u1..u5 for rating models (RMSE, mean over the five folds).

Threads: torch 1 thread, OMP/MKL/OpenBLAS 1 (set before imports). The machine is shared with
other jobs, so fit times are noisy: compare within a table.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_data as qd  # noqa: E402
from common import REPO, machine, table, write_section  # noqa: E402
from recfunnel.config import EASEConfig  # noqa: E402
from recfunnel.metrics import evaluate_scores, factorized_key, rating_metrics  # noqa: E402
from recfunnel.models import model_class  # noqa: E402
from recfunnel.models.ease import ease_fits  # noqa: E402
from recfunnel.presets import preset  # noqa: E402
from recfunnel.training import deadline  # noqa: E402
from recfunnel.tuning import auto, tune  # noqa: E402

BASELINE = "ease-200"  # #12's EASE (lambda 200, plain Gram): the targets are read against it
RETRIEVAL = ("most-popular", "rp3beta", "ease", "wals", "bpr", "two-tower", "sequential")
PEER = Path(os.environ.get("RECFUNNEL_PEER_PYTHON", "/work/peers/implicit/bin/python"))


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def load() -> str:
    """The 1-, 5- and 15-minute load averages (the machine is shared)."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


# ------------------------------------------------------------------------------ datasets
class Task:
    """A dataset: train rows, how to carve validation, how to score a fitted model."""

    name = ""
    sequential = False

    def score(self, model) -> dict:
        raise NotImplementedError


class RandomSplit(Task):
    def __init__(self, name: str, train, test) -> None:
        self.name, self.train, self.test = name, train, test

    def score(self, model) -> dict:
        m = evaluate_scores(model.score, self.train, self.test, factorized_ks=(100,),
                            ranking_ks=(10,))  # fmt: skip
        return {"recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
                "top100": m[factorized_key(100)]}  # fmt: skip

    def score_factors(self, users_f, items_f) -> dict:
        uf, itf = torch.as_tensor(users_f), torch.as_tensor(items_f)
        m = evaluate_scores(lambda u: uf[torch.as_tensor(u)] @ itf.T, self.train, self.test,
                            factorized_ks=(100,), ranking_ks=(10,))  # fmt: skip
        return {"recall@10": m["recall@10"], "ndcg@10": m["ndcg@10"],
                "top100": m[factorized_key(100)]}  # fmt: skip


class SequenceTask(Task):
    sequential = True

    def __init__(self) -> None:
        self.name = "ml1m"
        self.seq = qd.ml1m_sequences()
        self.train = self.seq.train

    def score(self, model) -> dict:
        with torch.no_grad():
            scores = qd.history_scores(model, self.seq.histories, self.seq.val_users)
        return qd.sequence_metrics(scores, self.seq.histories, self.seq.targets)

    def score_factors(self, users_f, items_f) -> dict:
        # implicit: the trained user's factors (its fold-in is not used here)
        scores = (
            torch.as_tensor(users_f)[torch.as_tensor(self.seq.val_users)]
            @ torch.as_tensor(items_f).T
        )
        return qd.sequence_metrics(scores, self.seq.histories, self.seq.targets)


def make_task(name: str) -> Task:
    if name == "ml100k":
        return RandomSplit("ml100k", *qd.ml100k_seed())
    if name == "synthetic":
        return RandomSplit("synthetic", *qd.synthetic())
    if name == "ml1m":
        return SequenceTask()
    if name == "ml1m-small":
        return RandomSplit(name, *qd.ml1m_small())
    if name == "synthetic-small":
        return RandomSplit(name, *qd.synthetic_small())
    raise SystemExit(f"unknown dataset {name!r}")


# -------------------------------------------------------------------------------- runs
def fit_and_score(task: Task, kind: str, params) -> dict:
    model = model_class(kind)(params)  # a config, or its dict
    started, cpu = time.perf_counter(), time.process_time()
    model.fit(task.train)
    seconds = time.perf_counter() - started
    return {**task.score(model), "fit_s": seconds, "cpu_s": time.process_time() - cpu,
            "load": load()}  # fmt: skip


def run_implicit(task: Task, tmp: Path) -> dict | None:
    if not PEER.exists():
        log(f"implicit skipped: no peer python at {PEER}")
        return None
    npz = tmp / f"{task.name}.npz"
    train = task.train
    np.savez(npz, users=train.users, items=train.items, num_users=train.num_users,
             num_items=train.num_items)  # fmt: skip
    out = tmp / f"implicit-{task.name}"
    script = REPO / "benchmarks" / "peers" / "implicit_als.py"
    subprocess.run([str(PEER), str(script), "--train-npz", str(npz), "--out", str(out),
                    "--factors", "32", "--iterations", "15", "--threads", "1"],
                   check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    result = json.loads((out / "result.json").read_text())
    metrics = task.score_factors(np.load(out / "user_factors.npy"),
                                 np.load(out / "item_factors.npy"))  # fmt: skip
    return {**metrics, "fit_s": result["fit_seconds"], "version": result["versions"]["implicit"],
            "load": load()}  # fmt: skip


def bench_dataset(task: Task, args, tmp: Path, rows: list | None = None) -> list[dict]:
    """Rows of one dataset's table, appended to ``rows`` as they come (``--json`` is rewritten
    after each, so a long run that is stopped keeps what it measured)."""
    rows = [] if rows is None else rows
    fit, validation = qd.tuning_split(task.train, sequential=task.sequential)
    kinds = [k for k in args.models if k in RETRIEVAL]
    for kind in args.models:  # in the order given: cheap ones first on large data
        if kind == "implicit":
            log(f"{task.name}: implicit ALS")
            peer = run_implicit(task, tmp)
            if peer is not None:
                version = peer.pop("version")
                rows.append({"model": f"implicit ALS {version}", "setting": "32 factors, 15 it",
                             **peer})  # fmt: skip
            continue
        if kind in ("ease", "rp3beta", BASELINE) and not ease_fits(task.train.num_items):
            continue
        if kind == BASELINE:  # #12's reference: Steck's closed form, lambda 200, plain Gram
            log(f"{task.name}: EASE lambda=200")
            scored = fit_and_score(task, "ease", EASEConfig(regularization=200.0))
            rows.append({"model": "EASE λ=200", "setting": "plain Gram (#12's baseline)", **scored})
            continue
        if kind == "sequential" and (task.sequential or task.train.timestamps is None):
            continue  # ML-1M: docs/sequential.md (bench_sequential.py) measures it
        params = preset(kind, "default")
        if kind not in args.tuned_only.split(","):
            log(f"{task.name}: {kind} default")
            rows.append({"model": kind, "setting": "default", **fit_and_score(task, kind, params)})
        if args.tune_budget > 0 and model_class(kind).search_space:
            log(f"{task.name}: {kind} tuned ({args.tune_budget:.0f} s)")
            result = tune(kind, fit, validation, budget=args.tune_budget, metric=args.metric,
                          seed=0, log=log)  # fmt: skip
            scored = fit_and_score(task, kind, result.best_params)
            trials = sum(1 for t in result.trials if t["state"] == "complete")
            pruned = sum(1 for t in result.trials if t["state"] == "pruned")
            note = f", {pruned} pruned" if pruned else ""
            rows.append({"model": kind, "setting": f"tuned ({trials} trials{note}, "
                         f"{result.seconds:.0f} s)", **scored,
                         "params": result.best_params})  # fmt: skip
    if args.auto_budget > 0:
        log(f"{task.name}: auto ({args.auto_budget:.0f} s)")
        started, cpu = time.perf_counter(), time.process_time()
        kind, params, board = auto(fit, validation, budget=args.auto_budget, metric=args.metric,
                                   candidates=kinds, log=log, started=started)  # fmt: skip
        search = time.perf_counter() - started
        with deadline(started + args.auto_budget):  # the refit is inside the budget too
            scored = fit_and_score(task, kind, params)
        total = time.perf_counter() - started
        rows.append({"model": "auto", "setting": f"{_describe(kind, params)}; search {search:.0f}"
                     f" s + refit = {total:.0f} s wall of {args.auto_budget:.0f}", **scored,
                     "cpu_s": time.process_time() - cpu, "auto_s": total,
                     "params": {"chosen": kind, **params}, "leaderboard": board})  # fmt: skip
    return rows


def _describe(kind: str, params: dict) -> str:
    if kind != "blend":
        return kind
    parts = [f"{m['model']} {w:.2f}" for m, w in zip(params["members"], params["weights"],
                                                     strict=True)]  # fmt: skip
    return "blend of " + " + ".join(parts)


def bench_folds(args) -> list[dict]:
    rows = []
    explicit_wals = preset("wals", "default").override(
        feedback="explicit", regularization=0.05, reg_exponent=1.0
    )
    for kind, params in (("sgd-mf", preset("sgd-mf", "default")), ("wals", explicit_wals)):
        errors, seconds = [], 0.0
        for fold in ("u1", "u2", "u3", "u4", "u5"):
            train, test = qd.ml100k_fold(fold)
            model = model_class(kind)(params)
            started = time.perf_counter()
            model.fit(train)
            seconds += time.perf_counter() - started
            errors.append(rating_metrics(model.predict(test.users, test.items), test.ratings))
        log(f"folds: {kind} done")
        rows.append({"model": kind, "setting": "default" if kind == "sgd-mf" else "explicit",
                     "rmse": float(np.mean([e["rmse"] for e in errors])),
                     "mae": float(np.mean([e["mae"] for e in errors])),
                     "fit_s": seconds / 5})  # fmt: skip
    return rows


COLUMNS = [("model", "model", ""), ("setting", "setting", ""), ("Recall@10", "recall@10", ".4f"),
           ("NDCG@10", "ndcg@10", ".4f"), ("FactorizedTopK@100", "top100", ".4f"),
           ("fit s", "fit_s", ".1f"), ("fit CPU s", "cpu_s", ".1f"),
           ("load 1/5/15 min", "load", "")]  # fmt: skip
SEQ_COLUMNS = [c for c in COLUMNS if c[1] != "top100"]
FOLD_COLUMNS = [("model", "model", ""), ("setting", "setting", ""), ("RMSE", "rmse", ".4f"),
                ("MAE", "mae", ".4f"), ("fit s (per fold)", "fit_s", ".1f")]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml100k,synthetic,ml1m,folds")
    parser.add_argument("--models", default=",".join([*RETRIEVAL, "implicit"]))
    parser.add_argument("--tune-budget", type=float, default=60.0, help="seconds per model")
    parser.add_argument("--auto-budget", type=float, default=300.0)
    parser.add_argument(
        "--tuned-only",
        default="",
        help="models measured tuned only (their budget bounds them), no default",
    )
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--json", type=Path, help="also write every row here")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument(
        "--render",
        type=Path,
        nargs="+",
        help="write docs from the --json files of earlier runs, fit nothing",
    )
    args = parser.parse_args()
    if args.render:
        for path in args.render:
            saved = json.loads(path.read_text())
            meta = saved.pop("_meta", {})
            for name, rows in saved.items():
                render(name, rows, not args.no_docs, meta.get("command"), meta.get("machine"))
        return
    args.models = args.models.split(",")
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets.split(","):
            if name == "folds":
                rows = bench_folds(args)
            else:
                rows = results[name] = _Saving(args.json, results)
                bench_dataset(make_task(name), args, Path(tmp), rows)
                rows = list(rows)
            results[name] = rows
            results["_meta"] = {"command": command(), "machine": machine()}
            if args.json:
                args.json.write_text(json.dumps(results, indent=1, default=str))
            render(name, rows, not args.no_docs, command(), machine())


class _Saving(list):
    """A list of rows that rewrites the ``--json`` file whenever a row is added."""

    def __init__(self, path: Path | None, results: dict) -> None:
        super().__init__()
        self.path, self.results = path, results

    def append(self, row) -> None:
        super().append(row)
        if self.path is not None:
            self.results["_meta"] = {"command": command(), "machine": machine()}
            self.path.write_text(json.dumps(self.results, indent=1, default=str))


def command() -> str:
    return " ".join(["python", "benchmarks/bench_quality.py", *sys.argv[1:]])


def render(name: str, rows: list[dict], docs: bool, command=None, machine_line=None) -> None:
    """Print one dataset's table and write it, under the command that measured it, to
    docs/quality.md. ``command`` may be a list: rows merged from several runs (each row's
    ``run`` is its command's number there, from 1)."""
    columns = {"folds": FOLD_COLUMNS, "ml1m": SEQ_COLUMNS}.get(name, COLUMNS)
    if isinstance(command, list):
        columns = [*columns, ("run", "run", "")]
    text = table(rows, columns)
    if any(r["model"] == "EASE λ=200" for r in rows):
        text += "\n\n" + targets(rows)
    print(f"\n## {name}\n\n{text}\n", flush=True)
    if docs:
        if isinstance(command, list):  # rows from several runs: name each
            where = "; ".join(f"run {i + 1}: `{c}`" for i, c in enumerate(command))
            where += f" ({machine_line}; the last column is each row's run)"
        else:
            where = f"`{command}` ({machine_line})" if command else "(command not recorded)"
        write_section("quality.md", f"quality-{name}", f"{where}\n\n{text}")


def targets(rows: list[dict], metric: str = "recall@10") -> str:
    """#12's three targets on this table: the best default within 5% of EASE (lambda 200),
    ``auto`` above it, BPR at least most-popular."""

    def score(model, setting="default"):
        found = [r[metric] for r in rows if r["model"] == model and r["setting"] == setting]
        return found[0] if found else None

    base = score("EASE λ=200", "plain Gram (#12's baseline)")
    defaults = {r["model"]: r[metric] for r in rows if r["setting"] == "default"}
    lines = [f"#12's targets (filtered Recall@10, baseline EASE λ=200 = {base:.4f}):", ""]
    if defaults:
        best = max(defaults, key=defaults.get)
        others = {k: v for k, v in defaults.items() if k != "ease"}
        rest = max(others, key=others.get) if others else None
        verdict = "holds" if defaults[best] >= 0.95 * base else "fails"
        line = (f"- best default within 5% of EASE: **{verdict}** ({best} {defaults[best]:.4f},"
                f" {defaults[best] / base - 1:+.1%})")  # fmt: skip
        if rest and rest != best:
            line += f"; best default other than EASE: {rest} {others[rest]:.4f} "
            line += f"({others[rest] / base - 1:+.1%})"
        lines.append(line)
    chosen = [r for r in rows if r["model"] == "auto"]
    if chosen:
        a = chosen[0][metric]
        lines.append(f"- auto beats EASE: **{'holds' if a > base else 'fails'}** ({a:.4f}, "
                     f"{a / base - 1:+.1%})")  # fmt: skip
    bpr, popular = score("bpr"), score("most-popular")
    if bpr is not None and popular is not None:
        lines.append(f"- BPR >= most popular: **{'holds' if bpr >= popular else 'fails'}** "
                     f"({bpr:.4f} vs {popular:.4f})")  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    main()
