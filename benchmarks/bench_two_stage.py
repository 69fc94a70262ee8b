"""Two-stage (retrieval top-100 -> ranker) against retrieval alone, filtered metrics @10.

    python benchmarks/bench_two_stage.py

Seeded random 80/20 MovieLens 100k split (``DataSpec()`` defaults), the ``two-stage`` default
preset. Both columns come from one fitted model: ``retrieval/...`` metrics score its retrieval
stage alone, the others the whole pipeline; training items are excluded from every ranking.
Writes docs/ranking.md (section ``bench_two_stage``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import markdown_table, write_with_command
from recfunnel import experiment
from recfunnel.data.sources import DataSpec

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ranking.md"
METRICS = ("ndcg@10", "recall@10", "precision@10", "map@10", "hit_rate@10", "mrr", "recall@100")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir")
    parser.add_argument("--preset", default="default")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()
    model = experiment.build_model("two-stage", args.preset)
    run, *_ = experiment.train(DataSpec(data_dir=args.data_dir), model)
    m = run.metrics
    rows = [[key, m[f"retrieval/{key}"], m[key]] for key in METRICS]
    rows.append(["fit seconds (both stages)", "", f"{m['fit_seconds']:.1f}"])
    table = markdown_table(["metric", "retrieval alone", "two-stage"], rows)
    print(table)
    if not args.no_docs:
        write_with_command(DOCS, "bench_two_stage", table)


if __name__ == "__main__":
    main()
