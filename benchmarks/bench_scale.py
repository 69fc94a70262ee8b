"""Scale: time and peak memory of each step vs the number of rows, against issue #11's targets.

    PYTHONPATH=src python benchmarks/bench_scale.py --sizes 1M,4M,20M --threads 2

Synthetic data from ``recfunnel synth`` (power law; 20M = 1M users x 200k items, smaller sizes
scaled down in proportion). Every step runs as its own process under ``/usr/bin/time`` (its peak
RSS is that process's); the timed part is what the step reports (``fit_seconds``,
``eval_seconds``, the ingest call), the wall time of the process is kept beside it:

* ingest: Parquet -> interactions + vocabularies (``data.io.dataset_from_files``) in a child,
  and apart from it the first making of the id strings the vocabularies defer;
* WALS: ``recfunnel train --model wals --preset seed`` (implicit's settings), evaluated on the
  default seeded sample of 10,000 test users; implicit ALS on the same training split with the
  same threads in the same run (``benchmarks/peers/implicit_als.py``), its recall@10 on the same
  users; and recfunnel's WALS in implicit's harness (``child-wals``: the same npz, only the fit
  timed, the peak RSS up to the end of the fit), which the verdict compares;
* evaluation, 10k sampled users: the ``train`` above reports it; ``eval-sample`` measures it
  again on the saved run (``recfunnel evaluate RUN``: its process CPU and peak RSS include
  reading and splitting the data);
* evaluation, all users: ``recfunnel evaluate RUN --eval-users all`` (or a seeded sample of
  ``--all-users-cap`` users, the time scaled up linearly and marked so, where the full pass would
  not fit the session);
* two-tower ``default``: ``recfunnel train --model two-tower --preset default`` with a time limit;
* torchrun: the two-tower ``default`` settings with ``--torchrun-max-examples`` training rows,
  1 process x batch B x ``--threads`` threads against ``--nproc 2`` x B/2 x 1 thread.

Every step records its process's CPU seconds and the 1-minute load average beside its times:
the machine this ran on was shared.

Results accumulate in ``benchmarks/results/scale.json`` (one entry per size and step, re-runs
replace), and the table and the log-log plot in ``docs/scale.md`` / ``docs/img/scale.png`` are
redrawn from all of them.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
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
    "two-tower torchrun, 2 processes": "same recall@10 within 0.005 as 1 process",
}


# ------------------------------------------------------------------------------- children
def timed(argv: list[str], env: dict, timeout: float | None = None, stamp: bool = False) -> dict:
    """Run ``argv`` under /usr/bin/time: wall seconds, peak RSS MB, stdout, return code.

    ``stamp``: read stderr as it comes and time-stamp each line; adds ``stderr_gaps`` (the
    seconds from the start to the first line, between lines, and from the last to the end)."""
    with tempfile.NamedTemporaryFile(suffix=".time") as report:
        started = time.perf_counter()
        # its own process group: a timeout ends the step's whole tree (torchrun's workers too)
        child = subprocess.Popen(["/usr/bin/time", "-f", "%U %S %M", "-o", report.name, *argv],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True, start_new_session=True)  # fmt: skip
        arrivals: list[tuple[float, str]] = []
        reader = None
        if stamp:  # stderr is a pipe, as in a log: each line's arrival time
            import threading

            def read() -> None:
                for line in child.stderr:
                    arrivals.append((time.perf_counter(), line))
                    print(f"  | {line.rstrip()}", file=sys.stderr, flush=True)  # watch it live

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
        try:
            if reader is None:
                stdout, stderr = child.communicate(timeout=timeout)
            else:
                stdout = child.stdout.read()  # ends when the child closes it
                child.wait(timeout=timeout)
                reader.join()
                stderr = "".join(line for _, line in arrivals)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            return {"timeout": timeout, "wall_seconds": time.perf_counter() - started}
        done = subprocess.CompletedProcess(argv, child.returncode, stdout, stderr)
        wall = time.perf_counter() - started
        lines = Path(report.name).read_text().split()
    rss = float(lines[-1]) / 1024 if lines and lines[-1].isdigit() else None
    try:  # user + system CPU seconds of the process and its children: robust to a busy machine
        cpu = float(lines[-3]) + float(lines[-2])
    except (IndexError, ValueError):
        cpu = None
    if done.returncode:
        print(done.stderr[-2000:], file=sys.stderr)
    out = {"wall_seconds": wall, "peak_rss_mb": rss, "cpu_seconds": cpu, "stdout": done.stdout,
           "returncode": done.returncode}  # fmt: skip
    if stamp:
        times = [started] + [t for t, _ in arrivals] + [started + wall]
        out["stderr_gaps"] = [b - a for a, b in zip(times, times[1:], strict=False)]
        out["stderr_lines"] = len(arrivals)
    return out


def silence(out: dict) -> dict:
    """The longest stretch a stamped step printed nothing on stderr (see :func:`timed`)."""
    gaps = out.get("stderr_gaps")
    if not gaps:
        return {}
    inner = gaps[:-1] if len(gaps) > 1 else gaps  # the last: the run ends with its JSON
    return {"longest_silence_seconds": max(inner), "first_line_seconds": gaps[0],
            "progress_lines": out["stderr_lines"]}  # fmt: skip


def usage(out: dict) -> dict:
    """Peak RSS and CPU seconds of a step's process, as recorded."""
    return {"peak_rss_mb": out["peak_rss_mb"], "process_cpu_seconds": out["cpu_seconds"]}


def child_ingest(args) -> None:
    """One ingest, timed inside (imports excluded), as JSON on stdout."""
    from recfunnel.data.io import Columns, dataset_from_files

    started = time.perf_counter()
    dataset, _ = dataset_from_files(args.file, Columns())
    seconds = time.perf_counter() - started
    # the vocabularies keep integer ids as an array until a string is asked for: time that too
    started = time.perf_counter()
    for vocabulary in (dataset.users, dataset.items):
        vocabulary.index(vocabulary.decode([0])[0])  # builds the id strings and the look-up dict
    strings = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "rows": len(dataset.interactions),
                      "users": len(dataset.users), "items": len(dataset.items),
                      "vocabulary_strings_seconds": strings}))  # fmt: skip


def child_split(args) -> None:
    """The training split ``recfunnel train`` makes (random 80/20, seed 42) as an npz, and the
    10k evaluation sample's test rows, for the implicit peer."""
    import numpy as np

    from recfunnel.data.sources import DataSpec, load

    _, train, test = load(DataSpec(dataset=None, train=str(args.file)))
    np.savez(args.out / "train.npz", users=train.users, items=train.items,
             num_users=train.num_users, num_items=train.num_items)  # fmt: skip
    np.savez(args.out / "test.npz", users=test.users, items=test.items)


def _split(folder: Path, test: bool = True, train: bool = True):
    """The saved split's training and test ``Interactions`` (or the one asked for alone)."""
    import numpy as np

    from recfunnel.data import Interactions

    raw = np.load(folder / "train.npz")
    shape = int(raw["num_users"]), int(raw["num_items"])
    parts = []
    if train:
        parts.append(Interactions(raw["users"], raw["items"], *shape))
    if test:
        held = np.load(folder / "test.npz")
        parts.append(Interactions(held["users"], held["items"], *shape))
    return tuple(parts) if len(parts) > 1 else parts[0]


def _recall(X, Y, train, test) -> float:
    """recall@10 of factors on the default 10k sample (seed 42, as ``train``)."""
    import torch

    from recfunnel.metrics import choose_users, dot_scorer, evaluate_scores

    users, _ = choose_users(test, None, seed=42)
    metrics = evaluate_scores(dot_scorer(lambda u: X[torch.as_tensor(u)], Y), train, test,
                              users=users, factorized_ks=(), ranking_ks=(10,))  # fmt: skip
    return metrics["recall@10"]


def child_recall(args) -> None:
    """recall@10 of implicit's factors on the default 10k sample."""
    import numpy as np
    import torch

    train, test = _split(args.out)
    X = torch.as_tensor(np.load(args.out / "implicit" / "user_factors.npy"))
    Y = torch.as_tensor(np.load(args.out / "implicit" / "item_factors.npy"))
    print(json.dumps({"recall@10": _recall(X, Y, train, test)}))


def child_wals(args) -> None:
    """recfunnel's WALS in implicit's harness: the same training split from the npz, the same
    settings (the ``seed`` preset), only the fit timed; then recall@10 on the same users. The
    test split is read after the fit, as implicit's fit process never reads it (its recall is
    computed by ``child-recall``); the training ``Interactions`` stay alive through the fit."""
    import resource

    from recfunnel.models import WALS
    from recfunnel.presets import preset

    train = _split(args.out, test=False)
    model = WALS(preset("wals", "seed"))
    started = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - started
    # the peak so far (imports, the npz, the fit), as implicit's process ends after its fit
    fit_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    test = _split(args.out, test=True, train=False)
    recall = _recall(model.user_factors_, model.item_factors_, train, test)
    print(json.dumps({"seconds": seconds, "recall@10": recall, "fit_peak_rss_mb": fit_peak}))


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
        entry["load_average"] = round(os.getloadavg()[0], 1)  # how busy the shared machine was
        entry.setdefault("threads", args.threads)
        results.setdefault(name, {})[step] = entry
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        print(f"{name} {step}: {json.dumps(entry)}", file=sys.stderr, flush=True)

    if not data.exists():
        out = timed([*recfunnel, "synth", "--users", str(users), "--items", str(items),
                     "--interactions", str(rows), "--out", str(data)], env)  # fmt: skip
        record("synth", {"seconds": out["wall_seconds"], **usage(out)})
    steps = args.steps.split(",")
    if "ingest" in steps:
        out = timed([*me, "child-ingest", str(data)], env)
        info = json.loads(out["stdout"])
        record("ingest", {**info, "wall_seconds": out["wall_seconds"],
                          **usage(out)})  # fmt: skip
    run = work / "wals-run"
    if "wals" in steps:  # progress on: stderr is a pipe, each line time-stamped on arrival
        argv = ["train", "--train", str(data), "--model", "wals", "--preset", "seed", "--json",
                "--out", str(run), "--overwrite"]  # fmt: skip
        out = timed([*recfunnel, *argv], env, stamp=True)
        metrics = json.loads(out["stdout"])
        record("WALS fit", {"seconds": metrics["fit_seconds"], "recall@10": metrics["recall@10"],
                            **usage(out), **silence(out),
                            "wall_seconds": out["wall_seconds"]})  # fmt: skip
        record("evaluation, 10k sampled users", {"seconds": metrics["eval_seconds"],
                                                 "users": metrics["num_eval_users"]})  # fmt: skip
    if "implicit" in steps:
        if not (work / "train.npz").exists() or not (work / "test.npz").exists():
            timed([*me, "child-split", str(data), "--out", str(work)], env)  # seeded: reused
        out = timed([str(PEER_PYTHON), str(REPO / "benchmarks" / "peers" / "implicit_als.py"),
                     "--train-npz", str(work / "train.npz"), "--out", str(work / "implicit"),
                     "--factors", "32", "--regularization", "0.01", "--iterations", "15",
                     "--alpha", "1.0", "--threads", threads, "--seed", "42"], env)  # fmt: skip
        peer = json.loads((work / "implicit" / "result.json").read_text())
        recall = json.loads(timed([*me, "child-recall", "x", "--out", str(work)], env)["stdout"])
        record("implicit ALS fit", {"seconds": peer["fit_seconds"], **recall,
                                    **usage(out)})  # fmt: skip
    if "wals-npz" in steps:  # the same harness as implicit: npz in, fit timed, own process
        out = timed([*me, "child-wals", "x", "--out", str(work)], env)
        record("WALS fit, implicit's harness", {**json.loads(out["stdout"]),
                                                **usage(out)})  # fmt: skip
    if "eval-sample" in steps:  # the default 10k sample on the saved WALS run, by itself
        out = timed([*recfunnel, "evaluate", str(run), "--json"], env)
        metrics = json.loads(out["stdout"])
        record("evaluation, 10k sampled users", {"seconds": metrics["eval_seconds"],
                                                 "users": metrics["num_eval_users"],
                                                 "recall@10": metrics["recall@10"],
                                                 **usage(out)})  # fmt: skip
    if "eval-all" in steps:
        cap = args.all_users_cap if name in args.cap_sizes.split(",") else 0
        out = timed([*recfunnel, "evaluate", str(run), "--json", "--eval-users",
                     str(cap) if cap else "all"], env)  # fmt: skip
        metrics = json.loads(out["stdout"])
        evaluation = metrics["evaluation"]
        entry = {"seconds": metrics["eval_seconds"], "users": metrics["num_eval_users"],
                 "test_users": evaluation["test_users"],
                 **usage(out)}  # fmt: skip
        if evaluation["users"] == "sample":  # scaled to all test users, and said so
            entry["measured_users"] = evaluation["sample_size"]
            entry["seconds"] *= evaluation["test_users"] / evaluation["sample_size"]
            entry["extrapolated"] = True
        record("evaluation, all users", entry)
    tower = ["train", "--train", str(data), "--model", "two-tower", "--preset", "default",
             "--json", "--quiet", "--overwrite"]  # fmt: skip
    if "two-tower" in steps:
        budget = []  # a shorter fit than the preset's 8M rows, labelled so
        if args.two_tower_max_examples:
            budget = ["--set", f"large.max_examples={args.two_tower_max_examples}"]
        loud = [a for a in tower if a != "--quiet"]  # its progress lines, stamped
        out = timed([*recfunnel, *loud, "--out", str(work / "tower-run"), *budget], env,
                    timeout=args.two_tower_timeout, stamp=True)  # fmt: skip
        label = "two-tower default fit" + (", 1 thread" if args.threads == 1 else "")
        if args.two_tower_max_examples:
            label += f", {args.two_tower_max_examples / 1e6:g}M-row budget"
        record(label, tower_entry(out, work / "tower-run"))
    if "torchrun" in steps:  # 1 process x batch B x 2 threads vs 2 processes x B/2 x 1 thread
        budget = dict(TOWER_LARGE, max_examples=args.torchrun_max_examples)
        half = dict(budget, batch_size=budget["batch_size"] // 2)
        for label, extra, threads_each, setting in (
            ("1 process", [], threads, budget), ("1 process, 1 thread", [], "1", budget),
            ("2 processes", ["--nproc", "2"], "1", half),
        ):  # fmt: skip
            run_dir = work / ("torchrun-" + label.replace(" ", "").replace(",", "-"))
            out = timed([*recfunnel, *tower, "--out", str(run_dir), *extra,
                         "--set", "large=" + json.dumps(setting)],
                        dict(env, OMP_NUM_THREADS=threads_each, NUMBA_NUM_THREADS=threads_each),
                        timeout=args.two_tower_timeout)  # fmt: skip
            record(f"two-tower torchrun, {label}", tower_entry(out, run_dir))


#: the two-tower default preset's large-catalogue settings (presets.py)
TOWER_LARGE = dict(softmax="mixed", negatives=256, sampler="uniform", logq_correction=True,
                   sparse_updates=True, batch_size=1024, max_examples=8_000_000)  # fmt: skip


def tower_entry(out: dict, run: Path) -> dict:
    """A two-tower step's entry: fit seconds, recall@10, peak RSS and training rows per second
    (the rows of every epoch in the run's history)."""
    if "timeout" in out:
        return {"timeout": out["timeout"]}
    if out["returncode"]:
        return {"seconds": None, "returncode": out["returncode"]}
    metrics = json.loads(out["stdout"])
    saved = json.loads((run / "metrics.json").read_text())
    log = saved.get("training_log", saved.get("history", []))  # "history" before session 4
    rows = sum(epoch.get("rows", 0) for epoch in log)
    return {"seconds": metrics["fit_seconds"], "recall@10": metrics["recall@10"],
            **usage(out), "rows_trained": rows,
            "rows_per_second": rows / metrics["fit_seconds"],
            "wall_seconds": out["wall_seconds"], **silence(out)}  # fmt: skip


# ------------------------------------------------------------------------- table and plot
def rows_of(results: dict, threads: int = 2) -> list[list]:
    order = ["synth", "ingest", "WALS fit", "implicit ALS fit", "WALS fit, implicit's harness",
             "evaluation, 10k sampled users",
             "evaluation, all users", "two-tower default fit", "two-tower default fit, 1 thread",
             "two-tower default fit, 1 thread, 2M-row budget",
             "two-tower torchrun, 1 process", "two-tower torchrun, 1 process, 1 thread",
             "two-tower torchrun, 2 processes"]  # fmt: skip
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
            rss = entry.get("fit_peak_rss_mb") or entry.get("peak_rss_mb")
            extra = []
            if "recall@10" in entry and entry["recall@10"] is not None:
                extra.append(f"recall@10 {entry['recall@10']:.4f}")
            if "measured_users" in entry:
                extra.append(f"measured on {entry['measured_users']} of {entry['test_users']} "
                             "users, time scaled linearly")  # fmt: skip
            elif "users" in entry:
                extra.append(f"{entry['users']} users")
            if entry.get("threads", threads) != threads and "thread" not in step:
                extra.append(f"{entry['threads']} thread{'s' if entry['threads'] > 1 else ''}")
            if entry.get("process_cpu_seconds"):
                extra.append(f"process CPU {entry['process_cpu_seconds']:.0f} s")
            if entry.get("load_average") is not None:
                extra.append(f"load {entry['load_average']}")
            if "longest_silence_seconds" in entry:
                longest = entry["longest_silence_seconds"]
                extra.append(f"stderr piped: {entry['progress_lines']} progress lines, the "
                             f"longest silence {longest:.1f} s")  # fmt: skip
            if "rows_per_second" in entry:
                extra.append(f"{entry['rows_per_second']:,.0f} training rows/s")
            if "vocabulary_strings_seconds" in entry:
                extra.append(f"+ {entry['vocabulary_strings_seconds']:.2f} s to make the id "
                             "strings and look-up dicts on first use")  # fmt: skip
            out.append([name, step, shown, f"{rss:.0f}" if rss else "", "; ".join(extra),
                        TARGETS.get(step, "") if name == "20M" else ""])  # fmt: skip
    return out


def verdicts(results: dict) -> list[list]:
    """The 20M targets, met or not, from the stored results."""
    big = results.get("20M", {})
    out = []

    def get(step, key="seconds"):
        return big.get(step, {}).get(key)

    if get("ingest") is not None:  # with the id strings the vocabularies make on first use
        strings = get("ingest", "vocabulary_strings_seconds") or 0.0
        ok = get("ingest") + strings <= 20 and get("ingest", "peak_rss_mb") <= 1536
        out.append(["ingest", f"{get('ingest'):.1f} s + {strings:.1f} s for the id strings on "
                    f"first use, {get('ingest', 'peak_rss_mb'):.0f} MB (both included)",
                    "yes" if ok else "no"])  # fmt: skip
    ours = "WALS fit, implicit's harness" if get("WALS fit, implicit's harness") else "WALS fit"
    if get(ours) is not None and get("implicit ALS fit") is not None:
        t = get(ours) / get("implicit ALS fit")
        m = (get(ours, "fit_peak_rss_mb") or get(ours, "peak_rss_mb")) / get(
            "implicit ALS fit", "peak_rss_mb"
        )
        r, ri = get(ours, "recall@10"), get("implicit ALS fit", "recall@10")
        ok = t <= 1.0 and m <= 1.5 and r >= ri - 0.002
        how = (
            "the same harness: npz in, fit timed, each in its own process"
            if ours != "WALS fit"
            else "whole train process vs implicit's fit process"
        )
        out.append(["WALS fit vs implicit", f"{t:.2f}x time, {m:.2f}x memory ({how}), "
                    f"recall@10 {r:.4f} vs {ri:.4f}", "yes" if ok else "no"])  # fmt: skip
    if get("evaluation, 10k sampled users") is not None:
        s = get("evaluation, 10k sampled users")
        out.append(["evaluation, 10k sampled", f"{s:.1f} s", "yes" if s <= 30 else "no"])
    if get("evaluation, all users") is not None and get("WALS fit") is not None:
        s, fit = get("evaluation, all users"), get("WALS fit")
        note = " (extrapolated)" if big["evaluation, all users"].get("extrapolated") else ""
        out.append(["evaluation, all users", f"{s:.0f} s{note} vs WALS fit {fit:.0f} s",
                    "yes" if s <= fit else "no"])  # fmt: skip
    towers = [big[s] for s in ("two-tower default fit", "two-tower default fit, 1 thread")
              if s in big]  # fmt: skip
    tower = next((t for t in towers if t.get("seconds") is not None), None)  # one that finished
    tower = tower or (towers[0] if towers else None)
    part = big.get("two-tower default fit, 1 thread, 2M-row budget")
    if (tower is None or tower.get("seconds") is None) and part and part.get("seconds"):
        rate = part["rows_per_second"]
        out.append(["two-tower default fit", f"on a 2M-row budget: {part['seconds']:.0f} s "
                    f"({rate:,.0f} rows/s, 1 thread: ~{8e6 / rate:.0f} s for the 8M rows), "
                    f"{part['peak_rss_mb']:.0f} MB, recall@10 {part['recall@10']:.4f} vs WALS "
                    f"{get('WALS fit', 'recall@10') or 0:.4f}", "not measured at 8M"])  # fmt: skip
        tower = None
    if tower is not None:
        entry = tower
        if "timeout" in entry or entry.get("seconds") is None:
            speed = (f" ({entry['rows_per_second']:,.0f} rows/s: "
                     f"{8e6 / entry['rows_per_second'] / 60:.0f} min for its 8M-row budget)"
                     if entry.get("rows_per_second") else "")  # fmt: skip
            out.append(
                [
                    "two-tower default fit",
                    f"did not finish in {entry.get('timeout', 0):.0f} s{speed}",
                    "no",
                ]
            )
        else:
            wals = get("WALS fit", "recall@10") or 0
            ok = entry["seconds"] <= 600 and (entry["peak_rss_mb"] or 0) <= 4096
            ok = ok and entry["recall@10"] >= wals
            cpu = entry.get("process_cpu_seconds")
            busy = (f" (load {entry['load_average']:.0f}; the whole process's CPU {cpu:.0f} s)"
                    if cpu and entry.get("load_average") else "")  # fmt: skip
            out.append(["two-tower default fit", f"{entry['seconds']:.0f} s{busy}, "
                        f"{entry['peak_rss_mb']:.0f} MB, recall@10 {entry['recall@10']:.4f} "
                        f"vs WALS {wals:.4f}", "yes" if ok else "no"])  # fmt: skip
    for name in sorted(results, key=lambda n: SIZES[n][2]):  # torchrun, wherever measured
        one = results[name].get("two-tower torchrun, 1 process", {})
        two = results[name].get("two-tower torchrun, 2 processes", {})
        if one.get("recall@10") is None or two.get("recall@10") is None:
            continue
        gap = abs(one["recall@10"] - two["recall@10"])
        single = results[name].get("two-tower torchrun, 1 process, 1 thread", {})
        also = (f", {single['rows_per_second']:,.0f} for 1 process x 1 thread"
                if single.get("rows_per_second") else "")  # fmt: skip
        out.append([f"torchrun 2 vs 1 process ({name} rows)",
                    f"recall@10 {two['recall@10']:.4f} vs {one['recall@10']:.4f}; "
                    f"{two['rows_per_second']:,.0f} rows/s (2 processes x 1 thread) vs "
                    f"{one['rows_per_second']:,.0f} (1 process x 2 threads){also}",
                    "yes" if gap <= 0.005 else "no"])  # fmt: skip
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = ["ingest", "WALS fit", "implicit ALS fit", "WALS fit, implicit's harness",
             "evaluation, 10k sampled users", "evaluation, all users", "two-tower default fit",
             "two-tower default fit, 1 thread", "two-tower default fit, 1 thread, 2M-row budget",
             "two-tower torchrun, 1 process", "two-tower torchrun, 2 processes"]  # fmt: skip
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for step in steps:
        points = [(SIZES[n][2], results[n][step]) for n in results if step in results[n]]
        points = [(r, e) for r, e in sorted(points) if e.get("seconds")]
        if not points:
            continue
        left.plot([r for r, _ in points], [e["seconds"] for _, e in points], "o-", label=step)
        mem = [(r, e.get("fit_peak_rss_mb") or e["peak_rss_mb"]) for r, e in points
               if e.get("peak_rss_mb")]  # fmt: skip
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
                           rows_of(results, args.threads))  # fmt: skip
    text = (
        f"{table}\n\n{args.threads} threads for every step whose name does not say otherwise "
        "(`OMP_NUM_THREADS` for torch and "
        "numba, implicit's `num_threads` with its BLAS pinned to 1). The 2 cores were shared "
        "with other jobs (the 1-minute load average at the end of each step is in its notes, "
        "with the step's process CPU seconds): wall times are several times what a quiet "
        f"machine gives, so compare within a size, and CPU seconds across. {machine()}."
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
                       ("child-recall", child_recall), ("child-wals", child_wals)):  # fmt: skip
        p = sub.add_parser(name)
        p.add_argument("file", type=Path)
        p.add_argument("--out", type=Path)
        p.set_defaults(func=func)
    parser.add_argument("--sizes", default="1M,4M,20M")
    parser.add_argument(
        "--steps", default="ingest,wals,implicit,wals-npz,eval-all,two-tower,torchrun"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "recfunnel-scale"))
    parser.add_argument("--all-users-cap", type=int, default=100_000,
                        help="--eval-users for the all-users step at --cap-sizes")  # fmt: skip
    parser.add_argument("--cap-sizes", default="", help="sizes whose all-users pass is capped")
    parser.add_argument("--two-tower-timeout", type=float, default=900.0)
    parser.add_argument("--two-tower-max-examples", type=int, default=0,
                        help="two-tower: stop after this many rows (0: the preset's)")  # fmt: skip
    parser.add_argument("--torchrun-max-examples", type=int, default=200_000,
                        help="training rows of each run of the torchrun pair")  # fmt: skip
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
