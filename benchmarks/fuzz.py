"""Explore the property tests with fresh seeds and a larger budget than CI.

CI runs every hypothesis test derandomized (the "ci" profile in tests/conftest.py: the same
examples each run, so a red build always reproduces). This entry point runs the same properties
with the "explore" profile: a new random seed each time (printed), N examples per test.

    python benchmarks/fuzz.py                      # data readers, 2000 examples per test
    python benchmarks/fuzz.py --examples 20000 --serving
    python benchmarks/fuzz.py --seed 1234          # replay one exploration

A failure prints the falsifying example and a ``@reproduce_failure`` blob; add that example to
the test (or fix the code and keep the case as a regular test) so CI keeps checking it.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READERS = ["tests/data/test_io_fuzz.py"]
SERVING = ["tests/serving/test_fuzz.py"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=2000, help="examples per test")
    parser.add_argument("--seed", type=int, help="replay a seed (default: a new one)")
    parser.add_argument("--serving", action="store_true", help="also fuzz the HTTP endpoints")
    parser.add_argument("-k", help="only tests matching this pytest expression")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    env = {**os.environ, "HYPOTHESIS_PROFILE": "explore",
           "RECFUNNEL_FUZZ_EXAMPLES": str(args.examples)}  # fmt: skip
    paths = READERS + (SERVING if args.serving else [])
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               f"--hypothesis-seed={seed}", *paths]  # fmt: skip
    if args.k:
        command += ["-k", args.k]
    print(f"fuzzing with seed {seed}, {args.examples} examples per test: {' '.join(paths)}")
    code = subprocess.call(command, cwd=REPO, env=env)
    print(f"seed {seed}: {'no failure' if code == 0 else 'FAILED, see above'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
