"""Weighted alternating least squares (WALS) for implicit feedback and for explicit ratings.

Matrix factorization: the user x item feedback matrix is approximated by ``X @ Y.T`` with user
factors ``X`` [U, D] and item factors ``Y`` [N, D]. WALS fixes ``Y`` and solves every user's
regularised least-squares problem exactly, then the reverse; each half step lowers the loss.

* **implicit** (Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit Feedback
  Datasets"): every cell is a target, 1 where observed and 0 elsewhere; an observed cell has
  confidence ``c_ui = alpha * w_ui`` (``w_ui`` the interaction weight, 1 by default; this is the
  convention of implicit >= 0.5, *not* ``1 + alpha * w``) and an unobserved cell confidence 1.
  Loss: ``sum_obs c (1 - x.y)^2 + sum_unobs (x.y)^2 + sum_u reg_u |x_u|^2 + sum_i reg_i |y_i|^2``.
  The user solve uses ``Y^T C_u Y = Y^T Y + Y_u^T (C_u - I) Y_u``, so the dense Gram matrix is
  built once per half step and each user adds only their own rows.
* **explicit**: ridge regression on the observed ratings only, with a global mean and user and
  item biases: ``r_ui ~ mu + b_u + b_i + x_u . y_i``.

Regularization is ``reg_u = regularization * n_u ** reg_exponent`` where ``n_u`` counts the
user's weighted cells: ``|I_u| + N`` for implicit (every cell is a target, the frequency-scaled
regularization of Rendle et al. 2021, "Revisiting the Performance of iALS on Item
Recommendation Benchmarks") and ``|I_u|`` for explicit (ALS-WR, Zhou et al. 2008).
``reg_exponent=0`` gives plain ridge, as implicit does.

Two solvers share the normal equations:

* ``"cholesky"``: exact. Each batch of users builds its Gram matrices as segment sums of the
  items' outer products (one sparse-dense product) and solves with batched
  ``torch.linalg.cholesky_ex`` / ``cholesky_solve``.
* ``"cg"``: a few conjugate-gradient steps per half step, warm-started from the previous
  factors (Takacs, Pilaszy & Tikk 2011), applied to all users at once through sparse products:
  ``A p = p Y^T Y + reg p + S((C - I) * (p Y^T)) Y`` where ``S`` samples the observed cells.

Letters: U users, N items, D factors, B users in a batch, L padded history length.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel import distributed
from recfunnel.config import WALSConfig
from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError
from recfunnel.models import als_kernels
from recfunnel.models.base import FactorizedRecommender
from recfunnel.search_space import Choice, Float, Int
from recfunnel.training import resolve_device

FEEDBACK = ("implicit", "explicit")
SOLVERS = ("cholesky", "cg")


# ---------------------------------------------------------------------------- the fast solvers
class SparseRows:
    """A CSR matrix on a device, with the bookkeeping both solvers need.

    :meth:`csr` gives a torch CSR tensor of the observed cells with the values of a call;
    ``lengths_np`` [R] counts the cells per row.
    """

    def __init__(self, matrix: sp.csr_matrix, device: torch.device) -> None:
        matrix = matrix.tocsr()
        matrix.sort_indices()
        self.shape = matrix.shape
        self.indptr_np = matrix.indptr.astype(np.int64)
        self.lengths_np = np.diff(self.indptr_np)
        # 32-bit indices where they fit: a quarter faster sparse products, half the memory
        index_type = np.int32 if matrix.nnz < 2**31 else np.int64
        self.indptr = torch.as_tensor(self.indptr_np.astype(index_type), device=device)
        # no copy where scipy's indices already have that type (shared with the CSR)
        self.indices = torch.as_tensor(matrix.indices.astype(index_type, copy=False), device=device)
        self.device = device

    def csr(self, values: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Rows ``start:stop`` as a torch CSR tensor with ``values`` [nnz] (all cells' values)."""
        stop = self.shape[0] if stop is None else stop
        if start == 0 and stop == self.shape[0]:
            indptr, indices = self.indptr, self.indices
        else:
            lo, hi = int(self.indptr_np[start]), int(self.indptr_np[stop])
            indptr, indices = self.indptr[start : stop + 1] - lo, self.indices[lo:hi]
            values = values[lo:hi]
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            return torch.sparse_csr_tensor(
                indptr,
                indices,
                values,
                size=(stop - start, self.shape[1]),
                check_invariants=False,
            )

    def row_dots(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """[nnz] ``X[row] . Y[col]`` for every observed cell (a sampled dense-dense product)."""
        if getattr(self, "_pattern", None) is None or self._pattern.dtype != X.dtype:
            self._pattern = self.csr(torch.ones(len(self.indices), dtype=X.dtype, device=X.device))
        return torch.sparse.sampled_addmm(self._pattern, X, Y.T, beta=0.0).values()


def solve_cholesky(
    rows: SparseRows,
    Y: torch.Tensor,
    gram_weights: torch.Tensor,
    rhs_weights: torch.Tensor,
    regularization: torch.Tensor,
    base: torch.Tensor | None,
    out: torch.Tensor,
    batch: int = 4096,
) -> torch.Tensor:
    """Exact solve of ``(base + Y_r^T diag(g_r) Y_r + reg_r I) x_r = Y_r^T h_r`` for every row.

    The per-row Gram matrices are segment sums of the items' outer products: with
    ``O[i] = triu(y_i y_i^T)`` flattened to [N, D(D+1)/2], ``G = S(g) @ O`` is one sparse-dense
    product per batch of rows, no Python loop per row. Then one batched Cholesky per batch.

    Args:
        rows: the observed cells (R rows).
        Y: [N, D] fixed factors.
        gram_weights: [nnz] ``g`` per cell (``c - 1`` implicit, 1 explicit).
        rhs_weights: [nnz] ``h`` per cell (``c`` implicit, the target explicit).
        regularization: [R] ridge per row.
        base: [D, D] shared Gram term (``Y^T Y`` implicit) or ``None``.
        out: [R, D] written in place; rows with no cell and no ``base`` get ``0``.
        batch: rows solved at once.
    """
    dim = Y.shape[1]
    device = Y.device
    iu, ju = torch.triu_indices(dim, dim, device=device)
    outer = Y[:, iu] * Y[:, ju]  # [N, D(D+1)/2]
    eye = torch.eye(dim, dtype=Y.dtype, device=device)
    for start in range(0, rows.shape[0], batch):
        stop = min(start + batch, rows.shape[0])
        tri = rows.csr(gram_weights, start, stop) @ outer  # [B, D(D+1)/2]
        A = torch.zeros(stop - start, dim, dim, dtype=Y.dtype, device=device)
        A[:, iu, ju] = tri
        A[:, ju, iu] = tri
        A += regularization[start:stop, None, None] * eye
        if base is not None:
            A += base
        b = rows.csr(rhs_weights, start, stop) @ Y  # [B, D]
        factor, info = torch.linalg.cholesky_ex(A)
        if bool(info.any()):
            raise RecfunnelError(
                "a least-squares system is not positive definite; raise regularization=",
                cli="a least-squares system is not positive definite; raise --regularization",
            )
        out[start:stop] = torch.cholesky_solve(b[:, :, None], factor)[:, :, 0]
    return out


def solve_cg(
    rows: SparseRows,
    Y: torch.Tensor,
    gram_weights: torch.Tensor,
    rhs_weights: torch.Tensor,
    regularization: torch.Tensor,
    base: torch.Tensor | None,
    out: torch.Tensor,
    steps: int = 3,
) -> torch.Tensor:
    """``steps`` conjugate-gradient steps on the same systems as :func:`solve_cholesky`, for all
    rows at once, starting from (and updating) ``out`` [R, D]."""

    def apply(P: torch.Tensor) -> torch.Tensor:
        AP = regularization[:, None] * P + rows.csr(gram_weights * rows.row_dots(P, Y)) @ Y
        if base is not None:
            AP += P @ base
        return AP

    x = out
    # r = b - A x, with b = S(h) Y and the sparse part of A x fused into one product
    r = rows.csr(rhs_weights - gram_weights * rows.row_dots(x, Y)) @ Y - regularization[:, None] * x
    if base is not None:
        r -= x @ base
    p = r.clone()
    rs = (r * r).sum(1)
    for _ in range(steps):
        if float(rs.max()) < 1e-20:
            break
        Ap = apply(p)
        denom = (p * Ap).sum(1)
        step = torch.where(denom > 0, rs / denom.clamp_min(1e-30), 0.0)
        x += step[:, None] * p
        r -= step[:, None] * Ap
        rs_new = (r * r).sum(1)
        p = r + torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), 0.0)[:, None] * p
        rs = rs_new
    return x


#: cells per call of the fused kernel between progress reports (a fraction of a second on one
#: core; a 20M-row iteration on a busy machine needed chunks this small for a line every 10 s)
PROGRESS_CELLS = 500_000


# ----------------------------------------------------------------- rows partitioned by rank
def partition(indptr: np.ndarray, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous row ranges ``(lo, hi)`` of a CSR matrix holding about the same number
    of cells each (a solve costs per cell), covering every row."""
    rows, cells = len(indptr) - 1, int(indptr[-1])
    cuts = np.searchsorted(indptr, np.arange(1, parts) * cells / parts, side="left")
    bounds = [0, *np.clip(cuts, 0, rows).tolist(), rows]
    for k in range(1, len(bounds)):  # non-decreasing whatever the ties
        bounds[k] = max(bounds[k], bounds[k - 1])
    return [(bounds[k], bounds[k + 1]) for k in range(parts)]


def all_gather_rows(full: torch.Tensor, parts: list[tuple[int, int]]) -> None:
    """Fill every process's rows of ``full`` [R, ...] in place from their owners (process
    ``k`` solved ``parts[k]``); padded to the longest range, as gloo gathers equal sizes."""
    if len(parts) == 1:
        return
    import torch.distributed as dist

    longest = max(hi - lo for lo, hi in parts)
    lo, hi = parts[distributed.rank()]
    mine = full.new_zeros(longest, *full.shape[1:])
    mine[: hi - lo] = full[lo:hi]
    pieces = [torch.empty_like(mine) for _ in parts]
    dist.all_gather(pieces, mine)
    for (lo, hi), piece in zip(parts, pieces, strict=True):
        full[lo:hi] = piece[: hi - lo]


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """``value`` summed over the processes (itself outside a distributed job)."""
    if distributed.active():
        import torch.distributed as dist

        dist.all_reduce(value)
    return value


# ------------------------------------------------------------------------- the training state
class WALSSolver:
    """The alternating updates of one WALS fit; the :class:`~recfunnel.training.Trainer` calls
    :meth:`fit_epoch` once per iteration (users then items) and gets the loss back.

    Under torch.distributed (``torchrun``, ``train --nproc N``) the rows of each side are
    partitioned by rank (:func:`partition`: contiguous ranges with about the same number of
    cells): each process keeps only its ranges' cells, solves its own rows, and the factors are
    all-gathered after each half step, so every process holds all of ``X`` and ``Y``. The Gram
    matrix of the fixed side is the all-reduced sum of each process's rows' Gram matrices, and
    the loss the all-reduced sum of each process's part. One process: the same code, one part.
    """

    def __init__(self, model: WALS, train: Interactions, device: torch.device) -> None:
        self.model = model
        self.device = device
        # the fused per-row CG kernel (numba) on CPU; the torch solvers elsewhere
        self.fused = als_kernels.AVAILABLE and device.type == "cpu"
        self.explicit = model.config.feedback == "explicit"
        generator = torch.Generator().manual_seed(model.config.trainer.seed)
        U, N, D = train.num_users, train.num_items, model.config.dim
        values = (
            "ratings" if self.explicit else ("weights" if train.weights is not None else "ones")
        )
        by_user = train.to_csr(values)
        by_item = by_user.T.tocsr()
        if values == "ones" and distributed.world_size() == 1:  # every cell 1 on both sides:
            by_item.data = by_user.data  # one array serves both (4 bytes a cell less)
        self.cells = by_user.nnz
        mu = float(torch.as_tensor(by_user.data, dtype=torch.float32).mean())  # all the cells
        world, rank = distributed.world_size(), distributed.rank()
        self.user_parts = partition(by_user.indptr, world)
        self.item_parts = partition(by_item.indptr, world)
        (self.ulo, self.uhi), (self.ilo, self.ihi) = self.user_parts[rank], self.item_parts[rank]
        if world > 1:  # this process's rows only
            by_user, by_item = by_user[self.ulo : self.uhi], by_item[self.ilo : self.ihi]
        self.users, self.items = SparseRows(by_user, device), SparseRows(by_item, device)
        # values aligned with each side's cell order
        self.user_values = torch.as_tensor(by_user.data, dtype=torch.float32, device=device)
        self.item_values = torch.as_tensor(by_item.data, dtype=torch.float32, device=device)
        self.user_cols = self.users.indices
        self.item_cols = self.items.indices
        n_u = torch.as_tensor(self.users.lengths_np, dtype=torch.float32, device=device)
        n_i = torch.as_tensor(self.items.lengths_np, dtype=torch.float32, device=device)
        if not self.explicit:
            n_u, n_i = n_u + N, n_i + U
        # a row with no cell keeps a positive ridge (its factors solve to 0)
        self.user_reg = model.config.regularization * n_u.clamp_min(1).pow(
            model.config.reg_exponent
        )
        self.item_reg = model.config.regularization * n_i.clamp_min(1).pow(
            model.config.reg_exponent
        )
        scale = model.config.init_scale
        # drawn and scaled in place (the numbers of torch.randn(...) * scale, no second copy)
        self.X = torch.empty(U, D).normal_(generator=generator).mul_(scale).to(device)
        self.Y = torch.empty(N, D).normal_(generator=generator).mul_(scale).to(device)
        if self.explicit:
            self.mu = mu
            self.user_rows = self.ulo + torch.repeat_interleave(
                torch.arange(self.uhi - self.ulo, device=device),
                torch.as_tensor(self.users.lengths_np, device=device),
            )
            self.bu = torch.zeros(U, device=device)
            self.bi = torch.zeros(N, device=device)
            # solvers work on factors augmented with a bias column
            self.X = torch.cat([self.X, torch.zeros(U, 1, device=device)], 1)
            self.Y = torch.cat([self.Y, torch.zeros(N, 1, device=device)], 1)

    @property
    def progress_total(self) -> int:
        """Rows this process solves per iteration (both sides): what progress counts."""
        return (self.uhi - self.ulo) + (self.ihi - self.ilo)

    def _solve(self, rows, Y, values, reg, base, out, progress=None):
        """Solve one side. Per cell: implicit ``h = alpha v``, ``g = alpha v - 1`` (confidence
        ``alpha v``); explicit ``h = v`` (the target), ``g = 1``. The fused kernel runs over
        chunks of about :data:`PROGRESS_CELLS` cells, reporting each to ``progress``."""
        alpha = self.model.config.alpha
        if self.model.config.solver == "cg" and self.fused:  # the weights are made inside the loop
            scales = (1.0, 0.0, 1.0) if self.explicit else (alpha, alpha, -1.0)
            indices, values, Y = rows.indices.numpy(), values.numpy(), Y.contiguous().numpy()
            base = None if base is None else base.numpy()
            chunks = max(1, -(-int(rows.indptr_np[-1]) // PROGRESS_CELLS))
            for lo, hi in partition(rows.indptr_np, chunks):
                als_kernels.cg_rows(
                    rows.indptr_np[lo : hi + 1], indices, values, reg[lo:hi].numpy(), base, Y,
                    out[lo:hi].numpy(), self.model.config.cg_steps, h_scale=scales[0],
                    g_scale=scales[1], g_shift=scales[2],
                )  # fmt: skip
                if progress is not None:
                    progress.update(hi - lo)
            return out
        if self.explicit:
            g, h = torch.ones_like(values), values
        else:
            h = alpha * values
            g = h - 1
        if self.model.config.solver == "cg":
            out = solve_cg(rows, Y, g, h, reg, base, out, steps=self.model.config.cg_steps)
        else:
            out = solve_cholesky(rows, Y, g, h, reg, base, out)
        if progress is not None:
            progress.update(rows.shape[0])
        return out

    def _observed_loss(self, X: torch.Tensor, Y: torch.Tensor) -> float:
        """``sum_obs c (1 - x.y)^2 - (x.y)^2`` with ``c = alpha v``."""
        if self.fused:
            rows, alpha = self.users, self.model.config.alpha
            return als_kernels.observed_loss(
                rows.indptr_np, rows.indices.numpy(), self.user_values.numpy(), alpha,
                X.contiguous().numpy(), Y.contiguous().numpy(),
            )  # fmt: skip
        c = self.model.config.alpha * self.user_values
        dots = self.users.row_dots(X, Y)
        return float((c * (1 - dots) ** 2 - dots**2).sum())

    def _row_dots(self, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        if self.fused:
            dots = als_kernels.row_dots(self.users.indptr_np, self.users.indices.numpy(),
                                        X.contiguous().numpy(), Y.contiguous().numpy())  # fmt: skip
            return torch.from_numpy(dots)
        return self.users.row_dots(X, Y)

    def _gram(self, F: torch.Tensor, parts: list[tuple[int, int]]) -> torch.Tensor:
        """[D, D] ``F^T F``: each process's rows' part, all-reduced."""
        lo, hi = parts[distributed.rank()]
        mine = F[lo:hi] if len(parts) > 1 else F
        return all_reduce_sum(mine.T @ mine)

    def fit_epoch(self, progress=None) -> float:
        """One iteration (users, then items); ``progress`` counts the rows solved."""
        ulo, uhi, ilo, ihi = self.ulo, self.uhi, self.ilo, self.ihi
        if self.explicit:
            self._explicit_half(users=True, progress=progress)
            self._explicit_half(users=False, progress=progress)
        else:
            YtY = self._gram(self.Y, self.item_parts)
            X = self.X[ulo:uhi]  # a view: the solve writes this process's rows of X
            self._solve(self.users, self.Y, self.user_values, self.user_reg, YtY, X, progress)
            all_gather_rows(self.X, self.user_parts)
            XtX = self._gram(self.X, self.user_parts)
            Y = self.Y[ilo:ihi]
            self._solve(self.items, self.X, self.item_values, self.item_reg, XtX, Y, progress)
            all_gather_rows(self.Y, self.item_parts)
        return self.loss()

    def _explicit_half(self, users: bool, progress=None) -> None:
        """Solve one side's [factors, bias] against the other side's [factors, 1]."""
        D = self.model.config.dim
        if users:
            rows, mine, other, reg = self.users, self.X, self.Y, self.user_reg
            values, other_bias = self.user_values, self.bi
            lo, hi, parts = self.ulo, self.uhi, self.user_parts
        else:
            rows, mine, other, reg = self.items, self.Y, self.X, self.item_reg
            values, other_bias = self.item_values, self.bu
            lo, hi, parts = self.ilo, self.ihi, self.item_parts
        fixed = torch.cat([other[:, :D], torch.ones(len(other), 1, device=self.device)], 1)
        targets = values - self.mu - other_bias[rows.indices]
        self._solve(rows, fixed, targets, reg, None, mine[lo:hi], progress)
        all_gather_rows(mine, parts)
        if users:
            self.bu = mine[:, D].clone()
        else:
            self.bi = mine[:, D].clone()

    def loss(self) -> float:
        """The objective divided by the number of observed cells (each process adds its rows'
        cells and ridge terms; the all-reduced sum is the whole objective)."""
        D = self.model.config.dim
        X, Y = self.X[self.ulo : self.uhi, :D], self.Y[self.ilo : self.ihi, :D]
        part = _ridge(self.user_reg, X) + _ridge(self.item_reg, Y)
        if self.explicit:
            dots = self._row_dots(X, self.Y[:, :D])
            predicted = self.mu + self.bu[self.user_rows] + self.bi[self.user_cols] + dots
            part += (self.user_values - predicted).pow(2).sum()
            bu, bi = self.bu[self.ulo : self.uhi], self.bi[self.ilo : self.ihi]
            part += (self.user_reg * bu**2).sum() + (self.item_reg * bi**2).sum()
            total = float(all_reduce_sum(part.double().reshape(1)))
        else:
            part = part.double() + self._observed_loss(X, self.Y[:, :D])
            total = float(all_reduce_sum(part.reshape(1)))
            # sum over all cells of (x.y)^2 is trace(X^T X Y^T Y); observed cells correct it
            XF, YF = self.X[:, :D], self.Y[:, :D]
            total += float(((XF.T @ XF) * (YF.T @ YF)).sum())
        return total / max(1, self.cells)

    # ------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The factors (and biases) after the last iteration: what a checkpoint keeps."""
        state = {"X": self.X, "Y": self.Y}
        if self.explicit:
            state.update(bu=self.bu, bi=self.bi)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            setattr(self, name, value.to(self.device).clone())

    def user_vectors(self, users: np.ndarray) -> torch.Tensor:
        """[B, D(+1)] query vectors (explicit: factors and a 1 that meets the item bias)."""
        users = torch.as_tensor(np.asarray(users, dtype=np.int64), device=self.device)
        if self.explicit:
            X = self.X[users, : self.model.config.dim]
            return torch.cat([X, torch.ones(len(users), 1, device=self.device)], 1).cpu()
        return self.X[users].cpu()

    def item_vectors(self) -> torch.Tensor:
        if self.explicit:
            return torch.cat([self.Y[:, : self.model.config.dim], self.bi[:, None]], 1).cpu()
        return self.Y.cpu()


def _ridge(reg: torch.Tensor, F: torch.Tensor, chunk: int = 1 << 16) -> torch.Tensor:
    """``sum_r reg[r] |F[r]|^2``, a chunk of rows at a time: no [R, D] temporary."""
    total = torch.zeros((), dtype=F.dtype, device=F.device)
    for lo in range(0, len(F), chunk):
        total += (reg[lo : lo + chunk] * F[lo : lo + chunk].pow(2).sum(1)).sum()
    return total


# ------------------------------------------------------------------------------- the model
class WALS(FactorizedRecommender):
    """Matrix factorization by weighted alternating least squares (see the module docstring;
    hyper-parameters in :class:`~recfunnel.config.WALSConfig`)."""

    kind = "wals"
    #: what ``recfunnel tune`` searches
    search_space = {
        "dim": Choice((16, 32, 64, 128)),
        "regularization": Float(0.01, 500.0, log=True),
        "alpha": Float(0.5, 50.0, log=True),
        "reg_exponent": Choice((0.0, 0.5, 1.0)),
        "epochs": Int(5, 20),
    }
    duplicates = "sum"  # repeats of a cell add up to its confidence
    config_class = WALSConfig
    config: WALSConfig

    @property
    def predicts_ratings(self) -> bool:  # then predict() and rmse/mae apply
        return self.config.feedback == "explicit"

    def _check_data(self, train, **context):
        if self.config.feedback == "explicit":
            if train.ratings is None:
                raise RecfunnelError(
                    "explicit WALS needs ratings; fit interactions with ratings or use "
                    "feedback='implicit'",
                    cli="explicit WALS needs ratings; pass --rating-col or use --set "
                    "feedback=implicit",
                )
            if train.duplicate_pairs():
                train = train.deduplicate("mean")  # repeated ratings of a pair: their mean
        return train

    def _parameter_count(self, num_users, num_items):
        return (num_users + num_items) * (self.config.dim + 1)

    def _build_network(self, train, **context):
        self._solver = WALSSolver(self, train, resolve_device(self.config.trainer.device))
        return self._solver

    def _refresh(self) -> None:
        solver = getattr(self, "_solver", None)
        if solver is not None:  # training: publish the solver's current factors
            self._take(solver)
        self._index = None

    def _finish_training(self) -> None:
        super()._finish_training()
        self._solver = None

    def _take(self, solver: WALSSolver) -> None:
        D = self.config.dim
        self.user_factors_ = solver.X[:, :D].float().cpu().contiguous()
        self.item_factors_ = solver.Y[:, :D].float().cpu().contiguous()
        if solver.explicit:
            self.user_bias_ = solver.bu.float().cpu().contiguous()
            self.item_bias_ = solver.bi.float().cpu().contiguous()
            self.global_mean_ = torch.tensor(solver.mu, dtype=torch.float32)

    # --------------------------------------------------------------- vectors
    def user_vectors(self, users):
        self._check_fitted()
        X = self.user_factors_[torch.as_tensor(np.asarray(users, dtype=np.int64))]
        if self.config.feedback == "explicit":
            return torch.cat([X, torch.ones(len(X), 1)], 1)
        return X

    def item_vectors(self):
        self._check_fitted()
        if self.config.feedback == "explicit":
            return torch.cat([self.item_factors_, self.item_bias_[:, None]], 1)
        return self.item_factors_

    def predict(self, users, items) -> np.ndarray:
        """Explicit only: predicted ratings ``mu + b_u + b_i + x_u . y_i`` for pairs [B]."""
        self._check_fitted()
        if self.config.feedback != "explicit":
            raise RecfunnelError("only feedback=explicit WALS predicts ratings")
        u = torch.as_tensor(np.asarray(users, dtype=np.int64))
        i = torch.as_tensor(np.asarray(items, dtype=np.int64))
        dots = (self.user_factors_[u] * self.item_factors_[i]).sum(1)
        return (self.global_mean_ + self.user_bias_[u] + self.item_bias_[i] + dots).numpy()

    @torch.no_grad()
    def fold_in(self, items: np.ndarray) -> torch.Tensor:
        """[1, D] factors of a new user from their items: one exact regularised least-squares
        solve against the fixed item factors (the same equation as a training user's update,
        each history item with weight 1)."""
        self._check_fitted()
        if self.config.feedback == "explicit":
            raise RecfunnelError(
                "explicit WALS cannot fold in a history without ratings; use feedback=implicit"
            )
        items = np.unique(np.asarray(items, dtype=np.int64))
        if len(items) == 0:
            raise RecfunnelError("the history is empty; give at least one item")
        if items.min() < 0 or items.max() >= self.num_items:
            raise RecfunnelError(f"item index out of range [0, {self.num_items})")
        Y = self.item_factors_.double()
        Yh = Y[torch.as_tensor(items)]
        c = torch.full((len(items),), float(self.config.alpha), dtype=torch.float64)
        n = len(items) + (0 if self.config.feedback == "explicit" else self.num_items)
        reg = self.config.regularization * float(n) ** self.config.reg_exponent
        A = (
            Y.T @ Y
            + Yh.T @ ((c - 1)[:, None] * Yh)
            + reg * torch.eye(self.config.dim, dtype=Y.dtype)
        )
        x = torch.linalg.solve(A, Yh.T @ c)
        return x[None, :].float()

    # -------------------------------------------------------------- saving
    def _learned_tensors(self):
        out = {"user_factors": self.user_factors_, "item_factors": self.item_factors_}
        if self.config.feedback == "explicit":
            out.update(user_bias=self.user_bias_, item_bias=self.item_bias_,
                       global_mean=self.global_mean_.reshape(1))  # fmt: skip
        return out

    def _load_learned(self, tensors):
        self.user_factors_ = tensors["user_factors"]
        self.item_factors_ = tensors["item_factors"]
        if "user_bias" in tensors:
            self.user_bias_ = tensors["user_bias"]
            self.item_bias_ = tensors["item_bias"]
            self.global_mean_ = tensors["global_mean"].reshape(())
        self._index = None
