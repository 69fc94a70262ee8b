"""Shared fixtures. Real MovieLens data comes from $RECFUNNEL_DATA_DIR or ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from recfunnel.data import Interactions, checkerboard

# Property tests: CI is deterministic (derandomized: the same examples on every run, so a red CI
# always reproduces). `python benchmarks/fuzz.py` explores with fresh seeds and a larger budget
# through the "explore" profile; HYPOTHESIS_PROFILE picks a profile by name.
settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=60,  # per test that does not set its own; the whole suite stays fast
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "explore",
    derandomize=False,
    deadline=None,
    max_examples=int(os.environ.get("RECFUNNEL_FUZZ_EXAMPLES", "2000")),
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_heartbeat_in_tests(monkeypatch):
    """Progress lines every hour: on a slow machine a command that runs 9 s before its
    one-line error would otherwise print a heartbeat line first, and the tests that check
    the one-line contract would read two. Tests of progress set their own interval."""
    monkeypatch.setenv("RECFUNNEL_PROGRESS_INTERVAL", "3600")


def ml100k_folder() -> Path | None:
    for base in (os.environ.get("RECFUNNEL_DATA_DIR"), REPO.parent / "shared" / "data"):
        if base and (Path(base) / "ml-100k" / "u.data").is_file():
            return Path(base) / "ml-100k"
    return None


@pytest.fixture(scope="session")
def ml100k() -> Path:
    folder = ml100k_folder()
    if folder is None:
        pytest.skip(
            "MovieLens 100k not found: set RECFUNNEL_DATA_DIR to the folder holding ml-100k/"
        )
    return folder


@pytest.fixture
def board() -> Interactions:
    return checkerboard(20, 20, seed=0)


@pytest.fixture
def tiny() -> Interactions:
    """4 users x 5 items, hand-made."""
    return Interactions(
        users=[0, 0, 1, 1, 2, 3, 3, 3],
        items=[0, 1, 1, 2, 3, 0, 2, 4],
        num_users=4,
        num_items=5,
        ratings=[5, 3, 4, 2, 1, 5, 4, 3],
        timestamps=[10, 20, 10, 30, 5, 1, 2, 3],
    )


@pytest.fixture
def train_csv(tmp_path) -> Path:
    """A small ratings file: 12 users x 16 items, each user rating every other item."""
    rows = ["user,item,rating,ts"]
    for u in range(12):
        for i in range(u % 2, 16, 2):
            rows.append(f"user{u},item{i},{1 + (u + i) % 5},{u * 100 + i}")
    train = tmp_path / "train.csv"
    train.write_text("\n".join(rows) + "\n")
    return train
