"""RP3beta: agreement with the random-walk definition, neighbours, fold-in, saving, refusal."""

import numpy as np
import pytest
import torch

from recfunnel.data import Interactions, checkerboard
from recfunnel.errors import RecfunnelError
from recfunnel.models import RP3beta


def random_data(users=30, items=25, density=0.2, seed=0) -> Interactions:
    rng = np.random.default_rng(seed)
    mask = rng.random((users, items)) < density
    mask[np.arange(users), rng.integers(0, items, users)] = True  # every user has an item
    u, i = np.nonzero(mask)
    return Interactions(u, i, users, items)


def walk_reference(X: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Paudel et al. 2017 in float64: W = (P_iu^alpha P_ui^alpha) / pop_j^beta, zero diagonal,
    with P_ui the row-normalised user -> item and P_iu the item -> user transitions."""
    p_ui = X / np.maximum(X.sum(1, keepdims=True), 1)
    p_iu = X.T / np.maximum(X.T.sum(1, keepdims=True), 1)
    W = np.power(p_iu, alpha) @ np.power(p_ui, alpha)
    W = W / np.power(np.maximum(X.sum(0), 1), beta)[None, :]
    np.fill_diagonal(W, 0.0)
    return W


@pytest.mark.parametrize("alpha, beta", [(1.0, 0.0), (0.8, 0.5), (1.3, 1.0)])
def test_weights_match_the_random_walk(alpha, beta):
    data = random_data()
    model = RP3beta(alpha=alpha, beta=beta).fit(data)
    X = data.to_csr().toarray().astype(np.float64)
    W = walk_reference(X, alpha, beta)
    np.testing.assert_allclose(model.item_weights_.numpy().T, W, rtol=1e-4, atol=1e-7)
    scores = model.score(np.arange(data.num_users)).numpy()
    np.testing.assert_allclose(scores, X @ W, rtol=1e-4, atol=1e-6)


def test_plain_walk_rows_are_probabilities():
    data = random_data(seed=4)
    model = RP3beta(alpha=1.0, beta=0.0).fit(data)
    X = data.to_csr().toarray()
    W = model.item_weights_.numpy().T
    # a row of P^2 sums to 1; the diagonal (the walk back to itself) was removed
    p_ui = X / X.sum(1, keepdims=True)
    p_iu = X.T / np.maximum(X.T.sum(1, keepdims=True), 1)
    back = np.diag(p_iu @ p_ui)
    has_users = X.sum(0) > 0
    np.testing.assert_allclose((W.sum(1) + back)[has_users], 1.0, rtol=1e-5)


def test_neighbours_keep_the_strongest_weights_per_item():
    data = random_data(seed=5)
    full = RP3beta(alpha=0.8, beta=0.3).fit(data).item_weights_.numpy().T
    kept = RP3beta(alpha=0.8, beta=0.3, neighbours=4).fit(data).item_weights_.numpy().T
    assert ((kept != 0).sum(1) <= 4).all()
    for i in range(data.num_items):
        top = np.sort(full[i])[-4:]
        np.testing.assert_allclose(np.sort(kept[i])[-4:], top, rtol=1e-6)


def test_checkerboard_structure_is_learned():
    data = checkerboard(20, 20, seed=0)
    model = RP3beta().fit(data)
    ids, _ = model.recommend(np.arange(20), 1)
    assert ((ids[:, 0] % 2) == (np.arange(20) % 2)).all()


def test_refuses_when_items_squared_do_not_fit():
    with pytest.raises(RecfunnelError, match="RP3beta needs .* use WALS or TwoTower"):
        RP3beta(max_memory_gb=1e-9).fit(random_data())


@pytest.mark.parametrize("bad, match", [({"alpha": 0.0}, "alpha must be positive"),
                                         ({"beta": -1.0}, "beta must be"),
                                         ({"neighbours": 0}, "neighbours must be")])  # fmt: skip
def test_bad_options(bad, match):
    with pytest.raises(RecfunnelError, match=match):
        RP3beta(**bad)


def test_round_trip_through_a_run_folder(tmp_path):
    from recfunnel.data.vocab import Vocabulary
    from recfunnel.runs import Run

    data = random_data(seed=2)
    model = RP3beta(alpha=0.7, beta=0.4, neighbours=10).fit(data)
    users = [f"u{i}" for i in range(data.num_users)]
    items = [f"i{i}" for i in range(data.num_items)]
    run = Run(model, Vocabulary(users), Vocabulary(items), config={}, metrics={})
    run.save(tmp_path / "run")
    loaded = Run.load(tmp_path / "run")
    assert isinstance(loaded.model, RP3beta)
    assert loaded.model.get_params() == model.get_params()
    every = np.arange(data.num_users)
    torch.testing.assert_close(loaded.model.score(every), model.score(every), rtol=0, atol=0)
