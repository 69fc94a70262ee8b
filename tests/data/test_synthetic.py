import numpy as np
import pytest

from recfunnel.data import checkerboard, power_law


def test_checkerboard_parity():
    board = checkerboard(10, 12, seed=1)
    assert ((board.users % 2) == (board.items % 2)).all()
    assert board.duplicate_pairs() == 0


def test_power_law_is_skewed_seeded_and_unique():
    a = power_law(2000, 500, 20000, seed=3)
    b = power_law(2000, 500, 20000, seed=3)
    np.testing.assert_array_equal(a.items, b.items)
    assert a.duplicate_pairs() == 0
    assert 0.8 * 20000 < len(a) <= 20000
    counts = np.sort(a.item_counts())[::-1]
    assert counts[:50].sum() > 0.3 * len(a)  # the head is heavy


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("shape", [(50, 30, 500), (5, 3, 7), (10, 40, 100)])
def test_power_law_with_more_clusters_than_a_small_catalogue_fills(shape, seed):
    # clusters with no items (64 clusters, 3-40 items) drew past the end of the catalogue
    for dim in (16, 64):
        data = power_law(*shape, seed=seed, dim=dim)
        assert len(data) > 0 and data.items.max() < shape[1]
        assert data.duplicate_pairs() == 0
