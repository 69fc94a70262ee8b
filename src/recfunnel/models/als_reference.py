"""A small, readable NumPy reference for the alternating-least-squares half step.

The fast solvers in :mod:`recfunnel.models.als` must agree with these loops; the tests check it.
One half step fixes the item factors ``Y`` [N, D] and solves every user's regularised weighted
least-squares problem exactly, one user at a time.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def implicit_half_step(
    confidence: sp.csr_matrix, Y: np.ndarray, regularization: np.ndarray
) -> np.ndarray:
    """Hu, Koren & Volinsky (2008) user update, one user at a time.

    Every item is a target: preference 1 with confidence ``c_ui`` where observed, preference 0
    with confidence 1 elsewhere. For user ``u`` with observed items ``I_u``::

        (Y^T Y + Y_u^T (C_u - I) Y_u + reg_u I) x_u = Y_u^T c_u

    Args:
        confidence: [U, N] CSR of the observed confidences ``c_ui``.
        Y: [N, D] item factors.
        regularization: [U] per-user ridge ``reg_u``.

    Returns: [U, D] user factors.
    """
    dim = Y.shape[1]
    gram = Y.T @ Y
    X = np.zeros((confidence.shape[0], dim))
    for u in range(confidence.shape[0]):
        items = confidence.indices[confidence.indptr[u] : confidence.indptr[u + 1]]
        c = confidence.data[confidence.indptr[u] : confidence.indptr[u + 1]]
        Yu = Y[items]
        A = gram + Yu.T @ ((c - 1.0)[:, None] * Yu) + regularization[u] * np.eye(dim)
        b = Yu.T @ c
        X[u] = np.linalg.solve(A, b)
    return X


def explicit_half_step(
    targets: sp.csr_matrix, Y: np.ndarray, regularization: np.ndarray
) -> np.ndarray:
    """Ridge regression on the observed entries only (ALS for ratings).

    For user ``u`` with observed items ``I_u`` and targets ``t_u``::

        (Y_u^T Y_u + reg_u I) x_u = Y_u^T t_u

    Users with no observed entry get a zero vector.
    """
    dim = Y.shape[1]
    X = np.zeros((targets.shape[0], dim))
    for u in range(targets.shape[0]):
        items = targets.indices[targets.indptr[u] : targets.indptr[u + 1]]
        if len(items) == 0:
            continue
        t = targets.data[targets.indptr[u] : targets.indptr[u + 1]]
        Yu = Y[items]
        X[u] = np.linalg.solve(Yu.T @ Yu + regularization[u] * np.eye(dim), Yu.T @ t)
    return X
