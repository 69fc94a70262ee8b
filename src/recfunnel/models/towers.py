"""Towers: small modules that map ids (and, later, features) to embeddings."""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
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


def pooled(matrix: torch.Tensor, transposed: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
    """``matrix @ dense`` [R, D] for a constant sparse ``matrix`` [R, N] whose transpose is
    given: autograd through :func:`torch.sparse.mm` transposes the matrix again (a sort) on
    every backward pass, which here is a plain sparse product."""
    return _ConstantSparseProduct.apply(matrix, transposed, dense)


class EmbeddingTower(nn.Module):
    """An embedding table with one extra out-of-vocabulary row at index ``num``.

    Args:
        num: known ids (indices ``0 .. num-1``); row ``num`` is the OOV bucket.
        dim: embedding dimension D.
        init: ``"uniform"`` draws from U(-scale, scale) (Keras' default with scale 0.05);
            ``"normal"`` from N(0, scale^2).
        scale: the initialisation scale.

    Shapes: ids [B] -> embeddings [B, D].
    """

    def __init__(self, num: int, dim: int, *, init: str = "uniform", scale: float = 0.05):
        super().__init__()
        if dim < 1:
            raise RecfunnelError(f"embedding dimension must be at least 1, not {dim}")
        self.num = num
        self.embedding = nn.Embedding(num + 1, dim)
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

    Shapes: user ids [B], ``pool = (A, A^T)`` sparse [U, N] and [N, U] (see
    :func:`pooling_matrices`), ``counts`` [U], ``leave_out`` [B] -> [B, D].
    """

    def __init__(self, num_users: int, num_items: int, dim: int, *, init="uniform", scale=0.05):
        super().__init__()
        self.users = EmbeddingTower(num_users, dim, init=init, scale=scale)
        self.history = nn.Parameter(torch.empty(num_items, dim))
        init_embedding_(self.history, init, scale)

    def forward(
        self,
        user_ids: torch.Tensor,
        pool: tuple[torch.Tensor, torch.Tensor],
        counts: torch.Tensor,
        leave_out: torch.Tensor | None = None,
    ) -> torch.Tensor:
        history = pooled(*pool, self.history)[user_ids]
        if leave_out is not None:
            n = counts[user_ids]
            history = (history * n.sqrt()[:, None] - self.history[leave_out]) * (
                (n - 1.0).clamp(min=1.0).rsqrt()[:, None]
            )
        return self.users(user_ids) + history

    def fold_in(self, items: torch.Tensor) -> torch.Tensor:
        """[1, D] query of an unknown user (the OOV row) with history ``items`` [n]."""
        pooled = self.history[items].sum(0, keepdim=True) * len(items) ** -0.5
        return self.users(torch.tensor([self.users.num])) + pooled
