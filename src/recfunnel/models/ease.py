"""EASE: an item-item linear autoencoder with a closed-form solution.

Steck 2019, "Embarrassingly Shallow Autoencoders for Sparse Data": with the binary user x item
matrix ``X`` [U, N], learn item weights ``B`` [N, N] minimising
``|X - X B|^2 + lambda |B|^2`` subject to ``diag(B) = 0``. The solution is closed form:

    G = X^T X + lambda I,   P = G^{-1},   B_ij = -P_ij / P_jj  (i != j),   B_jj = 0

A user's scores are her history row times ``B``: ``s_u = X_u B`` [N]. A new user is scored the
same way from her items, without refitting (:meth:`EASE.recommend_history`).

The Gram matrix is built from the sparse ``X`` (one sparse product), then inverted in float32
with a Cholesky factorization (``G`` is symmetric positive definite for ``lambda > 0``). Memory
is a few ``N x N`` float32 matrices, so a catalogue of 30k items needs ~11 GiB; :class:`EASE`
refuses before allocating when that would not fit, and points to WALS or two-tower.

**Order-aware Gram** (``window``, where the rows have timestamps): ``X^T X`` counts every pair of
a user's items alike. With ``window``, two items ``k`` places apart in her time order count
``floor + (1 - floor) exp(-k / window)`` (:func:`ordered_gram`): items taken up together weigh
more than items years apart in a long history. The places are ranks in the user's own order,
so the window is in items, whatever unit the timestamps have. The solution and scoring are
EASE's; only ``G`` changes. On validation splits of ML-100k and of the ML-1M sequences a window
of 50 with floor 0.3 raised NDCG@10 by about 3% over the plain Gram (docs/quality.md); data without
timestamps gets the plain Gram.

As a :class:`~recfunnel.models.base.FactorizedRecommender`, a user's query vector is her binary
history row [N] and the item vectors are the columns of ``B`` (``B^T`` [N, N]), so recommending,
exclusions, allow/deny lists and saved runs use the shared contract unchanged.

Letters: U users, N items, B users in a batch.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.config import EASEConfig
from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError
from recfunnel.models.base import FactorizedRecommender, available_memory
from recfunnel.search_space import Choice, Float
from recfunnel.training import resolve_device

#: N x N float32 matrices alive at the peak of a fit (Gram/inverse in place, B, a workspace)
PEAK_MATRICES = 3
#: the order-aware Gram weighs pairs up to ``REACH x window`` places apart above the floor
REACH = 3.0


def ease_memory_bytes(num_items: int) -> int:
    """Peak bytes of an EASE fit on ``num_items`` items (``PEAK_MATRICES`` float32 N x N)."""
    return PEAK_MATRICES * 4 * num_items * num_items


def ease_fits(num_items: int, max_memory_gb: float | None = None) -> bool:
    """Whether an EASE fit on ``num_items`` items fits ``max_memory_gb`` (default: 3/4 of the
    memory available now)."""
    return ease_memory_bytes(num_items) <= _budget_bytes(max_memory_gb)


def _budget_bytes(max_memory_gb: float | None) -> float:
    if max_memory_gb is not None:
        return max_memory_gb * 2**30
    available = available_memory()
    return float("inf") if available is None else 0.75 * available


def ordered_gram(train: Interactions, window: float, floor: float, device="cpu") -> torch.Tensor:
    """The order-aware Gram matrix [N, N] of ``train`` (which has timestamps).

    Each user's distinct items in time order (ties in row order; a repeat keeps its first
    place); two of them ``k`` places apart co-occur with weight ``floor + (1 - floor) *
    exp(-k / window)`` instead of 1, so items a user took up together count more than items
    far apart in her history. The diagonal is the item counts, as in ``X^T X``; with
    ``floor = 1`` this is ``X^T X``. Pairs further apart than ``3 window`` places get
    ``floor`` only (:data:`REACH`: the exponential has fallen below 5%).
    """
    n = train.num_items
    order = np.lexsort((np.arange(len(train)), train.timestamps, train.users))
    users, items = train.users[order], train.items[order]
    _, first = np.unique(users * np.int64(n) + items, return_index=True)
    first.sort()  # each (user, item) once, at its first place, still in time order
    users, items = users[first], items[first]
    X = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)),
                      shape=(train.num_users, n))  # fmt: skip
    gram = torch.as_tensor(np.ascontiguousarray((X.T @ X).toarray()), dtype=torch.float32,
                           device=device)  # fmt: skip
    gram *= floor
    flat = gram.view(-1)
    u = torch.as_tensor(users, device=device)
    i = torch.as_tensor(items, dtype=torch.int64, device=device)  # a * n + b: past int32
    longest = int(np.bincount(users).max()) if len(users) else 0
    for k in range(1, min(int(REACH * window), longest - 1) + 1):
        same = u[k:] == u[:-k]
        a, b = i[:-k][same], i[k:][same]
        weight = torch.full((len(a),), (1.0 - floor) * math.exp(-k / window), device=device)
        flat.index_add_(0, a * n + b, weight)
        flat.index_add_(0, b * n + a, weight)
    gram.diagonal().add_(torch.as_tensor(np.bincount(items, minlength=n), dtype=torch.float32,
                                         device=device) * (1.0 - floor))  # fmt: skip
    return gram


def ease_weights(gram: torch.Tensor, regularization: float) -> torch.Tensor:
    """``B^T`` [N, N] from the Gram matrix ``X^T X`` [N, N] (overwritten) and ``lambda``.

    Inverts ``G = X^T X + lambda I`` by Cholesky; ``B = -P / diag(P)`` column-wise with a zero
    diagonal. ``P`` is symmetric, so ``B^T = -P / diag(P)`` row-wise, computed in place: row
    ``j`` of the result is item ``j``'s vector (column ``j`` of ``B``).
    """
    gram.diagonal().add_(regularization)
    factor, info = torch.linalg.cholesky_ex(gram)
    if int(info) != 0:
        problem = "the EASE Gram matrix is not positive definite in float32"
        raise RecfunnelError(
            f"{problem}; raise regularization=", cli=f"{problem}; raise --regularization"
        )
    del gram
    precision = torch.cholesky_inverse(factor)
    del factor
    diagonal = precision.diagonal().clone()
    precision /= -diagonal[:, None]
    precision.diagonal().zero_()
    return precision


class EASE(FactorizedRecommender):
    """Embarrassingly shallow autoencoder (Steck 2019); see the module docstring.
    Hyper-parameters in :class:`~recfunnel.config.EASEConfig`: ``regularization`` (lambda;
    ``recfunnel tune --model ease`` searches it), ``max_memory_gb`` and ``device``."""

    kind = "ease"
    #: what ``recfunnel tune`` searches
    search_space = {
        "regularization": Float(10.0, 20000.0, log=True),
        "window": Choice((None, 10.0, 20.0, 50.0, 100.0)),
    }
    duplicates = "sum"  # repeats merge into one row; EASE counts a cell once
    config_class = EASEConfig
    config: EASEConfig

    #: the model's name in messages
    label = "EASE"

    def _check_data(self, train: Interactions, **context) -> Interactions:
        n = train.num_items
        need = ease_memory_bytes(n)
        budget = _budget_bytes(self.config.max_memory_gb)
        if need > budget:
            problem = (
                f"{self.label} needs {need / 2**30:.1f} GiB for {n} items (items x items), more "
                f"than the {budget / 2**30:.1f} GiB available"
            )
            raise RecfunnelError(
                f"{problem}; use WALS or TwoTower",
                cli=f"{problem}; use --model wals or --model two-tower",
            )
        return train

    def _train(self, train: Interactions, validation, *, progress=False, **context) -> None:
        device = resolve_device(self.config.device)
        # no name keeps the Gram matrix alive: ease_weights frees it once factorized
        weights = ease_weights(self._gram(train, device), float(self.config.regularization))
        self.item_weights_ = weights.cpu().contiguous()
        self._index = None

    def _gram(self, train: Interactions, device) -> torch.Tensor:
        """``X^T X`` [N, N], or the order-aware Gram (:func:`ordered_gram`) with ``window``
        when the rows have timestamps (``ordered_`` says which)."""
        c = self.config
        self.ordered_ = c.window is not None and train.timestamps is not None
        if self.ordered_:
            return ordered_gram(train, c.window, c.floor, device)
        X = self.seen_.astype(np.float32)
        X.data[:] = 1.0  # binary: a repeated interaction counts once
        return torch.as_tensor((X.T @ X).toarray(), dtype=torch.float32, device=device)

    # --------------------------------------------------------------- vectors
    def _rows(self, rows: sp.csr_matrix) -> torch.Tensor:
        dense = np.zeros(rows.shape, dtype=np.float32)
        coo = rows.tocoo()
        dense[coo.row, coo.col] = 1.0
        return torch.from_numpy(dense)

    def user_vectors(self, users):
        """[B, N] binary history rows of the training users."""
        self._check_fitted()
        return self._rows(self._seen_rows(np.asarray(users, dtype=np.int64)))

    def item_vectors(self):
        """[N, N] ``B^T``: item ``j``'s vector is column ``j`` of ``B``."""
        self._check_fitted()
        return self.item_weights_

    def score(self, users):
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        return self.user_vectors(users) @ self.item_weights_.T

    def fold_in(self, items: np.ndarray) -> torch.Tensor:
        """[1, N] a new user's query: her binary history row (her scores are that row times B)."""
        self._check_fitted()
        items = np.unique(np.asarray(items, dtype=np.int64))
        if len(items) and (items.min() < 0 or items.max() >= self.num_items):
            raise RecfunnelError(f"item index out of range [0, {self.num_items})")
        row = torch.zeros(1, self.num_items)
        row[0, torch.as_tensor(items)] = 1.0
        return row

    def score_history(self, rows: sp.csr_matrix) -> torch.Tensor:
        """Scores [B, N] of users known only by their histories (CSR [B, N]), no refit."""
        self._check_fitted()
        return self._rows(rows) @ self.item_weights_.T

    # -------------------------------------------------------------- saving
    def _learned_tensors(self):
        return {"item_weights": self.item_weights_}  # B^T

    def _load_learned(self, tensors):
        self.item_weights_ = tensors["item_weights"]
        self._index = None
