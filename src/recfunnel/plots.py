"""Charts as PNG (matplotlib, optional extra ``plot``; headless, no display needed).

Figures are built with matplotlib's object API (``matplotlib.figure.Figure``, rendered by its
Agg canvas), never through ``pyplot``, so saving a run does not change the backend or the
figures of a notebook or script that uses matplotlib itself.

Every function here imports matplotlib lazily; :func:`matplotlib_missing` says why charts are
unavailable (``None`` when they are), so callers can skip a chart with a note instead of failing.

    save_curves(history, "runs/ml/curves.png")   # per-epoch loss and validation metrics
    popularity_figure(popularity, rec_counts)      # how often each item is recommended
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("recfunnel")

PLOT_HINT = "install the 'plot' extra: pip install -e '.[plot]' (matplotlib)"
_NOT_METRICS = {"epoch", "loss", "seconds"}


def matplotlib_missing() -> str | None:
    """``None`` when matplotlib can be used, else a one-line reason with the fix."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError:
        return f"matplotlib is not installed; {PLOT_HINT}"
    return None


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def png_bytes(fig, dpi: int = 100) -> bytes:
    """The figure as PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def training_records(metrics: dict) -> list[dict]:
    """The per-epoch records of a run's metrics (``metrics.json["training_log"]``; runs saved
    before the rename call it ``history``). A two-stage run logs each stage: its ranker's."""
    log = metrics.get("training_log", metrics.get("history")) or []
    if isinstance(log, dict):
        log = log.get("ranker") or next(iter(log.values()), [])
    return list(log)


def curves_figure(history: Sequence[dict]):
    """Per-epoch training loss (left) and validation metrics (right, when recorded).

    ``history``: the trainer's records, ``[{"epoch": 1, "loss": 2.3, "recall@10": 0.1, ...}]``
    (:func:`training_records` of a run's metrics).
    """
    epochs = [r["epoch"] for r in history]
    metrics = sorted({k for r in history for k in r if k not in _NOT_METRICS})
    panels = 2 if metrics else 1
    fig = _figure(5.2 * panels, 3.4)
    axes = fig.subplots(1, panels, squeeze=False)
    ax = axes[0][0]
    ax.plot(epochs, [r["loss"] for r in history], marker="o", color="#3657d6")
    ax.set_title("training loss")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    if metrics:
        ax = axes[0][1]
        for name in metrics:
            points = [
                (r["epoch"], r[name]) for r in history if isinstance(r.get(name), int | float)
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=name)
        ax.set_title("validation")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[0]:
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def save_curves(history: Sequence[dict] | None, path: str | Path) -> bool:
    """Write ``curves.png`` for a run with a training history; returns whether it was written.

    A run without history (closed-form or count models) gets no file; without matplotlib the
    chart is skipped with a one-line note on the ``recfunnel`` logger.
    """
    if not history:
        return False
    missing = matplotlib_missing()
    if missing:
        log.warning("note: curves.png not written: %s", missing)
        return False
    Path(path).write_bytes(png_bytes(curves_figure(history)))
    return True


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative ``counts`` (0: all equal, towards 1: one item takes all)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    # G = sum_i (2i - n - 1) x_(i) / (n * sum x), i = 1..n over the ascending sort
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))


def popularity_figure(popularity: np.ndarray, series: dict[str, np.ndarray]):
    """Popularity bias: how often each item is recommended against how popular it is.

    Args:
        popularity: [N] training interactions per item.
        series: name -> [N] times each item appears in some user's top-k (e.g. the run and the
            most-popular baseline).

    Left: items ranked by popularity (x, most popular first) against their share of all
    recommendations. Right: Lorenz curves (share of recommendations taken by the least
    recommended share of the catalogue), with the training interactions for reference.
    """
    popularity = np.asarray(popularity, dtype=np.float64)
    order = np.argsort(-popularity, kind="stable")
    fig = _figure(10.4, 3.6)
    left, right = fig.subplots(1, 2)
    colors = ["#3657d6", "#d0542c", "#2a9d5c", "#8e44ad"]
    for color, (name, counts) in zip(colors, series.items(), strict=False):
        counts = np.asarray(counts, dtype=np.float64)
        share = counts[order] / max(counts.sum(), 1)
        left.plot(np.arange(1, len(share) + 1), share, ".", ms=3, alpha=0.6, color=color,
                  label=name)  # fmt: skip
        _lorenz(right, counts, f"{name} (Gini {gini(counts):.2f})", color)
    _lorenz(right, popularity, f"training interactions (Gini {gini(popularity):.2f})", "#888888")
    left.set_xscale("log")
    left.set_xlabel("item popularity rank (1 = most interactions in training)")
    left.set_ylabel("share of all recommendations")
    left.set_title("who gets recommended")
    left.grid(alpha=0.3)
    left.legend(fontsize=8, markerscale=3)
    right.plot([0, 1], [0, 1], ":", color="#bbbbbb", lw=1)
    right.set_xlabel("share of the catalogue (least recommended first)")
    right.set_ylabel("cumulative share")
    right.set_title("concentration (Lorenz curves)")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _lorenz(ax, counts: np.ndarray, label: str, color: str) -> None:
    x = np.sort(np.asarray(counts, dtype=np.float64))
    total = x.sum()
    if total == 0:
        return
    cum = np.concatenate([[0.0], np.cumsum(x) / total])
    ax.plot(np.linspace(0, 1, len(cum)), cum, color=color, label=label)
