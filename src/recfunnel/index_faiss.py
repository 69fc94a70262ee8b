"""Approximate top-k search with FAISS (optional extra ``faiss``), and choosing an index.

:class:`FaissIndex` wraps an inner-product HNSW graph (Malkov & Yashunin, 2018,
arXiv:1603.09320) or an inverted file of k-means cells (IVF; Jégou et al., 2011, "Product
quantization for nearest neighbor search") behind the :class:`~recfunnel.index.TopKIndex`
contract. FAISS cannot exclude a different set of items for every query, so a search
over-fetches, drops excluded, denied and not-allowed items, and answers any query left with
fewer than ``k`` items exactly (with :class:`~recfunnel.index.BruteForceIndex`): results are
never wrong about what may be returned, only possibly approximate in ranking.

:func:`build_index` picks exact search below :data:`EXACT_BELOW` items (brute force is fast and
exact there) and IVF above, measuring recall@k against exact search on sampled queries and
widening the search until it reaches ``min_recall``. IVF rather than HNSW because on
inner-product search over clustered embeddings it reached higher recall at a higher speed-up
and builds faster (``benchmarks/bench_ann.py``, ``docs/serving.md``).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.errors import RecfunnelError
from recfunnel.index import BruteForceIndex, TopKIndex, check_k, item_mask

log = logging.getLogger("recfunnel.index")

#: catalogues smaller than this are searched exactly by ``build_index(kind="auto")``
EXACT_BELOW = 100_000


def _faiss():
    try:
        import faiss
    except ImportError:
        raise RecfunnelError(
            "approximate search needs the 'faiss' extra; run: pip install 'recfunnel[faiss]'"
        ) from None
    return faiss


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


class FaissIndex(TopKIndex):
    """Approximate inner-product top-k over item vectors [N, D] with FAISS.

    Args:
        kind: ``"hnsw"`` (graph; no training) or ``"ivf"`` (k-means cells; trained here).
        hnsw_m: graph degree; ef_construction / ef_search: HNSW candidate list sizes.
        nlist: IVF cells (default ``4 * sqrt(N)``); nprobe: cells visited per query;
            train_size: k-means training sample (raised to 40 points per cell).
        overfetch: extra candidates fetched, as a multiple of ``k``, to survive filtering.
        threads: FAISS OpenMP threads (``None`` leaves FAISS's default).
    """

    is_exact = False

    def __init__(
        self,
        item_vectors,
        *,
        kind: str = "hnsw",
        hnsw_m: int = 32,
        ef_construction: int = 80,
        ef_search: int = 128,
        nlist: int | None = None,
        nprobe: int = 16,
        train_size: int = 100_000,
        overfetch: float = 1.5,
        seed: int = 0,
        threads: int | None = None,
    ) -> None:
        faiss = _faiss()
        if kind not in ("hnsw", "ivf"):
            raise RecfunnelError(f"unknown FAISS index kind {kind!r}; use 'hnsw' or 'ivf'")
        if threads is not None:
            faiss.omp_set_num_threads(threads)
        vectors = np.ascontiguousarray(torch.as_tensor(item_vectors).float().numpy())
        n, dim = vectors.shape
        self.kind = kind
        self.overfetch = overfetch
        self.exact = BruteForceIndex(torch.from_numpy(vectors))
        started = time.perf_counter()
        if kind == "hnsw":
            self.faiss_index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.faiss_index.hnsw.efConstruction = ef_construction
            self.faiss_index.add(vectors)
            self.ef_search = ef_search
        else:
            nlist = nlist or max(1, min(n // 39, int(4 * np.sqrt(n))))
            quantizer = faiss.IndexFlatIP(dim)
            self.faiss_index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            size = min(n, max(train_size, 40 * nlist))  # FAISS wants >= 39 points per cell
            sample = vectors[rng.choice(n, size, replace=False)]
            self.faiss_index.cp.seed = seed
            self.faiss_index.train(sample)
            self.faiss_index.add(vectors)
            self.nprobe = min(nprobe, nlist)
        self.build_seconds = time.perf_counter() - started
        self.recall_: float | None = None  # set by build_index's check

    @property
    def num_items(self) -> int:
        return self.exact.num_items

    # -------------------------------------------------------------- settings
    @property
    def effort(self) -> int:
        """The search-width knob: ``efSearch`` (HNSW) or ``nprobe`` (IVF)."""
        return self.ef_search if self.kind == "hnsw" else self.nprobe

    @effort.setter
    def effort(self, value: int) -> None:
        if self.kind == "hnsw":
            self.ef_search = int(value)
        else:
            self.nprobe = int(min(value, self.faiss_index.nlist))

    def describe(self) -> dict:
        return {
            "kind": self.kind,
            "exact": False,
            "effort": self.effort,
            "recall_check": self.recall_,
            "build_seconds": round(self.build_seconds, 3),
        }

    # ---------------------------------------------------------------- search
    def _raw_search(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, fetch))
        else:
            params = faiss.SearchParametersIVF(nprobe=self.nprobe)
        scores, ids = self.faiss_index.search(queries, fetch, params=params)
        return ids, scores

    @torch.no_grad()
    def search(self, queries, k, *, exclude=None, allow=None, deny=None):
        queries_t = torch.as_tensor(queries).float()
        queries_np = np.ascontiguousarray(queries_t.numpy())
        k = check_k(k, self.num_items)
        b = queries_np.shape[0]
        mask = item_mask(self.num_items, allow, deny)
        mask_np = mask.numpy() if mask is not None else None
        if mask_np is not None and mask_np.sum() <= 4 * k:  # tiny allow list: exact is cheaper
            return self.exact.search(queries_t, k, exclude=exclude, allow=allow, deny=deny)
        exclude = sp.csr_matrix(exclude) if exclude is not None else None
        most_excluded = int(np.diff(exclude.indptr).max()) if exclude is not None and b else 0
        fetch = min(self.num_items, int(np.ceil(self.overfetch * k)) + most_excluded)
        if mask_np is not None:  # expected share of candidates that survive the mask
            fetch = min(self.num_items, int(fetch * self.num_items / max(1, mask_np.sum())))
        ids, scores = self._raw_search(queries_np, fetch)
        keep = ids >= 0
        if mask_np is not None:
            keep &= mask_np[np.where(keep, ids, 0)]
        if exclude is not None and exclude.nnz:
            for row in range(b):
                start, end = exclude.indptr[row], exclude.indptr[row + 1]
                if end > start:
                    keep[row] &= ~np.isin(ids[row], exclude.indices[start:end])
        out_ids = np.full((b, k), -1, dtype=np.int64)
        out_scores = np.full((b, k), -np.inf, dtype=np.float32)
        short = []
        for row in range(b):
            kept = np.flatnonzero(keep[row])[:k]  # FAISS returns them best first
            out_ids[row, : len(kept)] = ids[row, kept]
            out_scores[row, : len(kept)] = scores[row, kept]
            if len(kept) < k:
                short.append(row)
        if short:  # too few survived the filters: answer those queries exactly
            rows = np.asarray(short)
            ex = exclude[rows] if exclude is not None else None
            ex_ids, ex_scores = self.exact.search(queries_t[rows], k, exclude=ex, allow=allow,
                                                  deny=deny)  # fmt: skip
            out_ids[rows], out_scores[rows] = ex_ids.numpy(), ex_scores.numpy()
        return torch.from_numpy(out_ids), torch.from_numpy(out_scores)


def recall_at_k(index: TopKIndex, exact: TopKIndex, queries, k: int) -> float:
    """Mean share of the exact top-``k`` that ``index`` also returns, over ``queries``."""
    got, _ = index.search(queries, k)
    want, _ = exact.search(queries, k)
    hits = [len(np.intersect1d(g[g >= 0], w[w >= 0])) for g, w in zip(got.numpy(), want.numpy(),
                                                                        strict=True)]  # fmt: skip
    return float(np.mean(hits) / k) if hits else 1.0


def build_index(
    item_vectors,
    *,
    kind: str = "auto",
    queries=None,
    k: int = 100,
    min_recall: float = 0.95,
    exact_below: int = EXACT_BELOW,
    num_check: int = 200,
    seed: int = 0,
    **options,
) -> TopKIndex:
    """A top-k index for ``item_vectors`` [N, D].

    ``kind="auto"`` is exact below ``exact_below`` items or without FAISS, else IVF. For an
    approximate index, recall@``k`` against exact search is measured on ``num_check`` sampled
    ``queries`` (default: sampled item vectors) and the search widened (doubling) until it
    reaches ``min_recall``; if it never does, exact search is returned (with a warning).
    """
    vectors = torch.as_tensor(item_vectors).float()
    n = vectors.shape[0]
    if kind == "exact" or (kind == "auto" and (n < exact_below or not faiss_available())):
        return BruteForceIndex(vectors)
    index = FaissIndex(vectors, kind="ivf" if kind == "auto" else kind, seed=seed, **options)
    rng = np.random.default_rng(seed)
    pool = torch.as_tensor(queries).float() if queries is not None else vectors
    sample = pool[torch.as_tensor(rng.choice(len(pool), min(len(pool), num_check), replace=False))]
    k = min(k, n)
    for _ in range(8):
        index.recall_ = recall_at_k(index, index.exact, sample, k)
        if index.recall_ >= min_recall:
            return index
        index.effort = index.effort * 2
    log.warning("approximate recall %.3f < %.2f; using exact search", index.recall_, min_recall)
    return BruteForceIndex(vectors)
