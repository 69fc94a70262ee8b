import numpy as np
import pytest

from recfunnel.data import Interactions
from recfunnel.errors import DataError


def test_validates_on_construction():
    with pytest.raises(DataError, match="one of each"):
        Interactions([0, 1], [0], 2, 2)
    with pytest.raises(DataError, match=r"user indices must lie in \[0, 2\)"):
        Interactions([0, 2], [0, 1], 2, 2)
    with pytest.raises(DataError, match="NaN"):
        Interactions([0], [0], 1, 1, ratings=[np.nan])
    with pytest.raises(DataError, match="negative"):
        Interactions([0], [0], 1, 1, weights=[-1.0])
    with pytest.raises(DataError, match="give one each"):
        Interactions([0, 0], [0, 1], 1, 2, ratings=[1.0])


def test_repr_and_csr(tiny):
    assert "8 rows, 4 users x 5 items" in repr(tiny)
    csr = tiny.to_csr()
    assert csr.shape == (4, 5)
    assert csr[3].indices.tolist() == [0, 2, 4]
    assert tiny.to_csr("ratings")[0, 0] == 5
    np.testing.assert_array_equal(tiny.item_counts(), [2, 2, 2, 1, 1])


def test_deduplicate_keeps_latest_or_averages():
    inter = Interactions([0, 0, 1], [1, 1, 0], 2, 2, ratings=[1, 5, 3], timestamps=[20, 10, 5])
    assert inter.duplicate_pairs() == 1
    last = inter.deduplicate("last")
    assert len(last) == 2 and sorted(last.ratings.tolist()) == [1.0, 3.0]  # t=20 wins
    first = inter.deduplicate("first")
    assert sorted(first.ratings.tolist()) == [3.0, 5.0]
    mean = inter.deduplicate("mean")
    assert sorted(mean.ratings.tolist()) == [3.0, 3.0]


def test_keep_and_sum_for_event_logs():
    # user 0 played item 1 three times (t = 20, 10, 30), user 1 item 0 once
    log = Interactions([0, 0, 1, 0], [1, 1, 0, 1], 2, 2, timestamps=[20, 10, 5, 30])
    assert log.deduplicate("keep") is log
    summed = log.deduplicate("sum")
    assert len(summed) == 2
    by_pair = dict(zip(zip(summed.users.tolist(), summed.items.tolist(), strict=True),
                       zip(summed.weights.tolist(), summed.timestamps.tolist(), strict=True),
                       strict=True))  # fmt: skip
    assert by_pair == {(0, 1): (3.0, 30), (1, 0): (1.0, 5)}  # the count; the latest time
    weighted = Interactions([0, 0, 1], [1, 1, 0], 2, 2, weights=[0.5, 2.0, 1.0],
                            ratings=[2, 4, 5])  # fmt: skip
    merged = weighted.deduplicate("sum")
    assert sorted(merged.weights.tolist()) == [1.0, 2.5]  # weights add up
    assert sorted(merged.ratings.tolist()) == [3.0, 5.0]  # ratings average
    with pytest.raises(DataError, match="keep must be one of"):
        log.deduplicate("max")


def test_subset_and_concat_keep_columns(tiny):
    head = tiny.subset(np.arange(3))
    back = head.concat(tiny.subset(np.arange(3, 8)))
    np.testing.assert_array_equal(back.items, tiny.items)
    np.testing.assert_array_equal(back.timestamps, tiny.timestamps)
