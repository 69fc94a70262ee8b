"""Approximate vs exact top-k on a synthetic catalogue (default: 1M items, 32 dimensions).

Items are drawn around ``--clusters`` random centres (learned item embeddings are clustered;
on structureless Gaussian noise no index beats brute force by much), queries the same way.
For each FAISS setting it reports build time, recall@k against the exact answer, queries per
second and the speed-up over :class:`recfunnel.index.BruteForceIndex` on the same queries,
batch and thread count. Prints a table and writes it into ``docs/serving.md``.

    python benchmarks/bench_ann.py                       # 1M items, k=100, IVF and HNSW
    python benchmarks/bench_ann.py --items 200000 --kinds ivf --no-doc   # a quick look
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from common import markdown_table, write_section
from recfunnel.index import BruteForceIndex
from recfunnel.index_faiss import FaissIndex


def synthetic(n: int, dim: int, clusters: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    which = torch.randint(0, clusters, (n,), generator=g)
    return centres[which] + 0.5 * torch.randn(n, dim, generator=g)


def timed_search(index, queries, k, batch) -> tuple[float, torch.Tensor]:
    started = time.perf_counter()
    ids = [index.search(queries[i : i + batch], k)[0] for i in range(0, len(queries), batch)]
    return time.perf_counter() - started, torch.cat(ids)


def recall(got: torch.Tensor, want: torch.Tensor) -> float:
    k = want.shape[1]
    return float(
        np.mean(
            [len(np.intersect1d(g, w)) / k for g, w in zip(got.numpy(), want.numpy(), strict=True)]
        )
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=32)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("-k", type=int, default=100)
    p.add_argument("--batch", type=int, default=100, help="queries per search call")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--kinds", default="ivf,hnsw")
    p.add_argument("--nprobe", default="16,32,64,128", help="IVF settings to try")
    p.add_argument("--ef", default="128,256", help="HNSW efSearch settings to try")
    p.add_argument("--no-doc", action="store_true")
    args = p.parse_args(argv)
    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    vectors = synthetic(args.items, args.dim, args.clusters, seed=0)
    queries = synthetic(args.queries, args.dim, args.clusters, seed=1)
    exact = BruteForceIndex(vectors)
    exact_s, want = timed_search(exact, queries, args.k, args.batch)
    exact_qps = len(queries) / exact_s
    header = ["index", "setting", "build s", f"recall@{args.k}", "queries/s", "speed-up"]
    rows = [["exact (brute force)", "-", "0", "1.000", f"{exact_qps:.0f}", "1.0x"]]
    print(markdown_table(header, rows), flush=True)
    for kind in args.kinds.split(","):
        started = time.perf_counter()
        index = FaissIndex(vectors, kind=kind)
        build = time.perf_counter() - started
        efforts = args.nprobe if kind == "ivf" else args.ef
        for effort in [int(e) for e in efforts.split(",")]:
            index.effort = effort
            index.search(queries[:10], args.k)  # warm-up
            seconds, got = timed_search(index, queries, args.k, args.batch)
            qps = len(queries) / seconds
            name = {"ivf": "nprobe", "hnsw": "efSearch"}[kind]
            extra = f", nlist={index.faiss_index.nlist}" if kind == "ivf" else ", M=32"
            rows.append(
                [
                    f"FAISS {kind.upper()}",
                    f"{name}={effort}{extra}",
                    f"{build:.1f}",
                    f"{recall(got, want):.3f}",
                    f"{qps:.0f}",
                    f"{qps / exact_qps:.1f}x",
                ]
            )
            print(markdown_table(header, rows[-1:]), flush=True)
    table = markdown_table(header, rows)
    print()
    print(table)
    if not args.no_doc:
        note = (
            f"`python benchmarks/bench_ann.py {' '.join(argv or sys.argv[1:])}`: "
            f"{args.items:,} items x {args.dim} dims around {args.clusters} centres, "
            f"{args.queries} queries in batches of {args.batch}, {args.threads} threads, "
            f"{time.strftime('%Y-%m-%d %H:%M')}, load average {os.getloadavg()[0]:.1f}."
        )
        write_section("serving.md", "bench_ann", note + "\n\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
