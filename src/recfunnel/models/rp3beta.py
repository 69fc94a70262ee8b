"""RP3beta: a popularity-penalised three-step random walk over the user-item graph.

Paudel, Christoffel, Newell and Bernstein 2017, "Updatable, Accurate, Diverse, and Scalable
Recommendations for Interactive Applications". With the binary user x item matrix ``X`` [U, N],
user degrees ``d_u`` (items per user) and item degrees ``c_i`` (users per item), a walk from item
``i`` to a user and on to item ``j`` has probability ``sum_u X_ui X_uj / (c_i d_u)``. RP3beta
raises each transition probability to ``alpha`` and divides by the target's popularity
``c_j ^ beta``:

    W_ij = c_i^-alpha * c_j^-beta * sum_u X_ui X_uj d_u^-alpha,   W_ii = 0

(for a binary ``X`` the powered transitions factor into degrees, so ``W`` is one weighted Gram
matrix ``X^T diag(d^-alpha) X``, scaled). ``neighbours`` keeps each item's strongest outgoing
weights only. A user's scores are her history row times ``W``: ``s_u = X_u W``; a new user is
scored from her items without refitting, as EASE does (the same item-item contract:
:class:`~recfunnel.models.ease.EASE`'s vectors, fold-in, saving and memory check).

Memory is a few ``N x N`` float32 matrices, like EASE; it costs one sparse product and no
inverse, so it fits in a fraction of EASE's time. Dacrema et al. 2019 ("Are We Really Making
Much Progress?") found it competitive with the neural models of its day; here it is a cheap
member of ``--model auto``'s blends, whose errors differ from EASE's and WALS's.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.config import RP3betaConfig
from recfunnel.data.interactions import Interactions
from recfunnel.models.ease import EASE
from recfunnel.search_space import Float
from recfunnel.training import resolve_device


def rp3beta_weights(
    X: sp.csr_matrix, alpha: float, beta: float, neighbours: int | None = None, device="cpu"
) -> torch.Tensor:
    """``W^T`` [N, N] of a binary ``X`` [U, N] (row ``j`` is item ``j``'s vector: column ``j``
    of ``W``); see the module docstring."""
    user_degree = np.asarray(X.sum(1)).ravel()
    item_degree = np.asarray(X.sum(0)).ravel()
    walk = sp.diags(np.power(np.maximum(user_degree, 1.0), -alpha).astype(np.float32)) @ X
    gram = torch.as_tensor((X.T @ walk).toarray(), dtype=torch.float32, device=device)
    degree = torch.as_tensor(np.maximum(item_degree, 1.0), dtype=torch.float32, device=device)
    gram *= degree.pow(-alpha)[:, None]  # row i: from item i
    gram *= degree.pow(-beta)[None, :]  # column j: to item j, penalised by its popularity
    gram.fill_diagonal_(0.0)
    n = gram.shape[0]
    if neighbours is not None and neighbours < n:
        weakest = torch.topk(gram, n - neighbours, dim=1, largest=False).indices
        gram.scatter_(1, weakest, 0.0)
    return gram.T.contiguous()


class RP3beta(EASE):
    """RP3beta (Paudel et al. 2017); see the module docstring. Hyper-parameters in
    :class:`~recfunnel.config.RP3betaConfig`: ``alpha``, ``beta``, ``neighbours`` (``recfunnel
    tune --model rp3beta`` searches them), ``max_memory_gb`` and ``device``."""

    kind = "rp3beta"
    label = "RP3beta"
    #: what ``recfunnel tune`` searches (``neighbours`` did not help on validation: not searched)
    search_space = {"alpha": Float(0.2, 1.5), "beta": Float(0.0, 1.0)}
    config_class = RP3betaConfig
    config: RP3betaConfig

    def _train(self, train: Interactions, validation, *, progress=False, **context) -> None:
        X = self.seen_.astype(np.float32)
        X.data[:] = 1.0  # binary: a repeated interaction counts once
        c = self.config
        weights = rp3beta_weights(X, c.alpha, c.beta, c.neighbours, resolve_device(c.device))
        self.item_weights_ = weights.cpu().contiguous()
        self._index = None
