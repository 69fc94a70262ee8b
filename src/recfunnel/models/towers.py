"""Towers: small modules that map ids (and, later, features) to embeddings."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.errors import RecfunnelError


@torch.no_grad()
def init_embedding_(weight: torch.Tensor, init: str, scale: float) -> None:
    """Fill an embedding table in place: U(-scale, scale) or N(0, scale^2)."""
    if init == "uniform":
        weight.uniform_(-scale, scale)
    elif init == "normal":
        weight.normal_(0.0, scale)
    else:
        raise RecfunnelError(f"init must be 'uniform' or 'normal', not {init!r}")


def _torch_csr(matrix: sp.csr_matrix) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": it is used as documented
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.as_tensor(matrix.indptr.astype(np.int64)),
            torch.as_tensor(matrix.indices.astype(np.int64)),
            torch.as_tensor(matrix.data.astype(np.float32)),
            size=matrix.shape,
            check_invariants=True,
        )


def pooling_matrices(history: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(A, A^T, counts)``: the [U, N] history matrix with rows scaled by ``1 / sqrt(count)``
    and its transpose as torch CSR tensors, and the per-user counts [U]."""
    history = history.tocsr()
    counts = np.diff(history.indptr).astype(np.float32)
    scale = np.repeat(1.0 / np.sqrt(np.maximum(counts, 1.0)), np.diff(history.indptr))
    matrix = sp.csr_matrix((scale.astype(np.float32), history.indices, history.indptr),
                           shape=history.shape)  # fmt: skip
    return _torch_csr(matrix), _torch_csr(matrix.T.tocsr()), torch.as_tensor(counts)


class _ConstantSparseProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, matrix, transposed, dense):
        ctx.transposed = transposed
        return torch.sparse.mm(matrix, dense)

    @staticmethod
    def backward(ctx, grad):
        return None, None, torch.sparse.mm(ctx.transposed, grad)


class _WeightedBagSum(torch.autograd.Function):
    """``out[b] = sum_{k: bags[k] = b} weights[k] * table[rows[k]]`` (``bags`` sorted, bag
    ``b`` starting at ``offsets[b]``): ``embedding_bag`` forward, and a backward of one gather
    and one ``index_add_`` (``embedding_bag``'s own CPU backward sorts its indices first and
    costs several times more)."""

    @staticmethod
    def forward(ctx, table, rows, bags, weights, offsets):
        ctx.save_for_backward(rows, bags, weights)
        ctx.num_rows = table.shape[0]
        return F.embedding_bag(rows, table, offsets, mode="sum", per_sample_weights=weights)

    @staticmethod
    def backward(ctx, grad):
        rows, bags, weights = ctx.saved_tensors
        table_grad = grad.new_zeros(ctx.num_rows, grad.shape[1])
        table_grad.index_add_(0, rows, grad[bags] * weights[:, None])
        return table_grad, None, None, None, None


def pooled(matrix: torch.Tensor, transposed: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``matrix @ dense`` [R, D] for a constant sparse ``matrix`` [R, N] whose transpose is
    given: autograd through :func:`torch.sparse.mm` transposes the matrix again (a sort) on
    every backward pass, which here is a plain sparse product."""
    return _ConstantSparseProduct.apply(matrix, transposed, dense)


def pool_history(
    table: torch.Tensor, user_ids: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
    counts: torch.Tensor, leave_out: torch.Tensor | None = None, *, sparse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
    """``(pooled [B, D], left [B, D] | None)``: ``|H(u)|^(-1/2) sum_{j in H(u)} table_j`` for
    the batch's users only, from the history in CSR form (``indptr`` [U+1], ``indices``
    [nnz]; ``counts`` [U] the history sizes), and the ``leave_out`` items' rows of ``table``.
    The same vectors as row ``u`` of ``pooled(*pooling_matrices(history), table)``, at the cost
    of the batch's histories instead of every user's.

    Each distinct user is pooled once, and the table is read with one lookup of the distinct
    items touched, so a sparse gradient (``sparse``) holds each row once: summing and sorting
    (coalescing) the tens of thousands of repeats a batch's histories hold cost more than the
    whole softmax.
    """
    users, inverse = torch.unique(user_ids, return_inverse=True)
    starts = indptr[users]
    lengths = indptr[users + 1] - starts
    offsets = torch.cumsum(lengths, 0) - lengths
    flat = torch.repeat_interleave(starts - offsets, lengths)
    flat += torch.arange(len(flat), device=flat.device)
    seen = indices[flat]
    wanted = seen if leave_out is None else torch.cat([seen, leave_out])
    local, position = torch.unique(wanted, return_inverse=True)
    rows = F.embedding(local, table, sparse=sparse)
    weights = torch.repeat_interleave(counts[users].clamp(min=1.0).rsqrt(), lengths)
    bags = torch.repeat_interleave(torch.arange(len(users), device=flat.device), lengths)
    pooled = _WeightedBagSum.apply(rows, position[: len(seen)], bags, weights, offsets)
    left = None if leave_out is None else rows[position[len(seen) :]]
    return pooled[inverse], left


class EmbeddingTower(nn.Module):
    """An embedding table with one extra out-of-vocabulary row at index ``num``.

    Args:
        num: known ids (indices ``0 .. num-1``); row ``num`` is the OOV bucket.
        dim: embedding dimension D.
        init: ``"uniform"`` draws from U(-scale, scale) (Keras' default with scale 0.05);
            ``"normal"`` from N(0, scale^2).
        scale: the initialisation scale.
        sparse: lookups give sparse gradients (rows touched only; see
            :func:`recfunnel.training.make_optimizer`).

    Shapes: ids [B] -> embeddings [B, D].
    """

    def __init__(
        self, num: int, dim: int, *, init: str = "uniform", scale: float = 0.05, sparse=False
    ):
        super().__init__()
        if dim < 1:
            raise RecfunnelError(f"embedding dimension must be at least 1, not {dim}")
        self.num = num
        self.embedding = nn.Embedding(num + 1, dim, sparse=sparse)
        init_embedding_(self.embedding.weight, init, scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.embedding(ids)

    def known(self) -> torch.Tensor:
        """[num, D] embeddings of every known id (the OOV row left out)."""
        return self.embedding.weight[: self.num]


class HistoryQueryTower(nn.Module):
    """Query tower: a user's own embedding plus the pooled embeddings of the items they saw.

    ``q(u) = e_u + |H(u)|^(-1/2) * sum_{j in H(u)} h_j``, the asymmetric factor model of
    Koren (2008, "Factorization meets the neighborhood") used as a retrieval query tower. The
    history term also embeds users never seen in training from their interactions alone.

    In training, the positive item is left out of its own query's history (``leave_out``):
    otherwise the tower learns to copy its input, much as EASE (Steck 2019) must constrain its
    diagonal to zero.

    The pooled term of every user is one sparse-dense product per step, ``A @ H`` with ``A``
    the row-normalised [U, N] history matrix, far cheaper than pooling each row of a batch
    separately (a batch repeats its users many times).

    With ``sparse=True`` only the batch's users are pooled (:meth:`pool_rows`, one
    ``embedding_bag`` over their rows of the history) and every table gets sparse gradients:
    the cost of a step no longer grows with the number of users, as it must for millions.

    Shapes: user ids [B], ``pool = (A, A^T)`` sparse [U, N] and [N, U] (see
    :func:`pooling_matrices`), ``counts`` [U], ``leave_out`` [B] -> [B, D].
    """

    def __init__(
        self, num_users: int, num_items: int, dim: int, *, init="uniform", scale=0.05,
        sparse=False, own=True,
    ):  # fmt: skip
        super().__init__()
        self.sparse = sparse
        # own=False: no per-user table, the query is the pooled history alone
        self.users = EmbeddingTower(num_users if own else 0, dim, init=init, scale=scale,
                                    sparse=sparse)  # fmt: skip
        self.own = own
        self.history = nn.Parameter(torch.empty(num_items, dim))
        init_embedding_(self.history, init, scale)

    def pool_rows(
        self, user_ids: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
        counts: torch.Tensor, leave_out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:  # fmt: skip
        """:func:`pool_history` of this tower's history table."""
        return pool_history(self.history, user_ids, indptr, indices, counts, leave_out,
                            sparse=self.sparse)  # fmt: skip

    def sample_rows(
        self, user_ids: torch.Tensor, indptr: torch.Tensor, indices: torch.Tensor,
        counts: torch.Tensor, leave_out: torch.Tensor | None, sample: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:  # fmt: skip
        """[B, D]: each row's pooled history estimated from at most ``sample`` of its items.

        A row whose user has ``n <= sample`` items pools them all, exactly as :meth:`pool_rows`
        does (the ``leave_out`` item weighted 0). Above that, ``sample`` positions are drawn
        uniformly with replacement and each draw weighted ``n / sample`` (draws of the
        ``leave_out`` item weighted 0): the sum's expectation is the whole history's sum, so
        the query's expectation is the query that evaluation and serving compute from the
        whole history. A row then costs at most ``sample`` cells, whatever the user's activity
        (a batch's rows come from active users in proportion to their activity, so the whole
        histories average hundreds of cells a row on power-law data).
        """
        n = (indptr[user_ids + 1] - indptr[user_ids]).float()
        take = n.clamp(max=float(sample)).long()
        offsets = torch.cumsum(take, 0) - take
        row = torch.repeat_interleave(torch.arange(len(user_ids), device=take.device), take)
        k = torch.arange(len(row), device=take.device) - offsets[row]
        n_cell = n[row]
        drawn = (torch.rand(len(row), generator=generator).to(n.device) * n_cell).long()
        whole = n_cell <= sample
        position = torch.where(whole, k, torch.minimum(drawn, n_cell.long() - 1))
        seen = indices[indptr[user_ids][row] + position]
        weights = torch.where(whole, torch.ones_like(n_cell), n_cell / sample)
        if leave_out is not None:
            weights = weights.masked_fill(seen == leave_out[row], 0.0)
            n = n - 1.0
        weights = weights * n.clamp(min=1.0).rsqrt()[row]
        local, position = torch.unique(seen, return_inverse=True)
        table = F.embedding(local, self.history, sparse=self.sparse)
        return _WeightedBagSum.apply(table, position, row, weights, offsets)

    def forward(
        self,
        user_ids: torch.Tensor,
        pool: tuple[torch.Tensor, torch.Tensor],
        counts: torch.Tensor,
        leave_out: torch.Tensor | None = None,
        rows: tuple[torch.Tensor, torch.Tensor] | None = None,
        sample: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``rows = (indptr, indices)``: pool the batch's users only (:meth:`pool_rows`);
        with ``sample`` too, each row from at most that many of its items (:meth:`sample_rows`,
        in training only)."""
        if rows is not None and sample is not None and self.training:
            history = self.sample_rows(user_ids, *rows, counts, leave_out, sample, generator)
            return self._own(user_ids, distinct=True) + history
        if rows is not None:
            history, left = self.pool_rows(user_ids, *rows, counts, leave_out)
        else:
            history = pooled(*pool, self.history)[user_ids]
            left = None if leave_out is None else self.history[leave_out]
        if leave_out is not None:
            n = counts[user_ids]
            history = (history * n.sqrt()[:, None] - left) * (
                (n - 1.0).clamp(min=1.0).rsqrt()[:, None]
            )
        return self._own(user_ids, distinct=rows is not None) + history

    def _own(self, user_ids: torch.Tensor, distinct: bool) -> torch.Tensor | float:
        """The users' own embeddings [B, D] (0 without them); ``distinct``: one lookup of the
        distinct users, so a sparse gradient holds each row once."""
        if not self.own:
            return 0.0
        if not distinct:
            return self.users(user_ids)
        users, inverse = torch.unique(user_ids, return_inverse=True)
        return F.embedding(users, self.users.embedding.weight, sparse=self.sparse)[inverse]

    def fold_in(self, items: torch.Tensor) -> torch.Tensor:
        """[1, D] query of an unknown user (the OOV row) with history ``items`` [n]."""
        pooled = self.history[items].sum(0, keepdim=True) * max(len(items), 1) ** -0.5
        if not self.own:
            return pooled
        return self.users(torch.tensor([self.users.num])) + pooled
