"""Top-k search over item vectors: exact brute force (and the base for approximate indexes).

Every index answers ``search(queries, k, exclude=..., allow=..., deny=...)`` with ``(ids,
scores)``, both ``[B, k]``, best first. Excluded, denied or not-allowed items never appear;
where fewer than ``k`` items remain, the tail is padded with id ``-1`` and score ``-inf``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.errors import RecfunnelError

ScoreFn = Callable[[int, int], torch.Tensor]  # (start, end) -> scores [B, end - start]


def check_k(k: int, num_items: int) -> int:
    """Validate ``k`` against the catalogue size (raises a one-line error)."""
    if not isinstance(k, int | np.integer) or isinstance(k, bool):
        raise RecfunnelError(f"k must be a whole number, not {k!r}")
    if k <= 0:
        raise RecfunnelError(f"k must be at least 1, not {k}")
    if k > num_items:
        raise RecfunnelError(f"k={k} is larger than the catalogue ({num_items} items); lower k")
    return int(k)


def item_mask(num_items: int, allow=None, deny=None) -> torch.Tensor | None:
    """Bool [N] of searchable items, or ``None`` when every item is."""
    if allow is None and deny is None:
        return None
    mask = torch.ones(num_items, dtype=torch.bool)
    if allow is not None:
        mask[:] = False
        mask[torch.as_tensor(np.asarray(allow, dtype=np.int64))] = True
    if deny is not None:
        mask[torch.as_tensor(np.asarray(deny, dtype=np.int64))] = False
    return mask


def top_k_chunked(
    score_chunk: ScoreFn,
    num_queries: int,
    num_items: int,
    k: int,
    *,
    exclude: sp.csr_matrix | None = None,
    mask: torch.Tensor | None = None,
    chunk_size: int = 65536,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k over ``num_items`` scored chunk by chunk, with a running merge.

    Memory is ``O(B * (chunk_size + k))`` whatever the catalogue size.

    Args:
        score_chunk: returns the scores [B, end - start] of items ``start .. end - 1``.
        exclude: CSR [B, N]; its stored entries are removed per query (e.g. seen items).
        mask: bool [N] of items that may be returned.
    """
    best_scores = best_ids = None
    ex_rows = ex_cols = None
    if exclude is not None and exclude.nnz:
        if exclude.format != "csr":
            exclude = exclude.tocsr()
        rows_np = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
        ex_rows = torch.from_numpy(rows_np.astype(np.int64, copy=False))
        ex_cols = torch.from_numpy(exclude.indices.astype(np.int64))
    for start in range(0, num_items, chunk_size):
        end = min(start + chunk_size, num_items)
        scores = score_chunk(start, end).float()
        if mask is not None:
            scores = scores.masked_fill(~mask[start:end].to(scores.device), float("-inf"))
        if ex_rows is not None and start == 0 and end == num_items:  # one chunk: no selection
            scores[ex_rows.to(scores.device), ex_cols.to(scores.device)] = float("-inf")
        elif ex_rows is not None:
            inside = (ex_cols >= start) & (ex_cols < end)
            rows, cols = ex_rows[inside].to(scores.device), ex_cols[inside].to(scores.device)
            scores[rows, cols - start] = float("-inf")
        chunk_k = min(k, end - start)
        top_scores, top_ids = torch.topk(scores, chunk_k, dim=1)
        top_ids = top_ids + start
        if best_scores is None:
            best_scores, best_ids = top_scores, top_ids
        else:
            merged_scores = torch.cat([best_scores, top_scores], dim=1)
            merged_ids = torch.cat([best_ids, top_ids], dim=1)
            best_scores, pos = torch.topk(merged_scores, min(k, merged_scores.shape[1]), dim=1)
            best_ids = torch.gather(merged_ids, 1, pos)
    if best_scores is None:  # empty catalogue
        empty = torch.empty(num_queries, 0)
        return empty.long(), empty
    best_ids = best_ids.masked_fill(torch.isneginf(best_scores), -1)
    return best_ids, best_scores


def top_k_reference(
    scores: np.ndarray, k: int, exclude: sp.csr_matrix | None = None, mask=None
) -> tuple[np.ndarray, np.ndarray]:
    """Readable NumPy oracle for :func:`top_k_chunked`: a full argsort per row."""
    scores = np.array(scores, dtype=np.float64)
    if mask is not None:
        scores[:, ~np.asarray(mask)] = -np.inf
    if exclude is not None:
        coo = exclude.tocoo()
        scores[coo.row, coo.col] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, order, axis=1)
    return np.where(np.isneginf(top), -1, order), top


class TopKIndex(ABC):
    """Top-k search over a fixed set of item vectors."""

    #: whether results are the exact top-k (brute force) or approximate (ANN)
    is_exact: bool = True

    @property
    @abstractmethod
    def num_items(self) -> int: ...

    @abstractmethod
    def search(
        self,
        queries: torch.Tensor,
        k: int,
        *,
        exclude: sp.csr_matrix | None = None,
        allow=None,
        deny=None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B, k], scores [B, k])`` of the best items for each query [B, D]."""


class BruteForceIndex(TopKIndex):
    """Exact inner-product top-k by chunked matrix products.

    Args:
        item_vectors: float [N, D].
        chunk_size: items scored at once; bounds memory for catalogues of millions.
        query_batch: queries scored at once.
    """

    is_exact = True

    def __init__(
        self, item_vectors: torch.Tensor, *, chunk_size: int = 65536, query_batch: int = 1024
    ) -> None:
        self.item_vectors = torch.as_tensor(item_vectors).float().contiguous()
        self.chunk_size = chunk_size
        self.query_batch = query_batch

    @property
    def num_items(self) -> int:
        return int(self.item_vectors.shape[0])

    @torch.no_grad()
    def search(self, queries, k, *, exclude=None, allow=None, deny=None):
        queries = torch.as_tensor(queries).float().to(self.item_vectors.device)
        k = check_k(k, self.num_items)
        mask = item_mask(self.num_items, allow, deny)
        out_ids, out_scores = [], []
        for start in range(0, queries.shape[0], self.query_batch):
            q = queries[start : start + self.query_batch]
            ex = exclude
            if exclude is not None and q.shape[0] < queries.shape[0]:
                ex = exclude[start : start + q.shape[0]]
            ids, scores = top_k_chunked(
                lambda a, b, q=q: q @ self.item_vectors[a:b].T,
                q.shape[0],
                self.num_items,
                k,
                exclude=ex,
                mask=mask,
                chunk_size=self.chunk_size,
            )
            out_ids.append(ids.cpu())
            out_scores.append(scores.cpu())
        if not out_ids:
            return torch.empty(0, k, dtype=torch.long), torch.empty(0, k)
        return torch.cat(out_ids), torch.cat(out_scores)
