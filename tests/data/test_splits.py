import numpy as np
import pytest

from recfunnel.data import Interactions, holdout_users, random_split, temporal_split
from recfunnel.errors import DataError


def test_random_split_is_seeded_disjoint_and_complete(board):
    a_train, a_test = random_split(board, 0.2, seed=3)
    b_train, b_test = random_split(board, 0.2, seed=3)
    np.testing.assert_array_equal(a_test.items, b_test.items)
    assert len(a_train) + len(a_test) == len(board)
    assert abs(len(a_test) - 0.2 * len(board)) <= 1
    pairs = set(zip(a_train.users, a_train.items, strict=False))
    assert not pairs & set(zip(a_test.users, a_test.items, strict=False))


def test_temporal_split_holds_out_each_users_latest(tiny):
    train, test = temporal_split(tiny, n_last=1)
    held = dict(zip(test.users.tolist(), test.items.tolist(), strict=False))
    # user 0: t=20 -> item 1; user 1: t=30 -> item 2; user 2 has one row and stays; user 3: item 4
    assert held == {0: 1, 1: 2, 3: 4}
    assert len(train) == len(tiny) - 3


def test_temporal_split_needs_timestamps():
    with pytest.raises(DataError, match="timestamps"):
        temporal_split(Interactions([0], [0], 1, 1))


def test_holdout_users_moves_whole_users(board):
    rest, held = holdout_users(board, 0.25, seed=0)
    assert not set(rest.users) & set(held.users)
    assert len(set(held.users)) == 5
