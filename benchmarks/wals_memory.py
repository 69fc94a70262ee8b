"""Where WALS's memory goes in implicit's harness: resident memory through one fit, by stage.

    OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=src python benchmarks/wals_memory.py \\
        /tmp/recfunnel-scale/20M [--iterations 1]

Reads the split bench_scale.py saves (``train.npz``, ``test.npz``; both before the fit, as
``child-wals`` did until session 4: it now reads the test split after the fit), fits WALS
``seed`` and prints the RSS after each stage -- imports, the two ``Interactions``, the model's
user x item CSR, the solver (the item side, the factors), each iteration, the end of the fit
-- with the highest RSS sampled (every 20 ms, by a thread) since the stage before: what a
stage makes and drops again. The last line is the process's peak (``ru_maxrss``).
docs/scale.md's RSS table in "WALS at 20M rows" comes from it.
"""

from __future__ import annotations

import os
import threading
import time

PAGE = os.sysconf("SC_PAGE_SIZE")
samples: list[tuple[float, float]] = []
marks: list[tuple[float, str, float]] = []


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


def mark(label: str) -> None:
    marks.append((time.perf_counter(), label, rss_mb()))


def main() -> None:
    mark("start")
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append((time.perf_counter(), rss_mb()))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    import argparse
    import dataclasses
    import resource

    import numpy as np

    from recfunnel.data import Interactions
    from recfunnel.models import WALS, als
    from recfunnel.presets import preset

    mark("imports")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="holds train.npz and test.npz (bench_scale.py's split)")
    parser.add_argument("--iterations", type=int, default=1)
    args = parser.parse_args()
    raw, held = np.load(f"{args.folder}/train.npz"), np.load(f"{args.folder}/test.npz")
    shape = int(raw["num_users"]), int(raw["num_items"])
    train = Interactions(raw["users"], raw["items"], *shape)
    test = Interactions(held["users"], held["items"], *shape)  # noqa: F841 - alive, as there
    mark("the Interactions")

    solver_init, solver_epoch = als.WALSSolver.__init__, als.WALSSolver.fit_epoch

    def init(self, *a, **k):
        mark("the user x item CSR")  # the model's seen_ (shared with the solver)
        solver_init(self, *a, **k)
        mark("the solver")

    def epoch(self, *a, **k):
        out = solver_epoch(self, *a, **k)
        mark("an iteration")
        return out

    als.WALSSolver.__init__, als.WALSSolver.fit_epoch = init, epoch
    config = preset("wals", "seed")
    config = dataclasses.replace(
        config, trainer=dataclasses.replace(config.trainer, epochs=args.iterations)
    )
    WALS(config).fit(train)
    mark("the end of the fit")
    done.set()
    sampler.join()
    print(f"{'after':<22} {'seconds':>8} {'RSS MB':>8} {'highest since the last':>24}")
    previous = marks[0][0]
    for at, label, rss in marks:
        inside = [value for t, value in samples if previous <= t <= at]
        print(f"{label:<22} {at - marks[0][0]:8.1f} {rss:8.0f} {max(inside + [rss]):24.0f}")
        previous = at
    print(
        f"peak RSS (ru_maxrss): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
    )


if __name__ == "__main__":
    main()
