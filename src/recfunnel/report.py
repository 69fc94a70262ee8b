"""A run report: one self-contained HTML file (charts inlined as PNG, no network, no script).

    recfunnel report runs/ml --out report.html

Sections (each a ``<section id=...>``):

* ``config``: the model, its hyper-parameters and the data spec.
* ``metrics``: the run's test metrics beside the most-popular baseline, fitted again on the same
  training split (the data is loaded as the run's config says; when it cannot be, the section
  says why and shows the run alone).
* ``curves``: per-epoch training loss and validation metrics, for runs with a history.
* ``popularity``: how often each item is recommended against how popular it is, catalogue
  coverage and the Gini coefficient of the recommendation counts, run and baseline side by side.
* ``users``: a handful of users with their history and their recommendations (hits on the
  test split marked), titles shown where known.

Charts need matplotlib (extra ``plot``); without it they are replaced by a note.
"""

from __future__ import annotations

import base64
import html
import json
import re
import time
from pathlib import Path

import numpy as np

from recfunnel.errors import RecfunnelError
from recfunnel.runs import Run

HEADLINE_METRICS = (
    "recall@10", "precision@10", "ndcg@10", "map@10", "hit_rate@10", "mrr", "coverage@10",
    "factorized_top_k/top_10_categorical_accuracy", "factorized_top_k/top_100_categorical_accuracy",
    "rmse", "mae",
)  # fmt: skip
LOWER_IS_BETTER = {"rmse", "mae"}
MAX_POPULARITY_USERS = 10_000


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _note(text: str) -> str:
    text = re.sub(r"https?://[^\s)]+", "its download address", text)  # the page links nowhere
    return f'<p class="note">{_e(text)}</p>'


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return _e(value)


# ------------------------------------------------------------------ the data
class _Context:
    """What the report computes once: the split, the baseline and everyone's top-k."""

    def __init__(self, run: Run, k: int, baseline: bool, seed: int) -> None:
        self.run, self.k, self.seed = run, k, seed
        self.train = run.train_interactions()
        self.test = None
        self.baseline_metrics = None
        self.baseline_model = None
        self.data_note = None
        if baseline:
            self._load_baseline()

    def _load_baseline(self) -> None:
        from recfunnel.data import sources
        from recfunnel.data.sources import DataSpec
        from recfunnel.data.splits import random_split
        from recfunnel.experiment import evaluate
        from recfunnel.models import model_class

        run = self.run
        if not run.config.get("data"):
            self.data_note = "the run records no data spec (saved from Python, not by train)"
            return
        try:
            spec = DataSpec.from_dict(run.config["data"])
            dataset, train, test = sources.load(spec)
        except (RecfunnelError, OSError) as exc:
            self.data_note = f"the run's data could not be loaded again ({exc})"
            return
        if dataset.users != run.users or dataset.items != run.items:
            self.data_note = "the run's data has changed since training (vocabularies differ)"
            return
        fraction = run.config.get("validation_fraction") or 0.0
        if fraction > 0:  # as experiment.train: the model was fitted without the validation rows
            train, _ = random_split(train, fraction, seed=spec.seed + 1)
        self.train, self.test = train, test
        self.baseline_model = model_class("most-popular")().fit(train)
        self.baseline_metrics = evaluate(self.baseline_model, train, test)

    def sample_users(self, n: int, rng: np.random.Generator) -> np.ndarray:
        num_users = len(self.run.users)
        if num_users <= n:
            return np.arange(num_users)
        return np.sort(rng.choice(num_users, n, replace=False))

    def top_k_counts(self, model, users: np.ndarray) -> np.ndarray:
        """[N] how often each item appears in the top-k of ``users`` (seen items excluded)."""
        counts = np.zeros(len(self.run.items), dtype=np.int64)
        k = min(self.k, len(self.run.items))
        for start in range(0, len(users), 1024):
            ids, _ = model.recommend(users[start : start + 1024], k)
            ids = np.asarray(ids).reshape(-1)
            counts += np.bincount(ids[ids >= 0], minlength=len(counts))
        return counts


# ------------------------------------------------------------------ sections
def _config_section(run: Run) -> str:
    config = run.config
    rows = [("model", config.get("model", run.model.kind))]
    if config.get("preset"):
        rows.append(("preset", config["preset"]))
    rows += [(f"params.{k}", v) for k, v in sorted((config.get("params") or {}).items())]
    data = config.get("data") or {}
    rows += [(f"data.{k}", v) for k, v in data.items() if v not in (None, "", {})]
    if config.get("validation_fraction"):
        rows.append(("validation_fraction", config["validation_fraction"]))
    rows += [("users", len(run.users)), ("items", len(run.items)),
             ("training interactions", int(run.model.seen_.nnz)),
             ("recfunnel version", config.get("recfunnel_version", "?"))]  # fmt: skip
    body = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(json.dumps(v) if isinstance(v, dict | list) else v)}</td>"
        "</tr>"
        for k, v in rows
    )
    return f'<section id="config"><h2>Configuration</h2><table class="kv">{body}</table></section>'


def _metrics_section(run: Run, ctx: _Context) -> str:
    metrics = run.metrics
    base = ctx.baseline_metrics
    names = [m for m in HEADLINE_METRICS if isinstance(metrics.get(m), int | float)]
    head = "<tr><th>metric</th><th>this run</th>"
    if base:
        head += "<th>most popular</th><th>run / baseline</th>"
    head += "</tr>"
    rows = []
    for name in names:
        value = metrics[name]
        cells = f"<td>{_fmt(value)}</td>"
        if base:
            other = base.get(name)
            if isinstance(other, int | float):
                ratio = value / other if other else float("inf")
                better = value < other if name in LOWER_IS_BETTER else value > other
                mark = "better" if better else "worse"
                cells += f'<td>{_fmt(other)}</td><td class="{mark}">{ratio:.2f}x</td>'
            else:
                cells += "<td>—</td><td>—</td>"
        rows.append(f"<tr><th>{_e(name)}</th>{cells}</tr>")
    timing = []
    for name in ("fit_seconds", "eval_seconds", "num_test_rows", "num_eval_users"):
        if isinstance(metrics.get(name), int | float):
            timing.append(f"{_e(name)} {_fmt(metrics[name])}")
    notes = ""
    if base is None:
        notes += _note(
            "Most-popular baseline not computed: "
            + (ctx.data_note or "turned off (--no-baseline)")
            + "."
        )
    else:
        notes += _note(
            "Test metrics of the run (from its metrics.json) beside the most-popular baseline "
            "fitted now on the same training split; seen items are excluded from the per-user "
            "rankings (see the README's Metrics)."
        )
    return (
        '<section id="metrics"><h2>Metrics against the most-popular baseline</h2>'
        f'<table class="grid">{head}{"".join(rows)}</table>'
        f'<p class="muted">{" · ".join(timing)}</p>{notes}</section>'
    )


def _curves_section(run: Run) -> str:
    from recfunnel.plots import curves_figure, matplotlib_missing, png_bytes, training_records

    history = training_records(run.metrics)
    body = ""
    if not history:
        body = _note("This model keeps no per-epoch history (closed form or counts): no curves.")
    elif (missing := matplotlib_missing()) is not None:
        body = _note(f"Training curves skipped: {missing}.")
    else:
        body = _img(png_bytes(curves_figure(history)), "training curves")
        last = history[-1]
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in last.items() if k != "epoch")
        body += f'<p class="muted">{len(history)} epochs; last: {_e(shown)}</p>'
    return f'<section id="curves"><h2>Training curves</h2>{body}</section>'


def _popularity_section(run: Run, ctx: _Context, rng: np.random.Generator) -> str:
    from recfunnel.plots import gini, matplotlib_missing, png_bytes, popularity_figure

    users = ctx.sample_users(MAX_POPULARITY_USERS, rng)
    series = {"this run": ctx.top_k_counts(run.model, users)}
    if ctx.baseline_model is not None:
        series["most popular"] = ctx.top_k_counts(ctx.baseline_model, users)
    popularity = np.asarray(run.popularity, dtype=np.float64)
    top_tenth = np.argsort(-popularity, kind="stable")[: max(1, len(popularity) // 10)]
    rows = []
    for name, counts in series.items():
        share_top = counts[top_tenth].sum() / max(counts.sum(), 1)
        rows.append(
            f"<tr><th>{_e(name)}</th><td>{(counts > 0).mean():.3f}</td>"
            f"<td>{int((counts > 0).sum())}</td><td>{gini(counts):.3f}</td>"
            f"<td>{share_top:.3f}</td></tr>"
        )
    rows.append(
        f"<tr><th>training interactions</th><td>{(popularity > 0).mean():.3f}</td>"
        f"<td>{int((popularity > 0).sum())}</td><td>{gini(popularity):.3f}</td>"
        f"<td>{popularity[top_tenth].sum() / max(popularity.sum(), 1):.3f}</td></tr>"
    )
    table = (
        '<table class="grid"><tr><th></th><th>catalogue coverage</th><th>items shown</th>'
        "<th>Gini</th><th>share to the 10% most popular items</th></tr>"
        f"{''.join(rows)}</table>"
    )
    missing = matplotlib_missing()
    chart = (
        _note(f"Chart skipped: {missing}.")
        if missing
        else _img(png_bytes(popularity_figure(popularity, series)), "popularity bias")
    )
    sampled = f"{len(users)} of {len(run.users)} users" if len(users) < len(run.users) else (
        f"all {len(users)} users")  # fmt: skip
    return (
        '<section id="popularity"><h2>Popularity bias</h2>'
        f'<p class="muted">Top-{ctx.k} lists of {sampled}, seen items excluded. Coverage: '
        "share of the catalogue recommended to someone; Gini: 0 when every item is recommended "
        "equally often, near 1 when a few items take every slot.</p>"
        f"{table}{chart}</section>"
    )


def _users_section(run: Run, ctx: _Context, n: int, rng: np.random.Generator) -> str:
    candidates = np.arange(len(run.users))
    test_items: dict[int, set[int]] = {}
    if ctx.test is not None:
        for u, i in zip(ctx.test.users.tolist(), ctx.test.items.tolist(), strict=True):
            test_items.setdefault(u, set()).add(i)
        candidates = np.array(sorted(test_items), dtype=np.int64)
    if len(candidates) == 0:
        return '<section id="users"><h2>Users</h2>' + _note("No users to show.") + "</section>"
    chosen = np.sort(rng.choice(candidates, min(n, len(candidates)), replace=False))
    titles = run.item_titles
    seen = run.model.seen_
    cards = []
    for u in chosen.tolist():
        raw = run.users.ids[u]
        items = seen.indices[seen.indptr[u] : seen.indptr[u + 1]]
        items = items[np.argsort(-run.popularity[items], kind="stable")]
        history = "".join(f"<li>{_e(titles[i])}</li>" for i in items[:10].tolist())
        more = f'<p class="muted">… and {len(items) - 10} more</p>' if len(items) > 10 else ""
        rec = run.recommend(raw, ctx.k)
        relevant = {titles[i] for i in test_items.get(u, ())}
        recs = "".join(
            f'<li class="{"hit" if t in relevant else ""}">{_e(t)} '
            f'<span class="muted">{s:.3f}</span></li>'
            for t, s in zip(rec.titles, rec.scores, strict=True)
        )
        hits = sum(t in relevant for t in rec.titles)
        hit_note = (
            f"; {hits} of the top {len(rec.titles)} are in the user's {len(relevant)} test "
            "items (marked ✓)"
            if ctx.test is not None
            else ""
        )
        cards.append(
            f'<div class="user"><h3>user {_e(raw)}</h3>'
            f'<p class="muted">{len(items)} training items{hit_note}</p>'
            f'<div class="cols"><div><h4>history (most popular first)</h4><ol>{history}</ol>'
            f"{more}</div><div><h4>top {len(rec.titles)} recommendations</h4><ol>{recs}</ol>"
            "</div></div></div>"
        )
    return f'<section id="users"><h2>Users</h2>{"".join(cards)}</section>'


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 color:#1d2330;background:#f4f6fa;margin:0}
header{background:#1d2330;color:#fff;padding:1rem 2rem}
header h1{margin:0;font-size:1.4rem} header p{margin:.3rem 0 0;color:#c6ccda}
nav{padding:.5rem 2rem;background:#e6ebfb} nav a{margin-right:1rem;color:#3657d6}
section{background:#fff;border:1px solid #e2e5ec;border-radius:8px;margin:1rem 2rem;
 padding:.8rem 1.2rem}
h2{font-size:1.15rem;margin:.2rem 0 .8rem} h3{margin:.2rem 0} h4{margin:.4rem 0;font-size:.9rem}
table{border-collapse:collapse;font-size:.9rem} th,td{padding:.25rem .7rem;text-align:left;
 border-bottom:1px solid #e2e5ec} table.grid td{font-variant-numeric:tabular-nums}
table.kv td{font-family:ui-monospace,monospace;font-size:.85rem;word-break:break-all}
td.better{color:#1b7f3b;font-weight:600} td.worse{color:#b03a2e;font-weight:600}
img{max-width:100%;margin-top:.6rem} .muted{color:#6b7385} .note{color:#6b7385;font-style:italic}
.user{border-top:1px solid #e2e5ec;padding:.6rem 0} .cols{display:grid;
 grid-template-columns:1fr 1fr;gap:1.5rem} ol{margin:0;padding-left:1.6rem;font-size:.9rem}
li.hit{font-weight:600;color:#1b7f3b} li.hit::after{content:" ✓"}
"""


def build_report(run_dir, *, users: int = 5, k: int = 10, baseline: bool = True, seed: int = 0):
    """The report of the run in ``run_dir`` as one HTML string (see the module docstring)."""
    if users < 0 or k < 1:
        raise RecfunnelError(f"users must be >= 0 and k >= 1, not users={users}, k={k}")
    started = time.perf_counter()
    run = Run.load(run_dir)
    ctx = _Context(run, k, baseline, seed)
    rng = np.random.default_rng(seed)
    sections = [
        _config_section(run),
        _metrics_section(run, ctx),
        _curves_section(run),
        _popularity_section(run, ctx, rng),
        _users_section(run, ctx, users, rng),
    ]
    model = run.config.get("model", run.model.kind)
    name = Path(run_dir).resolve().name
    nav = "".join(
        f'<a href="#{s}">{s}</a>' for s in ("config", "metrics", "curves", "popularity", "users")
    )
    took = time.perf_counter() - started
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>recfunnel report: {_e(name)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>recfunnel report: {_e(name)}</h1><p>{_e(model)} · {len(run.users)} users"
        f" · {len(run.items)} items · written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        f" in {took:.1f} s</p></header><nav>{nav}</nav>{''.join(sections)}</body></html>\n"
    )


def write_report(run_dir, out, **options) -> Path:
    """Write the report to ``out`` atomically (temporary file, then rename); returns ``out``."""
    from recfunnel.artifacts import atomic_file

    text = build_report(run_dir, **options)
    out = Path(out)
    if out.is_dir():
        raise RecfunnelError(f"{out} is a folder; give a file name such as {out}/report.html")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(out) as fh:
        fh.write(text)
    return out
