"""Matrix-factorization benchmarks: recfunnel WALS / SGD-MF beside implicit and Surprise.

Each sub-command prints a table and writes it into its own section of ``docs/mf.md``::

    PYTHONPATH=src python benchmarks/bench_mf.py ml100k      # WALS vs implicit ALS, 80/20 split
    PYTHONPATH=src python benchmarks/bench_mf.py synthetic   # same at >= 20M interactions
    PYTHONPATH=src python benchmarks/bench_mf.py explicit    # RMSE/MAE on u1..u5 vs Surprise
    PYTHONPATH=src python benchmarks/bench_mf.py foldin      # held-out users: fold-in vs trained

Fit times come from child processes that each fit one model and report ``fit_seconds`` (the fit
call only) and ``peak_rss_mb`` the same way: ``benchmarks/peers/implicit_als.py`` in the peers'
virtualenv for implicit, ``bench_mf.py fit-wals`` for recfunnel. Both get the same thread count
(``--threads``; implicit's ``num_threads`` and ``torch.set_num_threads``). Every quality number
is computed here by :func:`recfunnel.metrics.evaluate_scores` from the dumped factors.

implicit 0.7 gives an observed cell confidence ``alpha * value`` (not ``1 + alpha * value``);
recfunnel's WALS uses the same convention, so at equal settings both minimise the same loss.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import PEER_PYTHON, REPO, machine, markdown_table, write_section

PEERS_PYTHON = str(PEER_PYTHON)
PEERS = REPO / "benchmarks" / "peers"


# ----------------------------------------------------------------------------- helpers
def save_npz(path: Path, data) -> None:
    np.savez(path, users=data.users, items=data.items, num_users=data.num_users,
             num_items=data.num_items)  # fmt: skip


def run_child(argv: list[str], repeats: int = 1) -> dict:
    """Run a fitting child ``repeats`` times; its result with the median ``fit_seconds``."""
    results = [_run_child(argv) for _ in range(repeats)]
    result = dict(results[-1])
    result["fit_seconds"] = float(np.median([r["fit_seconds"] for r in results]))
    if all("peak_rss_mb" in r for r in results):  # the Surprise runner reports no memory
        result["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    return result


def _run_child(argv: list[str]) -> dict:
    out = Path(argv[argv.index("--out") + 1])
    # Through a shell that forks (not execs) the command: a child exec'd straight from this
    # (large) process would report this process's peak RSS as its own ru_maxrss.
    subprocess.run(["sh", "-c", '"$@"; exit $?', "sh", *argv], check=True)
    return json.loads((out / "result.json").read_text())


def implicit_fit(train_arg: list[str], out: Path, args, reg: float, alpha: float) -> dict:
    return run_child([PEERS_PYTHON, str(PEERS / "implicit_als.py"), *train_arg, "--out", str(out),
                      "--factors", str(args.dim), "--regularization", str(reg),
                      "--iterations", str(args.iterations), "--alpha", str(alpha),
                      "--threads", str(args.threads), "--seed", "42"], args.repeats)  # fmt: skip


def wals_fit(npz: Path, out: Path, args, reg: float, alpha: float, solver: str,
             profile: bool = False) -> dict:  # fmt: skip
    """Fit WALS in a child, ``args.repeats`` times; ``profile``: once, under torch.profiler."""
    return run_child([sys.executable, __file__, "fit-wals", "--train-npz", str(npz), "--out",
                      str(out), "--dim", str(args.dim), "--regularization", str(reg),
                      "--alpha", str(alpha), "--iterations", str(args.iterations),
                      "--solver", solver, "--threads", str(args.threads),
                      *(["--profile"] if profile else [])],
                     1 if profile else args.repeats)  # fmt: skip


def factors(out: Path) -> tuple[np.ndarray, np.ndarray]:
    return np.load(out / "user_factors.npy"), np.load(out / "item_factors.npy")


def recall_at_10(X: np.ndarray, Y: np.ndarray, train, test, users=None) -> float:
    from recfunnel.metrics import evaluate_scores

    Xt, Yt = torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(Y, dtype=torch.float32)
    metrics = evaluate_scores(lambda u: Xt[torch.as_tensor(u)] @ Yt.T, train, test,
                              factorized_ks=(), ranking_ks=(10,), users=users)  # fmt: skip
    return metrics["recall@10"]


# ------------------------------------------------------------------- child: one WALS fit
def cmd_fit_wals(args) -> None:
    from recfunnel.data import Interactions
    from recfunnel.models import WALS, als_kernels

    if args.solver == "cg-torch":  # the all-rows torch CG instead of the fused numba kernel
        als_kernels.AVAILABLE = False
        args.solver = "cg"
    if args.threads:
        torch.set_num_threads(args.threads)
    raw = np.load(args.train_npz)
    data = Interactions(raw["users"], raw["items"], int(raw["num_users"]), int(raw["num_items"]))
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    model = WALS(dim=args.dim, regularization=args.regularization, alpha=args.alpha,
                 epochs=args.iterations, solver=args.solver, seed=42)  # fmt: skip
    profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
    started = time.perf_counter()
    with profiler if args.profile else contextlib.nullcontext():
        model.fit(data)
    fit_seconds = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    np.save(args.out / "user_factors.npy", model.user_factors_.numpy())
    np.save(args.out / "item_factors.npy", model.item_factors_.numpy())
    result = {"library": "recfunnel", "fit_seconds": fit_seconds,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "peak_rss_mb_before_fit": rss_before, "threads": torch.get_num_threads(),
              "solver": args.solver, "loss": model.training_log_.epochs[-1]["loss"]}  # fmt: skip
    if args.profile:
        result["profile"] = profile_rows(profiler, fit_seconds)
    (args.out / "result.json").write_text(json.dumps(result, indent=2) + "\n")


def profile_rows(profiler, total: float, top: int = 8) -> list[list]:
    """The ``top`` torch operators by self time: ``[operator, calls, seconds, share of fit]``.

    A WALS fit runs a few thousand large operators, so the profiler's overhead is small.
    """
    events = sorted(profiler.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]
    return [[e.key, e.count, round(e.self_cpu_time_total / 1e6, 2),
             round(e.self_cpu_time_total / 1e6 / total, 3)] for e in events]  # fmt: skip


# --------------------------------------------------------------------------- comparisons
def compare(name, title, train, test, args, tmp: Path, settings, implicit_input, users=None):
    npz = tmp / "train.npz"
    save_npz(npz, train)
    rows, profiles = [], []
    for label, reg, alpha in settings:
        implicit = implicit_fit(implicit_input(tmp), tmp / "implicit", args, reg, alpha)
        X, Y = implicit_factors(tmp / "implicit", train)
        rec_implicit = recall_at_10(X, Y, train, test, users)
        rows.append([label, "implicit ALS (cg)", reg, alpha, rec_implicit,
                     implicit["fit_seconds"], 1.0, implicit["peak_rss_mb"],
                     implicit["peak_rss_mb_before_fit"]])  # fmt: skip
        for solver in args.solvers.split(","):
            ours = wals_fit(npz, tmp / f"wals-{solver}", args, reg, alpha, solver)
            X, Y = factors(tmp / f"wals-{solver}")
            if args.profile:  # one more fit, not timed above: the profiler slows it down
                traced = wals_fit(npz, tmp / "profile", args, reg, alpha, solver, profile=True)
                profiles.append((f"recfunnel WALS ({solver}), {label}", traced))
            rows.append([label, f"recfunnel WALS ({solver})", reg, alpha,
                         recall_at_10(X, Y, train, test, users), ours["fit_seconds"],
                         ours["fit_seconds"] / implicit["fit_seconds"],
                         ours["peak_rss_mb"], ours["peak_rss_mb_before_fit"]])  # fmt: skip
    headers = ["settings", "model", "regularization", "alpha", "recall@10", "fit s",
               "fit / implicit", "peak RSS MB", "RSS MB before fit"]  # fmt: skip
    text = markdown_table(headers, rows)
    text += (
        f"\n\n{args.dim} factors, {args.iterations} iterations, {args.threads or 'all'} "
        f"threads each, median fit time of {args.repeats} runs; {machine()}."
    )
    for model, traced in profiles:
        text += (
            f"\n\nWhere the time of the {model} fit goes: torch.profiler, self time of the "
            f"top operators in a separate profiled fit ({traced['fit_seconds']:.1f} s with the "
            f"profiler on):\n\n"
            + markdown_table(["operator", "calls", "seconds", "share of fit"], traced["profile"])
        )
    print(text)
    write_section("mf.md", name, f"### {title}\n\n{text}")


def implicit_factors(out: Path, train) -> tuple[np.ndarray, np.ndarray]:
    """implicit's factors in recfunnel's index order (TSV input numbers ids by appearance)."""
    X, Y = factors(out)
    if not (out / "user_ids.txt").exists():
        return X, Y
    user_rows = [int(line) for line in (out / "user_ids.txt").read_text().split("\n") if line]
    item_rows = [int(line) for line in (out / "item_ids.txt").read_text().split("\n") if line]
    Xf = np.zeros((train.num_users, X.shape[1]), np.float32)
    Yf = np.zeros((train.num_items, Y.shape[1]), np.float32)
    Xf[user_rows], Yf[item_rows] = X, Y
    return Xf, Yf


def settings_from(args) -> list[tuple[str, float, float]]:
    from recfunnel.presets import preset

    tuned = preset("wals", "default")
    out = [("implicit defaults", 0.01, 1.0)]
    if (tuned.regularization, tuned.alpha) != (0.01, 1.0):
        out.append(("recfunnel default preset", tuned.regularization, tuned.alpha))
    return out


def write_tsv(path: Path, data) -> None:
    """Dense indices as the raw ids, so implicit's ids map straight back to our rows."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("user\titem\trating\ttimestamp\n")
        ones = np.ones_like(data.users)
        columns = np.stack([data.users, data.items, ones, 0 * ones], 1)
        np.savetxt(fh, columns, fmt="%d", delimiter="\t")


def cmd_ml100k(args) -> None:
    from recfunnel.data import sources
    from recfunnel.data.sources import DataSpec

    _, train, test = sources.load(DataSpec())  # movielens-100k, titles, random 80/20, seed 42
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_tsv(tmp / "train.tsv", train)
        compare("ml100k", "MovieLens 100k, seeded random 80/20 split (DataSpec defaults)",
                train, test, args, tmp, settings_from(args),
                lambda t: ["--train", str(t / "train.tsv")])  # fmt: skip


def cmd_synthetic(args) -> None:
    from recfunnel.data.splits import random_split
    from recfunnel.data.synthetic import power_law

    started = time.perf_counter()
    data = power_law(args.users, args.items, args.interactions, seed=0)
    print(f"generated {data!r} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    train, test = random_split(data, 0.05, seed=42)
    del data
    test_users = np.flatnonzero(test.user_counts())
    users = np.random.default_rng(0).choice(test_users, min(args.eval_users, len(test_users)),
                                            replace=False)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        title = (f"Synthetic power law: {train.num_users} users x {train.num_items} items, "
                 f"{len(train)} training rows (recall on {len(users)} sampled users)")  # fmt: skip
        compare("synthetic", title, train, test, args, tmp, [("implicit defaults", 0.01, 1.0)],
                lambda t: ["--train-npz", str(t / "train.npz")], users=np.sort(users))  # fmt: skip


def cmd_explicit(args) -> None:
    from recfunnel.data import sources
    from recfunnel.data.sources import DataSpec
    from recfunnel.experiment import build_model
    from recfunnel.metrics import rating_metrics

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    per_model: dict[str, list] = {}
    for fold in args.folds.split(","):
        dataset, train, test = sources.load(DataSpec(split=fold, item_key="id"))
        models = {"recfunnel SGD-MF (default preset)": build_model("sgd-mf", "default"),
                  "recfunnel explicit WALS": build_model(
                      "wals", "default", feedback="explicit", dim=8, regularization=0.1,
                      reg_exponent=1.0, solver="cholesky")}  # fmt: skip
        for name, model in models.items():
            started = time.perf_counter()
            model.fit(train)
            seconds = time.perf_counter() - started
            m = rating_metrics(model.predict(test.users, test.items), test.ratings)
            rows.append([fold, name, m["rmse"], m["mae"], seconds])
            per_model.setdefault(name, []).append(m["rmse"])
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for part, data in (("train", train), ("test", test)):
                with open(tmp / f"{part}.tsv", "w", encoding="utf-8") as fh:
                    fh.write("user\titem\trating\ttimestamp\n")
                    for u, i, r in zip(data.users, data.items, data.ratings, strict=True):
                        fh.write(f"{dataset.users.ids[u]}\t{dataset.items.ids[i]}\t{r:g}\t0\n")
            for algo in [a for a in args.peers.split(",") if a]:
                out = tmp / algo
                result = run_child([PEERS_PYTHON, str(PEERS / "surprise_mf.py"), "--train",
                                    str(tmp / "train.tsv"), "--test", str(tmp / "test.tsv"),
                                    "--out", str(out), "--algo", algo])  # fmt: skip
                lines = (out / "predictions.tsv").read_text().splitlines()[1:]
                predicted = np.array([float(line.split("\t")[3]) for line in lines])
                m = rating_metrics(predicted, test.ratings)
                name = f"Surprise {algo.upper()} (defaults)"
                rows.append([fold, name, m["rmse"], m["mae"], result["fit_seconds"]])
                per_model.setdefault(name, []).append(m["rmse"])
    for name, values in per_model.items():
        rows.append(["mean", name, float(np.mean(values)), "", ""])
    text = markdown_table(["fold", "model", "rmse", "mae", "fit s"], rows)
    print(text)
    write_section("mf.md", "explicit", "### Explicit ratings, MovieLens 100k folds (item ids)\n\n"
                  f"{text}\n\nPredictions unclipped for recfunnel, clipped to [1, 5] by "
                  f"Surprise; {machine()}.")  # fmt: skip


def cmd_foldin(args) -> None:
    from recfunnel.data import sources
    from recfunnel.data.sources import DataSpec
    from recfunnel.data.splits import holdout_users, random_split
    from recfunnel.models import WALS
    from recfunnel.presets import preset

    dataset = sources.load_dataset(DataSpec())
    rest, held = holdout_users(dataset.interactions, 0.1, seed=0)
    history, test = random_split(held, 0.5, seed=42)
    params = preset("wals", "default")
    folded = WALS(params).fit(rest)
    held_users = np.flatnonzero(history.user_counts())
    X = np.zeros((dataset.interactions.num_users, params.dim), np.float32)
    for u in held_users:
        X[u] = folded.fold_in(history.items[history.users == u])[0].numpy()
    recall_fold = recall_at_10(X, folded.item_factors_.numpy(), history, test)
    trained = WALS(params).fit(rest.concat(history))
    recall_trained = recall_at_10(trained.user_factors_.numpy(), trained.item_factors_.numpy(),
                                  history, test)  # fmt: skip
    rows = [
        ["trained with them (history in training)", recall_trained, 1.0],
        ["folded in (trained without them)", recall_fold, recall_fold / recall_trained],
    ]
    text = markdown_table(["held-out users' recall@10", "recall@10", "ratio"], rows)
    print(text)
    write_section("mf.md", "foldin", "### Folding in held-out users (MovieLens 100k, titles)\n\n"
                  f"10% of users held out (`holdout_users`, seed 0); each one's rows split "
                  f"50/50 (seed 42) into history and test; WALS `default` preset "
                  f"{params}.\n\n{text}\n\n{machine()}.")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--dim", type=int, default=32)
        p.add_argument("--iterations", type=int, default=15)
        p.add_argument("--threads", type=int, default=0, help="0 = all cores")
        p.add_argument(
            "--solvers",
            default="cg,cholesky",
            help="cg (fused numba kernel where installed), cg-torch, cholesky",
        )
        p.add_argument("--repeats", type=int, default=3, help="fits per model; median time")
        p.add_argument("--profile", action="store_true", help="torch.profiler on each WALS fit")

    common(p := sub.add_parser("ml100k"))
    p.set_defaults(func=cmd_ml100k)
    common(p := sub.add_parser("synthetic"))
    p.add_argument("--users", type=int, default=1_000_000)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--interactions", type=int, default=21_500_000)
    p.add_argument("--eval-users", type=int, default=5000)
    p.set_defaults(func=cmd_synthetic, solvers="cg")
    p = sub.add_parser("explicit")
    p.add_argument("--folds", default="u1,u2,u3,u4,u5")
    p.add_argument("--peers", default="svd,svdpp")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave)")
    p.set_defaults(func=cmd_explicit)
    p = sub.add_parser("foldin")
    p.set_defaults(func=cmd_foldin)
    p = sub.add_parser("fit-wals", help="(internal) fit one WALS in this process")
    p.add_argument("--train-npz", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--regularization", type=float, default=0.01)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--iterations", type=int, default=15)
    p.add_argument("--solver", default="cg")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--profile", action="store_true")
    p.set_defaults(func=cmd_fit_wals)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
