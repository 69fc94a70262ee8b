"""Scale: time and peak memory of each step vs the number of rows, against issue #11's targets.

    PYTHONPATH=src python benchmarks/bench_scale.py --sizes 1M,4M,20M --threads 2

Synthetic data from ``recfunnel synth`` (power law; 20M = 1M users x 200k items, smaller sizes
scaled down in proportion). Every step runs as its own process under ``/usr/bin/time`` (its peak
RSS is that process's); the timed part is what the step reports (``fit_seconds``,
``eval_seconds``, the ingest call), the wall time of the process is kept beside it:

* ingest: Parquet -> interactions + vocabularies (``data.io.dataset_from_files``) in a child;
* WALS: ``recfunnel train --model wals --preset seed`` (implicit's settings), evaluated on the
  default seeded sample of 10,000 test users; implicit ALS on the same training split with the
  same threads in the same run (``benchmarks/peers/implicit_als.py``), its recall@10 on the same
  users;
* evaluation, all users: ``recfunnel evaluate RUN --eval-users all`` (or a seeded sample of
  ``--all-users-cap`` users, the time scaled up linearly and marked so, where the full pass would
  not fit the session);
* two-tower ``default``: ``recfunnel train --model two-tower --preset default`` with a time limit;
* torchrun 2 vs 1: where ``recfunnel train`` has ``--nproc``.

Results accumulate in ``benchmarks/results/scale.json`` (one entry per size and step, re-runs
replace), and the table and the log-log plot in ``docs/scale.md`` / ``docs/img/scale.png`` are
redrawn from all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import DOCS, PEER_PYTHON, REPO, machine, markdown_table, write_section

RESULTS = REPO / "benchmarks" / "results" / "scale.json"
SIZES = {  # rows -> (users, items): 20 rows per user, 5 users per item, as 1M x 200k at 20M
    "1M": (50_000, 10_000, 1_000_000),
    "4M": (200_000, 40_000, 4_000_000),
    "20M": (1_000_000, 200_000, 20_000_000),
}
TARGETS = {  # step -> target at 20M rows (issue #11)
    "ingest": "<= 20 s, <= 1.5 GB",
    "two-tower default fit": "<= 10 min, <= 4 GB, recall@10 >= WALS's",
    "WALS fit": "<= 1.0x implicit's time, <= 1.5x its memory, equal recall@10",
    "evaluation, 10k sampled users": "<= 30 s",
    "evaluation, all users": "<= WALS fit time",
    "torchrun 2 vs 1": "same recall@10 within 0.005",
}


# ------------------------------------------------------------------------------- children
def timed(argv: list[str], env: dict, timeout: float | None = None) -> dict:
    """Run ``argv`` under /usr/bin/time: wall seconds, peak RSS MB, stdout, return code."""
    with tempfile.NamedTemporaryFile(suffix=".time") as report:
        started = time.perf_counter()
        try:
            done = subprocess.run(
                ["/usr/bin/time", "-f", "%M", "-o", report.name, *argv],
                env=env, capture_output=True, text=True, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return {"timeout": timeout, "wall_seconds": time.perf_counter() - started}
        wall = time.perf_counter() - started
        lines = Path(report.name).read_text().split()
    rss = float(lines[-1]) / 1024 if lines and lines[-1].isdigit() else None
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
    return {"wall_seconds": wall, "peak_rss_mb": rss, "stdout": done.stdout,
            "returncode": done.returncode}  # fmt: skip


def child_ingest(args) -> None:
    """One ingest, timed inside (imports excluded), as JSON on stdout."""
    from recfunnel.data.io import Columns, dataset_from_files

    started = time.perf_counter()
    dataset, _ = dataset_from_files(args.file, Columns())
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": len(dataset.interactions),
                      "users": len(dataset.users), "items": len(dataset.items)}))  # fmt: skip


def child_split(args) -> None:
    """The training split ``recfunnel train`` makes (random 80/20, seed 42) as an npz, and the
    10k evaluation sample's test rows, for the implicit peer."""
    import numpy as np

    from recfunnel.data.sources import DataSpec, load

    _, train, test = load(DataSpec(dataset=None, train=str(args.file)))
    np.savez(args.out / "train.npz", users=train.users, items=train.items,
             num_users=train.num_users, num_items=train.num_items)  # fmt: skip
    np.savez(args.out / "test.npz", users=test.users, items=test.items)


def child_recall(args) -> None:
    """recall@10 of implicit's factors on the default 10k sample (seed 42, as ``train``)."""
    import numpy as np
    import torch

    from recfunnel.data import Interactions
    from recfunnel.metrics import choose_users, dot_scorer, evaluate_scores

    raw, held = np.load(args.out / "train.npz"), np.load(args.out / "test.npz")
    shape = int(raw["num_users"]), int(raw["num_items"])
    train = Interactions(raw["users"], raw["items"], *shape)
    test = Interactions(held["users"], held["items"], *shape)
    X = torch.as_tensor(np.load(args.out / "implicit" / "user_factors.npy"))
    Y = torch.as_tensor(np.load(args.out / "implicit" / "item_factors.npy"))
    users, _ = choose_users(test, None, seed=42)
    metrics = evaluate_scores(dot_scorer(lambda u: X[torch.as_tensor(u)], Y), train, test,
                              users=users, factorized_ks=(), ranking_ks=(10,))  # fmt: skip
    print(json.dumps({"recall@10": metrics["recall@10"]}))


# ---------------------------------------------------------------------------- the steps
def run_size(name: str, args, env: dict, results: dict) -> None:
    users, items, rows = SIZES[name]
    work = Path(args.work) / name
    work.mkdir(parents=True, exist_ok=True)
    data = work / "data.parquet"
    me = [sys.executable, str(Path(__file__).resolve())]
    recfunnel = [sys.executable, "-m", "recfunnel.cli"]
    threads = str(args.threads)

    def record(step: str, entry: dict) -> None:
        entry = {k: v for k, v in entry.items() if k != "stdout"}
        results.setdefault(name, {})[step] = entry
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(f"{name} {step}: {json.dumps(entry)}", file=sys.stderr, flush=True)

    if not data.exists():
        out = timed([*recfunnel, "synth", "--users", str(users), "--items", str(items),
                     "--interactions", str(rows), "--out", str(data)], env)  # fmt: skip
        record("synth", {"seconds": out["wall_seconds"], "peak_rss_mb": out["peak_rss_mb"]})
    steps = args.steps.split(",")
    if "ingest" in steps:
        out = timed([*me, "child-ingest", str(data)], env)
        info = json.loads(out["stdout"])
        record("ingest", {**info, "wall_seconds": out["wall_seconds"],
                          "peak_rss_mb": out["peak_rss_mb"]})  # fmt: skip
    run = work / "wals-run"
    if "wals" in steps:
        argv = ["train", "--train", str(data), "--model", "wals", "--preset", "seed", "--json",
                "--quiet", "--out", str(run), "--overwrite"]  # fmt: skip
        out = timed([*recfunnel, *argv], env)
        metrics = json.loads(out["stdout"])
        record("WALS fit", {"seconds": metrics["fit_seconds"], "recall@10": metrics["recall@10"],
                            "peak_rss_mb": out["peak_rss_mb"],
                            "wall_seconds": out["wall_seconds"]})  # fmt: skip
        record("evaluation, 10k sampled users", {"seconds": metrics["eval_seconds"],
                                                 "users": metrics["num_eval_users"]})  # fmt: skip
    if "implicit" in steps:
        timed([*me, "child-split", str(data), "--out", str(work)], env)
        out = timed([str(PEER_PYTHON), str(REPO / "benchmarks" / "peers" / "implicit_als.py"),
                     "--train-npz", str(work / "train.npz"), "--out", str(work / "implicit"),
                     "--factors", "32", "--regularization", "0.01", "--iterations", "15",
                     "--alpha", "1.0", "--threads", threads, "--seed", "42"], env)  # fmt: skip
        peer = json.loads((work / "implicit" / "result.json").read_text())
        recall = json.loads(timed([*me, "child-recall", "x", "--out", str(work)], env)["stdout"])
        record("implicit ALS fit", {"seconds": peer["fit_seconds"], **recall,
                                    "peak_rss_mb": out["peak_rss_mb"]})  # fmt: skip
    if "eval-all" in steps:
        cap = args.all_users_cap if name in args.cap_sizes.split(",") else 0
        out = timed([*recfunnel, "evaluate", str(run), "--json", "--eval-users",
                     str(cap) if cap else "all"], env)  # fmt: skip
        metrics = json.loads(out["stdout"])
        evaluation = metrics["evaluation"]
        entry = {"seconds": metrics["eval_seconds"], "users": metrics["num_eval_users"],
                 "test_users": evaluation["test_users"],
                 "peak_rss_mb": out["peak_rss_mb"]}  # fmt: skip
        if evaluation["users"] == "sample":  # scaled to all test users, and said so
            entry["measured_users"] = evaluation["sample_size"]
            entry["seconds"] *= evaluation["test_users"] / evaluation["sample_size"]
            entry["extrapolated"] = True
        record("evaluation, all users", entry)
    if "two-tower" in steps:
        out = timed([*recfunnel, "train", "--train", str(data), "--model", "two-tower",
                     "--preset", "default", "--json", "--quiet"], env,
                    timeout=args.two_tower_timeout)  # fmt: skip
        if "timeout" in out:
            record("two-tower default fit", {"timeout": out["timeout"]})
        else:
            metrics = json.loads(out["stdout"]) if out["returncode"] == 0 else {}
            record("two-tower default fit", {"seconds": metrics.get("fit_seconds"),
                                             "recall@10": metrics.get("recall@10"),
                                             "peak_rss_mb": out["peak_rss_mb"],
                                             "returncode": out["returncode"]})  # fmt: skip


# ------------------------------------------------------------------------- table and plot
def rows_of(results: dict) -> list[list]:
    order = ["synth", "ingest", "WALS fit", "implicit ALS fit", "evaluation, 10k sampled users",
             "evaluation, all users", "two-tower default fit"]  # fmt: skip
    out = []
    for name in sorted(results, key=lambda n: SIZES[n][2]):
        for step in order:
            entry = results[name].get(step)
            if entry is None:
                continue
            seconds = entry.get("seconds")
            if "timeout" in entry:
                shown = f"did not finish in {entry['timeout']:.0f} s"
            elif seconds is None:
                shown = "failed"
            else:
                shown = f"{seconds:.1f}" + (" (extrapolated)" if entry.get("extrapolated") else "")
            rss = entry.get("peak_rss_mb")
            extra = []
            if "recall@10" in entry and entry["recall@10"] is not None:
                extra.append(f"recall@10 {entry['recall@10']:.4f}")
            if "measured_users" in entry:
                extra.append(f"measured on {entry['measured_users']} of {entry['test_users']} "
                             "users, time scaled linearly")  # fmt: skip
            elif "users" in entry:
                extra.append(f"{entry['users']} users")
            out.append([name, step, shown, f"{rss:.0f}" if rss else "", "; ".join(extra),
                        TARGETS.get(step, "") if name == "20M" else ""])  # fmt: skip
    return out


def verdicts(results: dict) -> list[list]:
    """The 20M targets, met or not, from the stored results."""
    big = results.get("20M", {})
    out = []

    def get(step, key="seconds"):
        return big.get(step, {}).get(key)

    if get("ingest") is not None:
        ok = get("ingest") <= 20 and get("ingest", "peak_rss_mb") <= 1536
        out.append(["ingest", f"{get('ingest'):.1f} s, {get('ingest', 'peak_rss_mb'):.0f} MB",
                    "yes" if ok else "no"])  # fmt: skip
    if get("WALS fit") is not None and get("implicit ALS fit") is not None:
        t = get("WALS fit") / get("implicit ALS fit")
        m = get("WALS fit", "peak_rss_mb") / get("implicit ALS fit", "peak_rss_mb")
        r, ri = get("WALS fit", "recall@10"), get("implicit ALS fit", "recall@10")
        ok = t <= 1.0 and m <= 1.5 and r >= ri - 0.002
        out.append(["WALS fit vs implicit", f"{t:.2f}x time, {m:.2f}x memory (whole train "
                    f"process vs implicit's fit process), recall@10 {r:.4f} vs {ri:.4f}",
                    "yes" if ok else "no"])  # fmt: skip
    if get("evaluation, 10k sampled users") is not None:
        s = get("evaluation, 10k sampled users")
        out.append(["evaluation, 10k sampled", f"{s:.1f} s", "yes" if s <= 30 else "no"])
    if get("evaluation, all users") is not None and get("WALS fit") is not None:
        s, fit = get("evaluation, all users"), get("WALS fit")
        note = " (extrapolated)" if big["evaluation, all users"].get("extrapolated") else ""
        out.append(["evaluation, all users", f"{s:.0f} s{note} vs WALS fit {fit:.0f} s",
                    "yes" if s <= fit else "no"])  # fmt: skip
    if "two-tower default fit" in big:
        entry = big["two-tower default fit"]
        if "timeout" in entry or entry.get("seconds") is None:
            out.append(["two-tower default fit", "did not finish", "no"])
        else:
            ok = entry["seconds"] <= 600 and (entry["peak_rss_mb"] or 0) <= 4096
            ok = ok and entry["recall@10"] >= (get("WALS fit", "recall@10") or 0)
            out.append(["two-tower default fit", f"{entry['seconds']:.0f} s, "
                        f"{entry['peak_rss_mb']:.0f} MB, recall@10 {entry['recall@10']:.4f}",
                        "yes" if ok else "no"])  # fmt: skip
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = ["ingest", "WALS fit", "implicit ALS fit", "evaluation, 10k sampled users",
             "evaluation, all users", "two-tower default fit"]  # fmt: skip
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for step in steps:
        points = [(SIZES[n][2], results[n][step]) for n in results if step in results[n]]
        points = [(r, e) for r, e in sorted(points) if e.get("seconds")]
        if not points:
            continue
        left.plot([r for r, _ in points], [e["seconds"] for _, e in points], "o-", label=step)
        mem = [(r, e["peak_rss_mb"]) for r, e in points if e.get("peak_rss_mb")]
        if mem:
            right.plot([r for r, _ in mem], [m for _, m in mem], "o-", label=step)
    for axis, label in ((left, "seconds"), (right, "peak RSS (MB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("interactions (rows)")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    left.set_title("time per step")
    right.set_title("peak memory per step")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def write_docs(results: dict, args) -> None:
    table = markdown_table(["rows", "step", "seconds", "peak RSS MB", "notes", "target at 20M"],
                           rows_of(results))  # fmt: skip
    text = (
        f"{table}\n\n{args.threads} threads for every step (`OMP_NUM_THREADS` for torch and "
        "numba, implicit's `num_threads` with its BLAS pinned to 1); the machine was shared "
        f"with five other jobs, so compare within a run. {machine()}."
    )
    status = verdicts(results)
    if status:
        text += "\n\n" + markdown_table(["target (20M rows)", "measured", "met?"], status)
    print(text)
    write_section("scale.md", "scale", text)
    try:
        plot(results, DOCS / "img" / "scale.png")
    except ImportError:
        print("matplotlib missing: pip install 'recfunnel[plot]' for the plot", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    for name, func in (("child-ingest", child_ingest), ("child-split", child_split),
                       ("child-recall", child_recall)):  # fmt: skip
        p = sub.add_parser(name)
        p.add_argument("file", type=Path)
        p.add_argument("--out", type=Path)
        p.set_defaults(func=func)
    parser.add_argument("--sizes", default="1M,4M,20M")
    parser.add_argument("--steps", default="ingest,wals,implicit,eval-all,two-tower")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "recfunnel-scale"))
    parser.add_argument("--all-users-cap", type=int, default=100_000,
                        help="--eval-users for the all-users step at --cap-sizes")  # fmt: skip
    parser.add_argument("--cap-sizes", default="", help="sizes whose all-users pass is capped")
    parser.add_argument("--two-tower-timeout", type=float, default=900.0)
    parser.add_argument("--table-only", action="store_true", help="redraw docs from results")
    args = parser.parse_args()
    if args.command:
        args.func(args)
        return
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), NUMBA_NUM_THREADS=str(args.threads),
               PYTHONPATH=str(REPO / "src"))  # fmt: skip
    if not args.table_only:
        for name in args.sizes.split(","):
            run_size(name, args, env, results)
    write_docs(results, args)


if __name__ == "__main__":
    main()
