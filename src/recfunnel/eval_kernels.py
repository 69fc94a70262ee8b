"""Evaluation's per-row pass, compiled with numba when it is installed (the ``fast`` extra).

One read of each score row gives both things :func:`recfunnel.metrics.evaluate_scores` needs
from it: the top ``K`` items (a size-``K`` min-heap, touched only by scores above its smallest)
and how many scores lie strictly above a given value (the best relevant item's, for ``mrr``).
Without numba the same comes from ``torch.topk`` and a NumPy comparison.
"""

from __future__ import annotations

import numpy as np

from recfunnel.jit import AVAILABLE, launch, numba

# ----------------------------------------------- fused scoring and ranking; the shared heap
#: items per tile: a tile of item factors ([D, TILE] float32, 32 KB at D = 32) stays in the
#: core's L1/L2 cache while a group of users is scored against it
TILE = 256
#: users scored against each tile while it is in cache
GROUP = 64


def _score_tile(q, Vt, j0, j1, buf):  # pragma: no cover - compiled
    """``buf[:j1 - j0] = q @ Vt[:, j0:j1]`` in float32, summed over ``d`` in order with fused
    multiply-adds. Vectorised across items; a score is computed the same way every time its
    tile is (the test cells' scores come from the same tiles as the ranking's)."""
    n = j1 - j0
    D = q.shape[0]
    for jj in range(n):
        buf[jj] = 0.0
    d = 0
    while d + 8 <= D:
        a0, a1, a2, a3 = q[d], q[d + 1], q[d + 2], q[d + 3]
        a4, a5, a6, a7 = q[d + 4], q[d + 5], q[d + 6], q[d + 7]
        r0, r1, r2, r3 = Vt[d, j0:j1], Vt[d + 1, j0:j1], Vt[d + 2, j0:j1], Vt[d + 3, j0:j1]
        r4, r5, r6, r7 = Vt[d + 4, j0:j1], Vt[d + 5, j0:j1], Vt[d + 6, j0:j1], Vt[d + 7, j0:j1]
        for jj in range(n):
            acc = buf[jj]
            acc += a0 * r0[jj]
            acc += a1 * r1[jj]
            acc += a2 * r2[jj]
            acc += a3 * r3[jj]
            acc += a4 * r4[jj]
            acc += a5 * r5[jj]
            acc += a6 * r6[jj]
            acc += a7 * r7[jj]
            buf[jj] = acc
        d += 8
    while d < D:
        a0 = q[d]
        r0 = Vt[d, j0:j1]
        for jj in range(n):
            buf[jj] += a0 * r0[jj]
        d += 1


def _worse(v, j, w, i):  # pragma: no cover - compiled
    """Whether item ``j`` scoring ``v`` ranks below item ``i`` scoring ``w``: a lower score,
    or the same score and a larger index (ties go to the smaller index, whatever the order
    the items are visited in)."""
    return v < w or (v == w and j > i)


def _heap_push(hv, hi, m, K, v, j):  # pragma: no cover - compiled
    """Offer ``(v, j)`` to the heap ``hv``/``hi`` of ``m`` entries (at most ``K``), its worst
    entry (see :func:`_worse`) on top; returns the new size."""
    if m < K:  # sift up
        i = m
        m += 1
        while i > 0:
            p = (i - 1) >> 1
            if not _worse(v, j, hv[p], hi[p]):
                break
            hv[i] = hv[p]
            hi[i] = hi[p]
            i = p
        hv[i] = v
        hi[i] = j
    elif _worse(hv[0], hi[0], v, j):  # replace the worst
        _sift_down(hv, hi, K, v, j)
    return m


def _sift_down(hv, hi, n, v, j):  # pragma: no cover - compiled
    """Put ``(v, j)`` into the root's place of the heap ``hv[:n]``/``hi[:n]`` (worst on top),
    moving the worse child up until ``(v, j)`` fits."""
    i = 0
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _worse(hv[c + 1], hi[c + 1], hv[c], hi[c]):
            c += 1
        if not _worse(hv[c], hi[c], v, j):
            break
        hv[i] = hv[c]
        hi[i] = hi[c]
        i = c
    hv[i] = v
    hi[i] = j


def _heap_sort(hv, hi, K):  # pragma: no cover - compiled
    """A full heap of ``K`` (worst on top) -> best first: move the worst to the back, K times
    (entries are distinct by index, so the order is the one sort of (value, index))."""
    for end in range(K - 1, 0, -1):
        v, j = hv[end], hi[end]
        hv[end], hi[end] = hv[0], hi[0]
        _sift_down(hv, hi, end, v, j)


def _fused_top_k(Q, qnorm, Vt, order, tile_bound, K, t_ptr, t_cols, t_relevant, s_ptr, s_cols,
                 ids, vals, counts, pos, seen):  # pragma: no cover - compiled  # fmt: skip
    """Score users ``Q`` [B, D] against items ``Vt`` [D, N] tile by tile and rank as it goes.

    Per user ``u``: its test cells ``t_cols[t_ptr[u]:t_ptr[u + 1]]`` get their scores in
    ``pos``; its seen cells ``s_cols[s_ptr[u]:s_ptr[u + 1]]`` (sorted) theirs in ``seen``, and
    leave the ranking; ``ids``/``vals`` [B, K] its top ``K`` unseen items, best first;
    ``counts[u]`` the unseen items scoring strictly above its best relevant test cell
    (``t_relevant``), 0 without one. No [B, N] block is ever held: a group of users is scored
    against one tile of items while that tile is in cache.

    Pruning, exact: the items come sorted by norm, largest first, and ``tile_bound[t]`` bounds
    ``|score| / |q|`` for every item from tile ``t`` on (Cauchy-Schwarz with a margin for
    rounding), ``qnorm[u] = |q_u|``. Once a user's bound ``b`` is below its K-th best score,
    no later item can enter its top K; once it is also below ``|best|``, every later item
    scores below a positive best (counts nothing) or above a negative one (counts every unseen
    item left). The user then stops; its seen cells not reached yet are scored on their own.
    """
    B = Q.shape[0]
    N = Vt.shape[1]
    groups = (B + GROUP - 1) // GROUP
    for g in numba.prange(groups):
        u0 = g * GROUP
        u1 = min(B, u0 + GROUP)
        buf = np.empty(TILE, dtype=np.float32)
        best = np.empty(u1 - u0, dtype=np.float32)
        size = np.zeros(u1 - u0, dtype=np.int64)
        count = np.zeros(u1 - u0, dtype=np.int64)
        active = np.ones(u1 - u0, dtype=np.bool_)
        cursor = s_ptr[u0:u1].copy()
        for u in range(u0, u1):  # each test cell's score, from the tile it lies in
            b = np.float32(np.inf)
            for t in range(t_ptr[u], t_ptr[u + 1]):
                j = t_cols[t]
                j0 = (j // TILE) * TILE
                _score_tile(Q[u], Vt, j0, min(N, j0 + TILE), buf)
                pos[t] = buf[j - j0]
                if t_relevant[t] and (b == np.inf or buf[j - j0] > b):
                    b = buf[j - j0]
            best[u - u0] = b
        left = u1 - u0
        for j0 in range(0, N, TILE):
            if left == 0:
                break
            j1 = min(N, j0 + TILE)
            for u in range(u0, u1):
                r = u - u0
                if not active[r]:
                    continue
                hv = vals[u]
                hi = ids[u]
                m = size[r]
                bound = tile_bound[j0 // TILE] * qnorm[u]
                if m == K and bound < hv[0] and bound < abs(best[r]):
                    end = s_ptr[u + 1]
                    if best[r] < 0:  # every unseen item left scores above it
                        count[r] += (N - j0) - (end - cursor[r])
                    k = cursor[r]
                    while k < end:  # the seen cells not reached, one tile each
                        c0 = (s_cols[k] // TILE) * TILE
                        _score_tile(Q[u], Vt, c0, min(N, c0 + TILE), buf)
                        while k < end and s_cols[k] < c0 + TILE:
                            seen[k] = buf[s_cols[k] - c0]
                            k += 1
                    active[r] = False
                    left -= 1
                    continue
                _score_tile(Q[u], Vt, j0, j1, buf)
                k = cursor[r]
                end = s_ptr[u + 1]
                while k < end and s_cols[k] < j1:
                    seen[k] = buf[s_cols[k] - j0]
                    buf[s_cols[k] - j0] = -np.inf
                    k += 1
                cursor[r] = k
                above = best[r]
                c = 0
                for jj in range(j1 - j0):
                    c += buf[jj] > above
                count[r] += c
                jj = 0
                while m < K and jj < j1 - j0:
                    m = _heap_push(hv, hi, m, K, buf[jj], order[j0 + jj])
                    jj += 1
                floor = hv[0]
                hit = False
                for i in range(jj, j1 - j0):
                    hit |= buf[i] >= floor
                if hit:  # a candidate in this tile (ties too: the smaller index wins)
                    while jj < j1 - j0:
                        if buf[jj] >= floor:
                            _heap_push(hv, hi, m, K, buf[jj], order[j0 + jj])
                            floor = hv[0]
                        jj += 1
                size[r] = m
        for u in range(u0, u1):
            counts[u] = count[u - u0]
            _heap_sort(vals[u], ids[u], K)


if AVAILABLE:
    _score_tile = numba.njit(cache=True, nogil=True, fastmath={"contract"})(_score_tile)
    _worse = numba.njit(cache=True, nogil=True, inline="always")(_worse)
    _sift_down = numba.njit(cache=True, nogil=True)(_sift_down)
    _heap_push = numba.njit(cache=True, nogil=True)(_heap_push)
    _heap_sort = numba.njit(cache=True, nogil=True)(_heap_sort)
    _fused_top_k = numba.njit(parallel=True, cache=True, nogil=True)(_fused_top_k)


#: relative margin on the Cauchy-Schwarz bound of a float32 score (its rounding error over D
#: terms is below D * 2**-24 of |q| |v|; the margin covers D up to ~1e4 with room to spare)
_BOUND_MARGIN = 1e-3


# ---------------------------------------------------------- the per-row pass of a score block
def _top_k_and_count(S, K, above, ids, vals, counts):  # pragma: no cover - compiled
    """Per row ``r`` of ``S`` [B, N]: ``ids``/``vals`` [B, K] the top K, best first (ties to
    the smaller index, as the fused pass); ``counts[r]`` the number of entries strictly
    greater than ``above[r]``."""
    B, N = S.shape
    for r in numba.prange(B):
        row = S[r]
        bound = above[r]
        hv = vals[r]
        hi = ids[r]
        m = 0
        count = 0
        for j in range(N):
            v = row[j]
            if v > bound:
                count += 1
            m = _heap_push(hv, hi, m, K, v, j)
        counts[r] = count
        _heap_sort(hv, hi, K)


if AVAILABLE:
    _top_k_and_count = numba.njit(parallel=True, cache=True, nogil=True)(_top_k_and_count)


def top_k_and_count(
    scores: np.ndarray, k: int, above: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids [B, k], values [B, k], counts [B])`` of a float32 [B, N] block, ``k <= N``."""
    B = scores.shape[0]
    ids = np.empty((B, k), dtype=np.int64)
    vals = np.empty((B, k), dtype=np.float32)
    counts = np.empty(B, dtype=np.int64)
    launch(_top_k_and_count, scores, int(k), np.asarray(above, np.float32), ids, vals, counts)
    return ids, vals, counts


def sort_items(items: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(order, items_t, tile_bound)`` for :func:`fused_top_k`: the items [N, D] by norm,
    largest first, as ``[D, N]``, and each tile's bound on ``|score| / |q|``."""
    items = np.ascontiguousarray(items, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", items, items, dtype=np.float64))
    order = np.argsort(-norms, kind="stable")
    items_t = np.ascontiguousarray(items[order].T)
    tile_bound = norms[order][::TILE] * (1.0 + _BOUND_MARGIN) + 1e-30
    return order, items_t, tile_bound


def fused_top_k(
    queries: np.ndarray,
    items: tuple[np.ndarray, np.ndarray, np.ndarray],
    k: int,
    test: tuple[np.ndarray, np.ndarray, np.ndarray],
    seen: tuple[np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k of ``queries`` [B, D] against the items, seen cells excluded.

    Args:
        items: :func:`sort_items` of the item vectors.
        test: ``(ptr [B + 1], cols, relevant)``: each user's test cells and which are relevant.
        seen: ``(ptr [B + 1], cols)``: each user's seen cells.

    Returns ``(ids [B, k], values [B, k], counts [B], test scores, seen scores)``: ``counts``
    the unseen items above each user's best relevant test cell (see :func:`_fused_top_k`).
    Cells and ids are the caller's item indices.
    """
    order, items_t, tile_bound = items
    order = np.asarray(order, np.int64)
    rank = np.empty(len(order), dtype=np.int64)  # item -> its place in the sorted order
    rank[order] = np.arange(len(order))
    queries = np.ascontiguousarray(queries, np.float32)
    B = queries.shape[0]
    t_ptr, t_cols, t_relevant = test
    s_ptr, s_cols = seen
    s_ptr = np.asarray(s_ptr, np.int64)
    # the seen cells in sorted-item order within each user
    s_row = np.repeat(np.arange(B), np.diff(s_ptr))
    s_sorted = rank[np.asarray(s_cols, np.int64)]
    by = np.lexsort((s_sorted, s_row))
    ids = np.empty((B, k), dtype=np.int64)
    vals = np.empty((B, k), dtype=np.float32)
    counts = np.empty(B, dtype=np.int64)
    pos = np.empty(len(t_cols), dtype=np.float32)
    seen_sorted = np.empty(len(s_cols), dtype=np.float32)
    qnorm = np.sqrt(np.einsum("ij,ij->i", queries, queries, dtype=np.float64))
    launch(_fused_top_k, queries, qnorm, items_t, order, tile_bound, int(k),
           np.asarray(t_ptr, np.int64), rank[np.asarray(t_cols, np.int64)],
           np.asarray(t_relevant, np.bool_), s_ptr, s_sorted[by],
           ids, vals, counts, pos, seen_sorted)  # fmt: skip
    seen_scores = np.empty_like(seen_sorted)
    seen_scores[by] = seen_sorted
    return ids, vals, counts, pos, seen_scores
