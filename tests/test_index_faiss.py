"""FAISS indexes against the exact brute-force index (skipped without the faiss extra)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recfunnel.errors import RecfunnelError
from recfunnel.index import BruteForceIndex

pytest.importorskip("faiss", reason="the faiss extra (faiss-cpu) is not installed")

from recfunnel.index_faiss import FaissIndex, build_index, recall_at_k  # noqa: E402

KINDS = {"hnsw": {"ef_search": 200}, "ivf": {"nlist": 16, "nprobe": 8}}


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(20, 16, generator=g) * 3
    noise = torch.randn(2000, 16, generator=g)
    vectors = centres[torch.randint(0, 20, (2000,), generator=g)] + noise
    queries = torch.randn(40, 16, generator=g)
    return vectors, queries


@pytest.fixture(scope="module", params=sorted(KINDS))
def index(request, data):
    return FaissIndex(data[0], kind=request.param, **KINDS[request.param])


def test_recall_against_exact_is_high(index, data):
    exact = BruteForceIndex(data[0])
    assert recall_at_k(index, exact, data[1], 20) >= 0.95
    assert not index.is_exact


def test_scores_are_the_true_inner_products(index, data):
    vectors, queries = data
    ids, scores = index.search(queries, 10)
    want = (queries[:, None, :] * vectors[ids]).sum(-1)
    torch.testing.assert_close(scores, want, rtol=1e-4, atol=1e-4)
    assert (scores[:, :-1] >= scores[:, 1:]).all()  # best first


def test_excluded_denied_and_not_allowed_items_never_appear(index, data):
    vectors, queries = data
    exact_ids, _ = BruteForceIndex(vectors).search(queries, 50)
    # exclude each query's own exact top 30: the survivors must come from further down
    rows = np.repeat(np.arange(len(queries)), 30)
    exclude = sp.csr_matrix((np.ones(len(rows)), (rows, exact_ids[:, :30].reshape(-1).numpy())),
                            shape=(len(queries), len(vectors)))  # fmt: skip
    deny = exact_ids[0, 30:35].numpy()
    ids, _ = index.search(queries, 10, exclude=exclude, deny=deny)
    assert (ids >= 0).all()
    for row in range(len(queries)):
        assert not set(ids[row].tolist()) & set(exclude[row].indices.tolist())
        assert not set(ids[row].tolist()) & set(deny.tolist())
    allow = np.arange(0, 2000, 7)
    ids, _ = index.search(queries, 10, allow=allow)
    assert set(ids.reshape(-1).tolist()) <= set(allow.tolist())
    want, _ = BruteForceIndex(vectors).search(queries, 10, allow=allow)
    overlap = np.mean(
        [len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), want.tolist(), strict=True)]
    )
    assert overlap >= 0.9


def test_too_few_survivors_fall_back_to_exact(index, data):
    vectors, queries = data
    allow = np.arange(12)  # tiny allow list: answered exactly, all of it
    ids, scores = index.search(queries, 12, allow=allow)
    want_ids, want_scores = BruteForceIndex(vectors).search(queries, 12, allow=allow)
    assert torch.equal(ids, want_ids)
    # an allow list leaving fewer than k: padded with -1 like the exact index
    ids, scores = index.search(queries[:2], 20, allow=allow)
    assert (ids[:, 12:] == -1).all() and torch.isneginf(scores[:, 12:]).all()
    # almost everything excluded for one query
    exclude = sp.lil_matrix((1, len(vectors)))
    exclude[0, 5:] = 1
    ids, _ = index.search(queries[:1], 5, exclude=exclude.tocsr())
    assert sorted(ids[0].tolist()) == [0, 1, 2, 3, 4]


def test_k_is_checked(index, data):
    with pytest.raises(RecfunnelError, match="larger than the catalogue"):
        index.search(data[1], 5000)


def test_build_index_is_exact_for_small_catalogues_and_checks_recall(data):
    vectors, queries = data
    assert isinstance(build_index(vectors), BruteForceIndex)
    built = build_index(vectors, kind="auto", exact_below=1000, queries=queries, k=20)
    assert isinstance(built, FaissIndex) and built.recall_ >= 0.95
    assert built.describe()["recall_check"] == built.recall_
    assert isinstance(build_index(vectors, kind="exact", exact_below=0), BruteForceIndex)


def test_unreachable_recall_falls_back_to_exact(data):
    vectors, queries = data
    built = build_index(vectors, kind="ivf", queries=queries, k=20, min_recall=1.01, nlist=16)
    assert isinstance(built, BruteForceIndex)


def test_a_model_serves_from_a_faiss_index(data):
    from recfunnel.data import checkerboard
    from recfunnel.models import TwoTower

    model = TwoTower(dim=8, epochs=2, softmax="full", reduction="mean", optimizer="adam",
                     learning_rate=0.05).fit(checkerboard(30, 40, seed=0))  # fmt: skip
    exact = model.recommend(np.arange(30), 5)
    model.set_index(FaissIndex(model.item_vectors(), kind="hnsw", ef_search=200))
    approx = model.recommend(np.arange(30), 5)
    assert np.mean(exact[0] == approx[0]) >= 0.9
    for u in range(30):  # seen items are still excluded
        assert not set(approx[0][u].tolist()) & set(model.seen_[u].indices.tolist())
