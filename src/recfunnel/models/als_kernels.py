"""Fused per-row WALS kernels, compiled with numba when it is installed (the ``fast`` extra).

The torch conjugate-gradient solver in :mod:`recfunnel.models.als` works on all rows at once: each
CG step is a sampled product over the observed cells and a sparse x dense product, each reading
the other side's factor rows from memory at random, with [R, D] work vectors and [nnz] temporaries
in between. Here each row runs its own CG steps with D-sized work vectors that stay in cache and
reads each observed cell's factor row once per step, doing the dot product and the update while
the row is loaded (as implicit's Cython loop does). Rows are spread over as many threads as torch
uses.

Same equations as :func:`recfunnel.models.als.solve_cg`, for row ``r`` with cells ``I_r``::

    (base + sum_{i in I_r} g_i y_i y_i^T + reg_r I) x_r = sum_{i in I_r} h_i y_i

Letters: R rows, N other side's rows, D factors.
"""

from __future__ import annotations

import numpy as np

from recfunnel.jit import AVAILABLE, launch, numba


def _cg_rows(
    indptr, indices, v, h_scale, g_scale, g_shift, reg, base, Y, X, steps
):  # pragma: no cover
    """``steps`` CG steps per row, warm-started from and written to ``X`` [R, D]; cell ``j`` has
    ``h = h_scale * v[j]`` and ``g = g_scale * v[j] + g_shift``."""
    R, D = X.shape
    for row in numba.prange(R):
        start, stop = indptr[row], indptr[row + 1]
        lam = reg[row]
        x = X[row]
        r = np.empty(D, dtype=np.float32)
        p = np.empty(D, dtype=np.float32)
        ap = np.empty(D, dtype=np.float32)
        # r = b - A x = sum h y - base x - reg x - sum g (y.x) y
        for d in range(D):
            acc = np.float32(0.0)
            for e in range(D):
                acc += base[d, e] * x[e]
            r[d] = -acc - lam * x[d]
        for j in range(start, stop):
            y = Y[indices[j]]
            dot = np.float32(0.0)
            for d in range(D):
                dot += y[d] * x[d]
            coef = h_scale * v[j] - (g_scale * v[j] + g_shift) * dot
            for d in range(D):
                r[d] += coef * y[d]
        rs = np.float32(0.0)
        for d in range(D):
            p[d] = r[d]
            rs += r[d] * r[d]
        for _ in range(steps):
            if rs < 1e-20:
                break
            for d in range(D):
                acc = np.float32(0.0)
                for e in range(D):
                    acc += base[d, e] * p[e]
                ap[d] = acc + lam * p[d]
            for j in range(start, stop):
                y = Y[indices[j]]
                dot = np.float32(0.0)
                for d in range(D):
                    dot += y[d] * p[d]
                coef = (g_scale * v[j] + g_shift) * dot
                for d in range(D):
                    ap[d] += coef * y[d]
            denom = np.float32(0.0)
            for d in range(D):
                denom += p[d] * ap[d]
            if denom <= 0:
                break
            step = rs / denom
            rs_new = np.float32(0.0)
            for d in range(D):
                x[d] += step * p[d]
                r[d] -= step * ap[d]
                rs_new += r[d] * r[d]
            beta = rs_new / rs
            for d in range(D):
                p[d] = r[d] + beta * p[d]
            rs = rs_new


def _row_dots(indptr, indices, X, Y, out):  # pragma: no cover - compiled
    """``out[j] = X[row(j)] . Y[indices[j]]`` for every cell ``j``."""
    R, D = X.shape
    for row in numba.prange(R):
        x = X[row]
        for j in range(indptr[row], indptr[row + 1]):
            y = Y[indices[j]]
            acc = np.float32(0.0)
            for d in range(D):
                acc += x[d] * y[d]
            out[j] = acc


def _observed_loss(indptr, indices, v, alpha, X, Y):  # pragma: no cover - compiled
    """``sum_j c_j (1 - d_j)^2 - d_j^2`` over the observed cells, ``c_j = alpha * v_j``,
    ``d_j = x_row . y_col``."""
    R, D = X.shape
    total = 0.0
    for row in numba.prange(R):
        x = X[row]
        part = 0.0
        for j in range(indptr[row], indptr[row + 1]):
            y = Y[indices[j]]
            acc = np.float32(0.0)
            for d in range(D):
                acc += x[d] * y[d]
            part += alpha * v[j] * (1.0 - acc) ** 2 - acc * acc
        total += part
    return total


if AVAILABLE:
    _observed_loss = numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)(
        _observed_loss
    )
    _cg_rows = numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)(_cg_rows)
    _row_dots = numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)(_row_dots)


def cg_rows(
    indptr: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    reg: np.ndarray,
    base: np.ndarray | None,
    Y: np.ndarray,
    X: np.ndarray,
    steps: int,
    *,
    h_scale: float = 1.0,
    g_scale: float = 1.0,
    g_shift: float = -1.0,
) -> np.ndarray:
    """``steps`` CG steps on every row's system, updating ``X`` [R, D] (float32) in place.

    The per-cell weights are made from ``values`` inside the loop (no [nnz] arrays):
    ``h = h_scale * v`` and ``g = g_scale * v + g_shift``; implicit feedback with confidence
    ``alpha * v`` is ``h_scale = g_scale = alpha, g_shift = -1``, explicit ratings ``v`` the
    targets and ``h_scale = 1, g_scale = 0, g_shift = 1``.

    Args:
        indptr, indices: the observed cells (CSR, R rows over the N rows of ``Y``).
        values: float32 [nnz] per-cell values.
        reg: float32 [R] ridge per row.
        base: float32 [D, D] shared Gram term, or ``None``.
        Y: float32 [N, D] fixed factors.
    """
    D = X.shape[1]
    base = np.zeros((D, D), np.float32) if base is None else np.ascontiguousarray(base, np.float32)
    launch(_cg_rows, indptr, indices, values, np.float32(h_scale), np.float32(g_scale),
           np.float32(g_shift), reg, base, Y, X, int(steps))  # fmt: skip
    return X


def row_dots(indptr: np.ndarray, indices: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """float32 [nnz] ``X[row] . Y[col]`` for every observed cell."""
    out = np.empty(len(indices), dtype=np.float32)
    launch(_row_dots, indptr, indices, X, Y, out)
    return out


def observed_loss(
    indptr: np.ndarray,
    indices: np.ndarray,
    values: np.ndarray,
    alpha: float,
    X: np.ndarray,
    Y: np.ndarray,
) -> float:
    """The implicit loss's correction on the observed cells (confidence ``alpha * values``),
    without an [nnz] temporary."""
    return float(launch(_observed_loss, indptr, indices, values, float(alpha), X, Y))
