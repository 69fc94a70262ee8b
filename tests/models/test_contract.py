"""The contract every model keeps: fit, recommend one vs batch, exclusions, save -> load."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recfunnel.data import Interactions, checkerboard
from recfunnel.errors import NotFittedError, RecfunnelError
from recfunnel.models import MODELS

SMALL = {
    "two-tower": dict(dim=8, epochs=3, batch_size=64, softmax="full", reduction="mean",
                      optimizer="adam", learning_rate=0.05),
    "most-popular": {},
    "ranking": dict(dim=8, epochs=3, batch_size=64, features=False, objective="watch",
                    learning_rate=0.05),
    "multitask": dict(dim=8, hidden=[8], epochs=3, batch_size=64, rating_weight=0.0,
                      retrieval_weight=1.0, optimizer="adam", learning_rate=0.05),
    "two-stage": dict(
        retrieval=dict(dim=8, epochs=3, batch_size=64, softmax="full", reduction="mean",
                       optimizer="adam", learning_rate=0.05),
        ranker=dict(dim=8, epochs=3, batch_size=64, features=False, objective="listwise",
                    learning_rate=0.05),
        candidates=5,
    ),
    "wals": dict(dim=4, epochs=3),
    "sgd-mf": dict(dim=4, epochs=2, batch_size=64),
    "bpr": dict(dim=4, epochs=2, batch_size=64),
    "sequential": dict(dim=8, blocks=1, max_len=10, epochs=2, batch_size=8),
    "blend": dict(members=[{"model": "most-popular"},
                           {"model": "ease", "params": {"regularization": 1.0}}],
                  weights=[0.3, 0.7]),
}  # fmt: skip


def make(kind):
    return MODELS[kind](**SMALL.get(kind, {}))


@pytest.fixture(params=sorted(MODELS))
def fitted(request):
    board = checkerboard(12, 16, seed=1)
    ratings = 1.0 + (board.users + board.items) % 5  # for rating models (sgd-mf)
    data = Interactions(board.users, board.items, 12, 16, ratings=ratings)
    return make(request.param).fit(data), data


def test_unfitted_model_raises_not_fitted():
    for kind in MODELS:
        with pytest.raises(NotFittedError, match="fit"):
            make(kind).recommend(0, 3)


def test_one_user_matches_the_batch_row(fitted):
    model, _ = fitted
    ids, scores = model.recommend(3, 5)
    assert ids.ndim == 1 and scores.ndim == 1 and len(ids) == 5
    batch_ids, batch_scores = model.recommend(np.array([2, 3]), 5)
    assert batch_ids.shape == (2, 5)
    np.testing.assert_array_equal(batch_ids[1], ids)
    np.testing.assert_allclose(batch_scores[1], scores, rtol=1e-5, atol=1e-6)
    assert (np.diff(scores) <= 1e-6).all()  # best first


def test_seen_items_are_excluded_unless_asked(fitted):
    model, data = fitted
    seen = set(data.items[data.users == 3].tolist())
    ids, _ = model.recommend(3, 16 - len(seen))
    assert not seen & set(ids.tolist())
    ids_all, _ = model.recommend(3, 16, exclude_seen=False)
    assert len(ids_all) == 16


def test_allow_and_deny_lists(fitted):
    model, _ = fitted
    ids, _ = model.recommend(0, 3, items=[1, 3, 5], exclude_seen=False)
    assert set(ids.tolist()) <= {1, 3, 5}
    ids, _ = model.recommend(0, 10, filter_items=[1, 3, 5], exclude_seen=False)
    assert not {1, 3, 5} & set(ids.tolist())


def test_bad_k_and_user(fitted):
    model, _ = fitted
    with pytest.raises(RecfunnelError, match="larger than the catalogue"):
        model.recommend(0, 17)
    with pytest.raises(RecfunnelError, match="at least 1"):
        model.recommend(0, 0)
    with pytest.raises(RecfunnelError, match="out of range"):
        model.recommend(99, 3)


def test_state_round_trip_gives_identical_scores(fitted):
    model, _ = fitted
    clone = type(model).from_state(model.get_params(), model.state_tensors())
    users = np.arange(model.num_users)
    torch.testing.assert_close(clone.score(users), model.score(users), rtol=0, atol=0)


def test_every_model_round_trips_through_a_run_folder_on_disk(fitted, tmp_path):
    from recfunnel.data import Vocabulary
    from recfunnel.runs import Run

    model, _ = fitted
    users = Vocabulary([f"u{i}" for i in range(model.num_users)], name="user")
    items = Vocabulary([f"i{i}" for i in range(model.num_items)], name="item")
    Run(model, users, items, config={"data": {}}, metrics={}).save(tmp_path / "run")
    loaded = Run.load(tmp_path / "run")
    assert type(loaded.model) is type(model)
    assert loaded.model.config == model.config
    everyone = np.arange(model.num_users)
    torch.testing.assert_close(loaded.model.score(everyone), model.score(everyone), rtol=0, atol=0)
    ids, scores = loaded.model.recommend(everyone, 5)
    expected_ids, expected_scores = model.recommend(everyone, 5)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(scores, expected_scores)


@pytest.mark.parametrize("kind, params", [("ease", {"regularization": 20.0}), ("rp3beta", {})])
def test_a_folded_in_history_scores_as_the_trained_user(kind, params):
    """Item-to-item models score a history row times their item matrix, with no refit: a
    user's training history folded in gives her trained top k and scores."""
    rng = np.random.default_rng(1)
    mask = rng.random((30, 25)) < 0.2
    mask[np.arange(30), rng.integers(0, 25, 30)] = True  # every user has an item
    data = Interactions(*np.nonzero(mask), 30, 25)
    model = MODELS[kind](**params).fit(data)
    for user in (0, 7, 29):
        history = data.items[data.users == user]
        ids, scores = model.recommend(user, 8)
        fold_ids, fold_scores = model.recommend_history(history, 8)
        np.testing.assert_array_equal(fold_ids, ids)
        np.testing.assert_allclose(fold_scores, scores, rtol=1e-6, atol=1e-6)
        row = sp.csr_matrix((np.ones(len(history)), history, [0, len(history)]), shape=(1, 25))
        torch.testing.assert_close(model.score_history(row), model.score(np.array([user])))
