"""Fixtures for the HTTP service: small saved runs and test clients (no network)."""

from __future__ import annotations

import pytest

from recfunnel.data import Vocabulary, checkerboard
from recfunnel.models import TwoTower
from recfunnel.runs import Run


def make_run(seed: int = 0, num_users: int = 8, num_items: int = 12) -> Run:
    data = checkerboard(num_users, num_items, seed=seed)
    model = TwoTower(dim=4, epochs=2, softmax="full", reduction="mean", optimizer="adam",
                     learning_rate=0.05, seed=seed).fit(data)  # fmt: skip
    users = Vocabulary([f"u{i}" for i in range(num_users)], name="user")
    items = Vocabulary([f"i{i}" for i in range(num_items - 1)] + ["a/b c"], name="item")
    titles = [f"Film {i}" for i in range(num_items)]
    return Run(model, users, items, item_titles=titles, config={"data": {}}, metrics={"m": 0.5})


@pytest.fixture
def run_dir(tmp_path):
    return make_run().save(tmp_path / "run")


@pytest.fixture
def other_run_dir(tmp_path):
    return make_run(seed=1, num_items=14).save(tmp_path / "other")


@pytest.fixture
def save_run():
    """``save_run(path, seed=0, num_items=12)``: save a small run at ``path``."""
    return lambda path, **kwargs: make_run(**kwargs).save(path)


@pytest.fixture
def client(run_dir):
    from fastapi.testclient import TestClient

    from recfunnel.serving import create_app

    with TestClient(create_app(run_dir), raise_server_exceptions=False) as c:
        yield c


TOKEN = "s3cret"


@pytest.fixture
def admin(run_dir):
    """A client of an app started with a token (so the admin endpoint exists), sending it."""
    from fastapi.testclient import TestClient

    from recfunnel.serving import create_app

    app = create_app(run_dir, token=TOKEN)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(app, raise_server_exceptions=False, headers=headers) as c:
        yield c


def tamper(path, *, truncate: bool = False) -> None:
    """Flip the last byte of the weights file, or cut it short."""
    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if truncate:
        data = data[: len(data) // 2]
    else:
        data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


@pytest.fixture
def break_run():
    """``break_run(path, truncate=False)``: damage a saved run's weights file."""
    return tamper


@pytest.fixture(scope="module")
def save_run_module():
    """Module-scoped ``save_run``."""
    return lambda path, **kwargs: make_run(**kwargs).save(path)
