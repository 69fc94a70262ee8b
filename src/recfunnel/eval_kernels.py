"""Evaluation's per-row pass, compiled with numba when it is installed (the ``fast`` extra).

One read of each score row gives both things :func:`recfunnel.metrics.evaluate_scores` needs
from it: the top ``K`` items (a size-``K`` min-heap, touched only by scores above its smallest)
and how many scores lie strictly above a given value (the best relevant item's, for ``mrr``).
Without numba the same comes from ``torch.topk`` and a NumPy comparison.
"""

from __future__ import annotations

import numpy as np

from recfunnel.jit import AVAILABLE, launch, numba


def _top_k_and_count(S, K, above, ids, vals, counts):  # pragma: no cover - compiled
    """Per row ``r`` of ``S`` [B, N]: ``ids``/``vals`` [B, K] the top K, best first;
    ``counts[r]`` the number of entries strictly greater than ``above[r]``."""
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
            if m < K:  # sift up into the min-heap
                i = m
                m += 1
                while i > 0:
                    p = (i - 1) >> 1
                    if hv[p] <= v:
                        break
                    hv[i] = hv[p]
                    hi[i] = hi[p]
                    i = p
                hv[i] = v
                hi[i] = j
            elif v > hv[0]:  # replace the smallest, sift down
                i = 0
                while True:
                    c = 2 * i + 1
                    if c >= K:
                        break
                    if c + 1 < K and hv[c + 1] < hv[c]:
                        c += 1
                    if hv[c] >= v:
                        break
                    hv[i] = hv[c]
                    hi[i] = hi[c]
                    i = c
                hv[i] = v
                hi[i] = j
        counts[r] = count
        # heap -> best first: pop the smallest to the back, K times
        for end in range(K - 1, 0, -1):
            v, j = hv[0], hi[0]
            hv[0], hi[0] = hv[end], hi[end]
            hv[end], hi[end] = v, j
            i = 0
            while True:
                c = 2 * i + 1
                if c >= end:
                    break
                if c + 1 < end and hv[c + 1] < hv[c]:
                    c += 1
                if hv[c] >= hv[i]:
                    break
                hv[i], hv[c] = hv[c], hv[i]
                hi[i], hi[c] = hi[c], hi[i]
                i = c


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
