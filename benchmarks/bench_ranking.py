"""Ranking model RMSE/MAE on the MovieLens 100k folds u1..u5 (movies keyed by id).

    python benchmarks/bench_ranking.py                      # default preset, u1..u5
    python benchmarks/bench_ranking.py --folds u1 --presets seed default

Prints a table and writes it into docs/ranking.md (section ``bench_ranking``). Each fold trains
on ``uN.base`` and is scored on ``uN.test``; the presets were chosen on a validation split carved
from u1.base, never on a test file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import markdown_table, write_with_command
from recfunnel import experiment
from recfunnel.data.sources import DataSpec

DOCS = Path(__file__).resolve().parents[1] / "docs" / "ranking.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", nargs="+", default=["u1", "u2", "u3", "u4", "u5"])
    parser.add_argument("--presets", nargs="+", default=["default"])
    parser.add_argument("--data-dir")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()

    rows = []
    for name in args.presets:
        results = []
        for fold in args.folds:
            spec = DataSpec(split=fold, item_key="id", data_dir=args.data_dir)
            model = experiment.build_model("ranking", name)
            run, *_ = experiment.train(spec, model)
            m = run.metrics
            results.append((m["rmse"], m["mae"], m["fit_seconds"]))
            rows.append([name, fold, m["rmse"], m["mae"], f"{m['fit_seconds']:.1f}"])
            print(f"{name:8s} {fold}: rmse {m['rmse']:.4f} mae {m['mae']:.4f} "
                  f"fit {m['fit_seconds']:.1f}s", flush=True)  # fmt: skip
        if len(results) > 1:
            mean = [sum(r[i] for r in results) / len(results) for i in range(3)]
            rows.append([name, "mean", mean[0], mean[1], f"{mean[2]:.1f}"])
    table = markdown_table(["preset", "fold", "RMSE", "MAE", "fit s"], rows)
    print(table)
    if not args.no_docs:
        write_with_command(DOCS, "bench_ranking", table)


if __name__ == "__main__":
    main()
