"""Helpers for benchmark scripts: print a Markdown table and write it into a docs section.

A section lives between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in the docs file and
is replaced in place, so several benchmarks can share one page.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path

import torch


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value):
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine() -> str:
    return (
        f"{time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads"
    )


def write_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of the Markdown file ``path``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + block + after
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + block + "\n"
    path.write_text(text, encoding="utf-8")
