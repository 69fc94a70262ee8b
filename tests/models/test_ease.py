"""EASE: agreement with a dense float64 reference, fold-in, memory refusal, saving."""

import numpy as np
import pytest
import torch

from recfunnel.cli import main
from recfunnel.data import Interactions, checkerboard
from recfunnel.data.vocab import Vocabulary
from recfunnel.errors import RecfunnelError
from recfunnel.models import EASE
from recfunnel.models.ease import ease_fits, ease_memory_bytes


def dense_reference(X: np.ndarray, lam: float) -> np.ndarray:
    """Steck 2019, Algorithm 1, in float64 NumPy: B = I - P diag(1 / diag(P))."""
    G = X.T @ X + lam * np.eye(X.shape[1])
    P = np.linalg.inv(G)
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


def random_data(users=30, items=25, density=0.2, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    mask = rng.random((users, items)) < density
    mask[np.arange(users), rng.integers(0, items, users)] = True  # every user has an item
    u, i = np.nonzero(mask)
    return Interactions(u, i, users, items)


@pytest.mark.parametrize("lam", [0.5, 10.0, 300.0])
def test_weights_match_the_dense_reference(lam):
    data = random_data()
    model = EASE(regularization=lam).fit(data)
    X = data.to_csr().toarray().astype(np.float64)
    B = dense_reference(X, lam)
    np.testing.assert_allclose(model.item_weights_.numpy().T, B, rtol=2e-3, atol=2e-5)
    assert np.abs(np.diag(model.item_weights_.numpy())).max() == 0.0
    scores = model.score(np.arange(data.num_users)).numpy()
    np.testing.assert_allclose(scores, X @ B, rtol=2e-3, atol=1e-4)


def test_repeated_interactions_count_once():
    data = random_data(seed=3)
    doubled = Interactions(
        np.concatenate([data.users, data.users[:10]]),
        np.concatenate([data.items, data.items[:10]]),
        data.num_users,
        data.num_items,
    )
    a = EASE(regularization=5.0).fit(data).item_weights_
    b = EASE(regularization=5.0).fit(doubled).item_weights_
    torch.testing.assert_close(a, b)


def test_checkerboard_structure_is_learned():
    data = checkerboard(20, 20, seed=0)
    model = EASE(regularization=1.0).fit(data)
    ids, _ = model.recommend(np.arange(20), 1)
    assert ((ids[:, 0] % 2) == (np.arange(20) % 2)).all()


def test_refuses_when_items_squared_do_not_fit():
    assert ease_memory_bytes(10_000) == 3 * 4 * 10_000**2
    assert ease_fits(1000, max_memory_gb=1.0)
    assert not ease_fits(20_000, max_memory_gb=1.0)
    data = random_data()
    with pytest.raises(RecfunnelError, match="use WALS or TwoTower") as caught:
        EASE(max_memory_gb=1e-9).fit(data)
    assert caught.value.for_cli().endswith("use --model wals or --model two-tower")


def test_bad_regularization():
    with pytest.raises(RecfunnelError, match="regularization must be positive"):
        EASE(regularization=0.0).fit(random_data())


def test_round_trip_through_a_run_folder(tmp_path):
    from recfunnel.runs import Run

    data = random_data(seed=2)
    model = EASE(regularization=7.0).fit(data)
    users = [f"u{i}" for i in range(data.num_users)]
    items = [f"i{i}" for i in range(data.num_items)]

    run = Run(model, Vocabulary(users), Vocabulary(items), config={}, metrics={})
    run.save(tmp_path / "run")
    loaded = Run.load(tmp_path / "run")
    assert isinstance(loaded.model, EASE)
    assert loaded.model.get_params() == model.get_params()
    every = np.arange(data.num_users)
    torch.testing.assert_close(loaded.model.score(every), model.score(every), rtol=0, atol=0)
    a = loaded.recommend("u3", 5)
    b = run.recommend("u3", 5)
    assert a.items == b.items


def test_cli_refusal_is_one_line(tmp_path, capsys):
    train = tmp_path / "train.csv"
    rows = "\n".join(f"{u},{i}" for u in range(8) for i in range(u % 3, 12, 3))
    train.write_text("user,item\n" + rows + "\n", encoding="utf-8")
    code = main(["train", "--train", str(train), "--model", "ease", "--set",
                 "max_memory_gb=1e-12"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: EASE needs")
    assert "wals" in err


# ------------------------------------------------------------------ the order-aware Gram
def timed_data(users=25, items=20, density=0.3, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    mask = rng.random((users, items)) < density
    mask[np.arange(users), rng.integers(0, items, users)] = True
    u, i = np.nonzero(mask)
    stamps = rng.integers(0, 50, len(u))  # ties included: broken by row order
    return Interactions(u, i, users, items, timestamps=stamps)


def ordered_reference(data: Interactions, window: float, floor: float) -> np.ndarray:
    """The definition, one user at a time: her items in (time, row) order, each pair k places
    apart weighs floor + (1 - floor) exp(-k / window) up to REACH x window places, else floor."""
    from recfunnel.models.ease import REACH

    G = np.zeros((data.num_items, data.num_items))
    for user in range(data.num_users):
        rows = np.flatnonzero(data.users == user)
        rows = rows[np.lexsort((rows, data.timestamps[rows]))]
        items = data.items[rows]
        for a in range(len(items)):
            for b in range(len(items)):
                k = abs(a - b)
                near = np.exp(-k / window) if k <= REACH * window else 0.0
                G[items[a], items[b]] += floor + (1 - floor) * near
    return G


@pytest.mark.parametrize("window, floor", [(2.0, 0.3), (0.5, 0.0), (10.0, 0.7)])
def test_ordered_gram_matches_the_definition(window, floor):
    from recfunnel.models.ease import ordered_gram

    data = timed_data()
    G = ordered_gram(data, window, floor).numpy()
    np.testing.assert_allclose(G, ordered_reference(data, window, floor), rtol=1e-5, atol=1e-5)


def test_ordered_gram_with_floor_one_is_the_plain_gram_and_repeats_count_once():
    from recfunnel.models.ease import ordered_gram

    data = timed_data(seed=2)
    X = data.to_csr().toarray()
    np.testing.assert_allclose(ordered_gram(data, 3.0, 1.0).numpy(), X.T @ X, atol=1e-5)
    again = Interactions(np.concatenate([data.users, data.users[:7]]),
                         np.concatenate([data.items, data.items[:7]]), data.num_users,
                         data.num_items, timestamps=np.concatenate(
                             [data.timestamps, data.timestamps[:7] + 100]))  # fmt: skip
    torch.testing.assert_close(ordered_gram(again, 3.0, 0.3), ordered_gram(data, 3.0, 0.3))


def test_window_uses_the_order_and_needs_timestamps():
    data = timed_data(seed=4)
    ordered = EASE(regularization=5.0, window=2.0).fit(data)
    assert ordered.ordered_
    X = data.to_csr().toarray().astype(np.float64)
    B = dense_reference(X, 5.0)
    assert not np.allclose(ordered.item_weights_.numpy().T, B, atol=1e-3)
    plain = Interactions(data.users, data.items, data.num_users, data.num_items)
    unordered = EASE(regularization=5.0, window=2.0).fit(plain)  # no timestamps: plain Gram
    assert not unordered.ordered_
    np.testing.assert_allclose(unordered.item_weights_.numpy().T, B, rtol=2e-3, atol=2e-5)
