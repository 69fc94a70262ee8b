"""How the EASE, RP3beta and BPR defaults were chosen (#12): validation splits of several datasets.

    python benchmarks/derive_defaults.py --datasets ml100k,synthetic,ml1m

Every figure is on a validation split carved from the training rows (``quality_data.tuning_split``:
a seeded random 10% for ML-100k and the synthetic set, each user's last training item for the
ML-1M sequences); the test rows are never read. Two tables go to docs/quality.md:

* EASE: validation Recall@10 / NDCG@10 over ``lambda`` per dataset.
* RP3beta: validation NDCG@10 over ``alpha`` x ``beta`` per dataset (``--rp3beta``).
* EASE's order-aware Gram: validation Recall@10 / NDCG@10 over ``window`` (floor 0.3, lambda
  300) on the datasets with timestamps (``--ease-window``).
* BPR: most-popular, the old BPR (one uniform negative, L2 1e-4, 30 epochs = the ``seed`` preset)
  and the new ``default`` preset (8 uniform negatives, L2 1e-2, 20 epochs).

Threads: torch 1, OMP/MKL/OpenBLAS 1. The machine was shared: fit times are indicative only.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality_data as qd  # noqa: E402
from common import markdown_table, write_with_command  # noqa: E402
from recfunnel.metrics import evaluate_scores  # noqa: E402
from recfunnel.models import model_class  # noqa: E402
from recfunnel.models.ease import ease_weights  # noqa: E402
from recfunnel.models.rp3beta import rp3beta_weights  # noqa: E402
from recfunnel.presets import preset  # noqa: E402

LAMBDAS = (30, 100, 300, 1000, 3000)
ALPHAS = (0.5, 0.8, 1.0)
WINDOWS = (None, 10.0, 20.0, 50.0, 100.0)
BETAS = (0.0, 0.3, 0.5, 0.7)


def split(name: str):
    if name == "ml100k":
        return qd.tuning_split(qd.ml100k_seed()[0])
    if name == "synthetic":
        return qd.tuning_split(qd.synthetic()[0])
    if name == "ml1m":
        return qd.tuning_split(qd.ml1m_sequences().train, sequential=True)
    raise SystemExit(f"unknown dataset {name!r}")


def validate(scorer, fit, validation) -> dict:
    return evaluate_scores(scorer, fit, validation, factorized_ks=(), ranking_ks=(10,))


def ease_sweep(fit, validation) -> list[str]:
    X = fit.to_csr().astype(np.float32)
    X.data[:] = 1.0
    gram = torch.as_tensor((X.T @ X).toarray())
    dense = torch.as_tensor(X.toarray())
    cells = []
    for lam in LAMBDAS:
        scores = dense @ ease_weights(gram.clone(), float(lam)).T
        m = validate(lambda u, s=scores: s[torch.as_tensor(u)], fit, validation)
        cells.append(f"{m['recall@10']:.4f} / {m['ndcg@10']:.4f}")
    return cells


def rp3beta_sweep(name, fit, validation) -> list[list]:
    X = fit.to_csr().astype(np.float32)
    X.data[:] = 1.0
    dense = torch.as_tensor(X.toarray())
    rows = []
    for alpha in ALPHAS:
        cells = []
        for beta in BETAS:
            scores = dense @ rp3beta_weights(X, alpha, beta).T
            m = validate(lambda u, s=scores: s[torch.as_tensor(u)], fit, validation)
            cells.append(f"{m['recall@10']:.4f} / {m['ndcg@10']:.4f}")
        rows.append([name, alpha, *cells])
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def window_sweep(name, fit, validation) -> list:
    cells = []
    for window in WINDOWS:
        model = model_class("ease")(regularization=300.0, window=window, floor=0.3).fit(fit)
        m = validate(model.score, fit, validation)
        cells.append(f"{m['recall@10']:.4f} / {m['ndcg@10']:.4f}")
        print(name, window, cells[-1], file=sys.stderr, flush=True)
    return [name, *cells]


def bpr_rows(name, fit, validation) -> list[list]:
    rows = []
    for label, kind, params in (
        ("most-popular", "most-popular", {}),
        ("BPR before (seed preset)", "bpr", preset("bpr", "seed")),
        ("BPR default", "bpr", preset("bpr", "default")),
    ):
        model = model_class(kind)(params)
        started = time.perf_counter()
        model.fit(fit)
        seconds = time.perf_counter() - started
        m = validate(model.score, fit, validation)
        rows.append([name, label, m["recall@10"], m["ndcg@10"], f"{seconds:.1f}"])
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="ml100k,synthetic,ml1m")
    parser.add_argument(
        "--bpr-datasets",
        default="ml100k,synthetic,ml1m",
        help="datasets that also get the BPR comparison (slow on ml1m)",
    )
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--rp3beta", action="store_true", help="only the RP3beta sweep")
    parser.add_argument("--ease-window", action="store_true", help="only EASE's window sweep")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.ease_window:
        rows = [window_sweep(name, *split(name)) for name in args.datasets.split(",")]
        header = ["dataset", *["plain Gram" if w is None else f"window {w:g}" for w in WINDOWS]]
        text = markdown_table(header, rows)
        print(text)
        if not args.no_docs:
            write_with_command("quality.md", "derive-window",
                               "Validation Recall@10 / NDCG@10 (λ = 300, floor 0.3).\n\n"
                               + text)  # fmt: skip
        return
    if args.rp3beta:
        rows = []
        for name in args.datasets.split(","):
            rows += rp3beta_sweep(name, *split(name))
        text = markdown_table(["dataset", "alpha", *[f"β={b}" for b in BETAS]], rows)
        print(text)
        if not args.no_docs:
            write_with_command("quality.md", "derive-rp3beta",
                               "Validation Recall@10 / NDCG@10.\n\n" + text)  # fmt: skip
        return
    ease, bpr = [], []
    for name in args.datasets.split(","):
        fit, validation = split(name)
        density = len(fit) / (fit.num_users * fit.num_items)
        ease.append([name, f"{fit.num_users} x {fit.num_items}, {density:.2%}",
                     *ease_sweep(fit, validation)])  # fmt: skip
        print(ease[-1], file=sys.stderr, flush=True)
        if name in args.bpr_datasets.split(","):
            bpr += bpr_rows(name, fit, validation)
    ease_text = markdown_table(
        ["dataset", "users x items, density", *[f"λ={lam}" for lam in LAMBDAS]], ease
    )
    print(ease_text)
    if not args.no_docs:
        write_with_command("quality.md", "derive-ease", "Validation Recall@10 / NDCG@10.\n\n"
                           + ease_text)  # fmt: skip
    if bpr:
        bpr_text = markdown_table(
            ["dataset", "model", "val Recall@10", "val NDCG@10", "fit s"], bpr
        )
        print(bpr_text)
        if not args.no_docs:
            write_with_command("quality.md", "derive-bpr", bpr_text)


if __name__ == "__main__":
    main()
