"""Helpers shared by the benchmarks: peer runs, split export, tables and docs sections."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
PEER_PYTHON = Path(os.environ.get("RECFUNNEL_PEER_PYTHON", REPO / ".venv-peers" / "bin" / "python"))
DOCS = REPO / "docs"


def machine() -> str:
    """One line describing where a benchmark ran."""
    return (
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python "
        f"{platform.python_version()}"
    )


def write_tsv(path: Path, users, items, ratings=None, timestamps=None) -> Path:
    """Interactions as the peer scripts read them: ``user item rating timestamp`` with a header."""
    n = len(users)
    ratings = ratings if ratings is not None else np.ones(n)
    timestamps = timestamps if timestamps is not None else np.zeros(n, dtype=np.int64)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("user\titem\trating\ttimestamp\n")
        for row in zip(users, items, ratings, timestamps, strict=True):
            fh.write("\t".join(str(v) for v in row) + "\n")
    return path


def write_lines(path: Path, values) -> Path:
    path.write_text("".join(f"{v}\n" for v in values), encoding="utf-8")
    return path


def run_peer(script: str, *args: str) -> None:
    """Run ``benchmarks/peers/<script>`` in the peer virtualenv."""
    if not PEER_PYTHON.exists():
        sys.exit(
            f"peer virtualenv not found at {PEER_PYTHON}; create it as benchmarks/peers/README.md "
            "says, or set RECFUNNEL_PEER_PYTHON"
        )
    cmd = [str(PEER_PYTHON), str(REPO / "benchmarks" / "peers" / script), *args]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def load_factors(folder: Path) -> tuple[list[str], list[str], torch.Tensor, torch.Tensor, dict]:
    """(user ids, item ids, user factors, item factors, result.json) written by a peer."""
    users = (folder / "user_ids.txt").read_text(encoding="utf-8").splitlines()
    items = (folder / "item_ids.txt").read_text(encoding="utf-8").splitlines()
    uf = torch.as_tensor(np.load(folder / "user_factors.npy"))
    itf = torch.as_tensor(np.load(folder / "item_factors.npy"))
    return users, items, uf, itf, json.loads((folder / "result.json").read_text())


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table from a header and rows of cells (floats shown with 4 decimals)."""

    def cell(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table; ``columns`` are (header, key, format)."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = []
        for _, key, fmt in columns:
            value = row.get(key, "")
            cells.append(format(value, fmt) if isinstance(value, int | float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_section(doc: str | Path, name: str, text: str) -> Path:
    """Replace the block between ``<!-- BEGIN name -->`` and ``<!-- END name -->`` in ``doc``
    (a file name under docs/, or a path); the block is appended when the markers are missing."""
    path = DOCS / doc if isinstance(doc, str) else Path(doc)
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    current = path.read_text(encoding="utf-8") if path.exists() else ""
    block = f"{begin}\n{text.rstrip()}\n{end}"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        _, tail = rest.split(end, 1)
        current = head + block + tail
    else:
        current = current.rstrip() + ("\n\n" if current else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(current, encoding="utf-8")
    if path.parent.resolve() == DOCS.resolve():  # redraw the chart of this table, if it has one
        import charts

        charts.refresh(path.name, name)
    return path


def write_with_command(doc: str | Path, name: str, text: str) -> Path:
    """:func:`write_section` with the command line that produced ``text`` and the machine
    above it."""
    script = Path(sys.argv[0]).name
    command = " ".join(["python", f"benchmarks/{script}", *sys.argv[1:]])
    return write_section(doc, name, f"`{command}` ({machine()})\n\n{text}")
