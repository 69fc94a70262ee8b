"""Charts of the benchmark tables, drawn from the tables already written in docs/ (no re-run).

    python benchmarks/charts.py            # redraw every chart into docs/img/
    python benchmarks/charts.py --list     # which table feeds which chart

Each benchmark script writes its Markdown table between ``<!-- BEGIN name -->`` and
``<!-- END name -->`` in a docs page (``common.write_section``), which then calls
:func:`refresh` so the chart of that table is redrawn too. A chart therefore shows exactly the
numbers of the table beside it, measured on the machine and date the table names (a shared
2-core machine: compare ratios within one chart, not across charts).

Needs matplotlib (``pip install -e '.[plot]'``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
IMG = DOCS / "img"
BLUE, ORANGE, GREY, GREEN = "#3657d6", "#d0542c", "#8a8f9c", "#2a9d5c"


def read_table(doc: str, section: str) -> list[dict[str, str]]:
    """The first Markdown table inside ``<!-- BEGIN section -->`` of ``docs/doc`` as rows."""
    text = (DOCS / doc).read_text(encoding="utf-8")
    match = re.search(
        rf"<!-- BEGIN {re.escape(section)} -->(.*?)<!-- END {re.escape(section)} -->", text, re.S
    )
    if not match:
        raise SystemExit(f"docs/{doc} has no section {section!r}; run its benchmark first")
    lines = [ln.strip() for ln in match.group(1).splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    block = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        block.append([c.strip() for c in ln.strip("|").split("|")])
    header, rows = block[0], block[2:]
    return [dict(zip(header, row, strict=False)) for row in rows]


def number(text: str) -> float | None:
    match = re.search(r"-?\d+(\.\d+)?", text.replace(",", ""))
    return float(match.group()) if match else None


def _figure(width, height, panels=1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, panels)
    return fig, axes


def _save(fig, name: str) -> Path:
    IMG.mkdir(parents=True, exist_ok=True)
    path = IMG / name
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _color(label: str) -> str:
    return BLUE if "recfunnel" in label.lower() else GREY if "popular" in label.lower() else ORANGE


def _scatter(ax, points, xlabel, ylabel, title):
    """points: (label, x, y[, (dx, dy) label offset in points]); recfunnel in blue, peers in
    orange, baselines in grey."""
    for label, x, y, *offset in points:
        ax.scatter([x], [y], s=46, color=_color(label), zorder=3)
        ax.annotate(
            label,
            (x, y),
            textcoords="offset points",
            xytext=offset[0] if offset else (6, 4),
            fontsize=7.5,
        )
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.12, y=0.15)


def _bars(ax, labels, values, xlabel, title, fmt="{:.1f} s", colors=None):
    ys = range(len(labels))
    ax.barh(list(ys), values, color=colors or [_color(label) for label in labels])
    ax.set_yticks(list(ys), labels, fontsize=8)
    ax.invert_yaxis()
    if max(values) / max(min(values), 1e-9) > 20:
        ax.set_xscale("log")
        xlabel += " (log scale)"
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    for y, v in zip(ys, values, strict=True):
        ax.annotate(fmt.format(v), (v, y), textcoords="offset points", xytext=(4, -3), fontsize=8)
    ax.margins(x=0.25)
    ax.grid(alpha=0.3, axis="x", which="both")


def retrieval() -> Path:
    """The headline: two-tower retrieval on ML-100k against the TFRS tutorial."""
    rows = read_table("benchmarks.md", "retrieval")
    short = {
        "TFRS tutorial (metrics during fit, as the tutorial)": "TFRS tutorial, as written",
        "TFRS tutorial (no metrics during fit)": "TFRS tutorial, metrics off",
        "recfunnel `seed` (TFRS tutorial)": "recfunnel seed (same model)",
        "recfunnel `default`": "recfunnel default",
    }
    rows = [{**r, "label": short.get(r["model"], r["model"])} for r in rows]
    timed = [r for r in rows if "popular" not in r["model"]]
    fig, (left, right) = _figure(11, 3.6, 2)
    _bars(
        left,
        [r["label"] for r in timed],
        [number(r["fit s"]) for r in timed],
        "fit seconds",  # _bars adds "(log scale)" when it uses one
        "Fit time, MovieLens 100k, 2 CPU cores",
    )
    below = {"TFRS tutorial, as written": (-40, -14), "TFRS tutorial, metrics off": (-70, 8),
             "recfunnel seed (same model)": (-20, -14)}  # fmt: skip
    _scatter(
        right,
        [
            (
                r["label"],
                max(number(r["fit s"]), 0.01),
                number(r["Recall@10"]),
                below.get(r["label"], (6, 4)),
            )
            for r in rows
        ],
        "fit seconds (log scale)",
        "Recall@10 (seen items excluded)",
        "Quality against fit time",
    )
    return _save(fig, "retrieval.png")


def mf() -> Path:
    """WALS against implicit: fit time relative to implicit and quality on ML-100k, time and
    memory at 20M rows."""
    small = read_table("mf.md", "ml100k")
    big = read_table("mf.md", "synthetic")
    fig, (left, middle, right) = _figure(13.5, 3.4, 3)
    ours = [r for r in small if "recfunnel" in r["model"]]
    labels = [
        f"{r['model'].replace('recfunnel ', '')}, "
        f"{'implicit defaults' if r['settings'].startswith('implicit') else 'tuned preset'}"
        f" (R@10 {number(r['recall@10']):.3f})"
        for r in ours
    ]
    _bars(
        left,
        labels,
        [number(r["fit / implicit"]) for r in ours],
        "fit time / implicit ALS's",
        "ML-100k: recfunnel WALS against implicit",
        fmt="{:.2f}x",
        colors=[BLUE] * len(ours),
    )
    left.axvline(1.0, color=ORANGE, lw=1.5, ls="--", label="implicit ALS (cg) = 1")
    left.legend(fontsize=7.5, loc="lower right")
    names = [r["model"] for r in big]
    _bars(
        middle,
        names,
        [number(r["fit s"]) for r in big],
        "fit seconds",
        "20M interactions: fit time",
    )
    _bars(
        right,
        names,
        [number(r["peak RSS MB"]) / 1024 for r in big],
        "peak RSS, GiB",
        "20M interactions: peak memory",
        fmt="{:.2f} GiB",
    )
    return _save(fig, "mf.png")


def explicit() -> Path:
    """Rating prediction: mean RMSE over the MovieLens folds against mean fit time."""
    rows = read_table("mf.md", "explicit")
    models: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        if r["fold"].startswith("u"):
            models.setdefault(r["model"], []).append((number(r["fit s"]), number(r["rmse"])))
    points = [
        (m, sum(t for t, _ in v) / len(v), sum(e for _, e in v) / len(v)) for m, v in models.items()
    ]
    fig, ax = _figure(6.5, 3.6)
    _scatter(
        ax,
        points,
        "mean fit seconds per fold (log scale)",
        "mean RMSE (lower is better)",
        "Explicit ratings, ML-100k folds",
    )
    return _save(fig, "explicit.png")


def _ann_label(row: dict) -> str:
    setting = row["setting"] if row["setting"] != "-" else ""
    return f"{row['index'].replace('(brute force)', '')} {setting}".strip()


def ann() -> Path:
    """Approximate top-k: recall@100 against queries per second on 1M items."""
    rows = read_table("serving.md", "bench_ann")
    fig, ax = _figure(6.5, 3.6)
    points = [
        (
            _ann_label(r),
            number(r["queries/s"]),
            number(r["recall@100"]),
        )
        for r in rows
    ]
    for label, x, y in points:
        ax.scatter([x], [y], s=46, color=BLUE if "FAISS" in label else GREY, zorder=3)
        ax.annotate(
            label.replace("FAISS IVF ", ""),
            (x, y),
            textcoords="offset points",
            xytext=(6, -10),
            fontsize=7.5,
        )
    ax.set_xscale("log")
    ax.set_xlabel("queries per second (log scale)")
    ax.set_ylabel("recall@100 against exact")
    ax.set_title("Top-100 over 1M items: FAISS IVF against exact", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.3, y=0.1)
    return _save(fig, "ann.png")


# (doc, section) -> chart function; a section may feed one chart
CHARTS = {
    ("benchmarks.md", "retrieval"): retrieval,
    ("mf.md", "ml100k"): mf,
    ("mf.md", "synthetic"): mf,
    ("mf.md", "explicit"): explicit,
    ("serving.md", "bench_ann"): ann,
}


def refresh(doc: str, section: str) -> Path | None:
    """Redraw the chart fed by ``docs/doc``'s ``section``, if any; ``None`` without one or
    without matplotlib (a note on stderr)."""
    chart = CHARTS.get((doc, section))
    if chart is None:
        return None
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "note: chart not redrawn: matplotlib is missing (pip install -e '.[plot]')",
            file=sys.stderr,
        )
        return None
    return chart()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="show which table feeds which chart")
    args = parser.parse_args(argv)
    if args.list:
        for (doc, section), chart in CHARTS.items():
            print(f"docs/{doc} [{section}] -> docs/img/{chart.__name__}.png")
        return 0
    for chart in dict.fromkeys(CHARTS.values()):
        print(f"wrote {chart().relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
