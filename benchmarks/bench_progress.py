"""Progress when piped to a file (#11): how soon `recfunnel train` prints its first line and
its longest silence, for every model, on the 20M-row synthetic data.

    PYTHONPATH=src python benchmarks/bench_progress.py \
        --data /tmp/recfunnel-scale/20M/data-rt.parquet --seconds 90

DATA is ``recfunnel synth``'s 20M-row file with a ``rating`` column (1-5) and a ``timestamp``
(the row's index) added, so that the rating and sequential models train on it too
(``MODEL_ARGS``).

Each model runs ``recfunnel train --train DATA --model M --json --out TMP`` in its own process,
stdout to /dev/null and stderr to a pipe, as a log file or CI would see it; every stderr line is
stamped when it arrives. After ``--seconds`` the process is interrupted (SIGINT, then killed),
unless it ended before (a model that refuses this catalogue ends with its one-line error).
Silences are measured from the start of the process to the first line, between lines, and
from the last line to the end (or to the interruption). Results accumulate in
``benchmarks/results/progress.json`` (a model measured again replaces its entry). Thread
settings: ``--threads`` for torch and numba, OpenMP/MKL/OpenBLAS pinned to the same.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import REPO, machine, markdown_table, write_section

RESULTS = REPO / "benchmarks" / "results" / "progress.json"
#: what a model needs from the data beyond user and item (the bench's file has both columns)
MODEL_ARGS = {
    "sgd-mf": ["--rating-col", "rating"],
    "ranking": ["--rating-col", "rating"],
    "multitask": ["--rating-col", "rating"],
    "sequential": ["--time-col", "timestamp"],
}
MODELS = ("wals", "two-tower", "bpr", "sgd-mf", "ranking", "multitask", "two-stage",
          "sequential", "most-popular", "rp3beta", "ease", "auto")  # fmt: skip


def watch(model: str, data: Path, seconds: float, threads: int) -> dict:
    """Run one ``train``; the arrival time of each stderr line and how the run ended."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads),
               OPENBLAS_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="bench-progress-") as work:
        command = [sys.executable, "-m", "recfunnel", "train", "--train", str(data), "--model",
                   model, "--json", "--out", str(Path(work) / "run"),
                   *MODEL_ARGS.get(model, [])]  # fmt: skip
        started = time.monotonic()
        proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
        lines: list[tuple[float, str]] = []

        def read() -> None:
            for line in proc.stderr:
                lines.append((time.monotonic() - started, line.rstrip("\n")))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            code = proc.wait(timeout=seconds)
            ended = f"exit {code}"
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            ended = "interrupted"
        end = time.monotonic() - started if ended != "interrupted" else seconds
        reader.join(timeout=10)
    times = [t for t, _ in lines if t <= end]
    marks = [0.0, *times, end]
    gaps = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    return {"model": model, "seconds": end, "ended": ended, "lines": len(times),
            "first_line": times[0] if times else None, "longest_silence": max(gaps),
            "first_lines": [text for _, text in lines[:3]],
            "last_line": lines[-1][1] if lines else ""}  # fmt: skip


def write_docs(results: list[dict], args, command: str) -> None:
    """The table of ``results``; rows measured by earlier commands (a model measured again
    replaces its row) name their command in a last column."""
    commands = list(dict.fromkeys(r.get("command", command) for r in results))
    rows = []
    for r in results:
        first = f"{r['first_line']:.1f}" if r["first_line"] is not None else "none"
        last = r["last_line"].replace("|", "/")[:90]
        rows.append([r["model"], first, f"{r['longest_silence']:.1f}", r["lines"],
                     f"{r['seconds']:.0f} s, {r['ended']}", last])  # fmt: skip
        if len(commands) > 1:
            rows[-1].append(commands.index(r.get("command", command)) + 1)
    header = ["model", "first line, s", "longest silence, s", "lines", "ran", "last line"]
    if len(commands) > 1:
        header.append("run")
        runs = "; ".join(f"run {i}: `{c}`" for i, c in enumerate(commands, 1))
    else:
        runs = f"`{command}`"
    text = f"{runs} ({machine()}; {args.threads} thread(s))\n\n" + markdown_table(header, rows)
    write_section("scale.md", "progress", text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seconds", type=float, default=90.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--render", action="store_true", help="write the docs from the stored "
                        "results of --data, measure nothing")  # fmt: skip
    args = parser.parse_args()
    # results accumulate: a model measured again replaces its entry
    saved = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    by_model = {
        r["model"]: r for r in saved.get("results", []) if saved.get("data") == str(args.data)
    }
    command = " ".join(["python", "benchmarks/bench_progress.py", *sys.argv[1:]])
    for model in [] if args.render else args.models.split(","):
        result = {**watch(model, args.data, args.seconds, args.threads), "command": command}
        print(json.dumps(result), flush=True)
        by_model[model] = result
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps({"data": str(args.data), "results": list(by_model.values())}, indent=1)
        )
    if not args.no_docs:
        order = {m: i for i, m in enumerate(MODELS)}
        results = sorted(by_model.values(), key=lambda r: order.get(r["model"], len(order)))
        write_docs(results, args, command)


if __name__ == "__main__":
    main()
