import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recfunnel.errors import RecfunnelError
from recfunnel.index import BruteForceIndex, top_k_reference


def random_exclusions(rng, rows, cols, density=0.2):
    return sp.random(rows, cols, density=density, format="csr", random_state=rng.integers(1e9))


GRID = [(n, k) for n in (1, 7, 100, 1000) for k in (1, 5, 64) if k <= n]  # larger k: an error


@pytest.mark.parametrize(("num_items", "k"), GRID)
@pytest.mark.parametrize("chunk_size", [3, 50, 65536])
def test_matches_argsort_oracle(num_items, k, chunk_size):
    rng = np.random.default_rng(num_items * 1000 + k)
    items = rng.normal(size=(num_items, 6)).astype(np.float32)
    queries = rng.normal(size=(9, 6)).astype(np.float32)
    exclude = random_exclusions(rng, 9, num_items)
    deny = rng.choice(num_items, size=num_items // 10, replace=False)
    mask = np.ones(num_items, dtype=bool)
    mask[deny] = False
    index = BruteForceIndex(torch.as_tensor(items), chunk_size=chunk_size, query_batch=4)
    ids, scores = index.search(torch.as_tensor(queries), k, exclude=exclude, deny=deny)
    want_ids, want_scores = top_k_reference(queries @ items.T, k, exclude, mask)
    np.testing.assert_array_equal(ids.numpy(), want_ids)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5, atol=1e-5)


def test_allow_list_and_padding():
    items = torch.eye(4)
    index = BruteForceIndex(items)
    ids, scores = index.search(torch.ones(1, 4), 3, allow=[2])
    assert ids.tolist() == [[2, -1, -1]]
    assert torch.isneginf(scores[0, 1:]).all()


@pytest.mark.parametrize("k", [0, -1, 5])
def test_bad_k(k):
    with pytest.raises(RecfunnelError, match="k"):
        BruteForceIndex(torch.eye(4)).search(torch.ones(1, 4), k)


def test_a_million_item_catalogue_in_bounded_chunks():
    gen = torch.Generator().manual_seed(0)
    items = torch.randn(1_000_000, 8, generator=gen)
    queries = torch.randn(3, 8, generator=gen)
    ids, scores = BruteForceIndex(items, chunk_size=65536).search(queries, 100)
    want = torch.topk(queries @ items.T, 100)
    assert (ids == want.indices).all()
    torch.testing.assert_close(scores, want.values)
