"""The TFRS multitask tutorial's table: (rating, retrieval) weights (1,0), (0,1), (1,1).

    python benchmarks/bench_multitask.py

Seeded random 80/20 MovieLens 100k split (movies keyed by title, as TFRS), the ``multitask``
preset (TFRS's settings). Prints recfunnel's top-100 factorized accuracy and RMSE beside the
numbers the TFRS tutorial prints, and writes docs/ranking.md (section ``bench_multitask``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import markdown_table, write_with_command
from recfunnel import experiment
from recfunnel.data.sources import DataSpec
from recfunnel.metrics import factorized_key

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ranking.md"
# printed in the TFRS "Multi-task recommenders" tutorial (top-100 accuracy, RMSE)
TFRS = {(1.0, 0.0): (0.060, 1.113), (0.0, 1.0): (0.233, 3.688), (1.0, 1.0): (0.235, 1.110)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--seed", type=int, default=0, help="model seed")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    spec = DataSpec(data_dir=args.data_dir)
    rows = []
    for (rating, retrieval), (tfrs_top100, tfrs_rmse) in TFRS.items():
        model = experiment.build_model(
            "multitask", "seed", rating_weight=rating, retrieval_weight=retrieval, seed=args.seed
        )
        run, *_ = experiment.train(spec, model)
        m = run.metrics
        top100 = m[factorized_key(100)]
        rows.append([f"({rating:g}, {retrieval:g})", top100, tfrs_top100, m["rmse"], tfrs_rmse,
                     f"{m['fit_seconds']:.1f}"])  # fmt: skip
        print(f"({rating:g}, {retrieval:g}): top-100 {top100:.3f} rmse {m['rmse']:.3f}", flush=True)
    table = markdown_table(
        ["(rating, retrieval)", "top-100 recfunnel", "top-100 TFRS", "RMSE recfunnel",
         "RMSE TFRS", "fit s"], rows,
    )  # fmt: skip
    print(table)
    if not args.no_docs:
        write_with_command(DOCS, "bench_multitask", table)


if __name__ == "__main__":
    main()
