"""Two-tower retrieval: a query (user) tower and a candidate (item) tower scored by dot product.

The TFRS MovieLens retrieval tutorial's model, trained by the one :class:`~recfunnel.training.
Trainer` with a :class:`~recfunnel.tasks.RetrievalTask` (in-batch softmax as TFRS defines it, or
a full-catalogue softmax).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recfunnel.config import TwoTowerConfig
from recfunnel.models.base import FactorizedRecommender
from recfunnel.models.towers import EmbeddingTower, HistoryQueryTower, pooling_matrices
from recfunnel.tasks import RetrievalTask


class TwoTowerNet(nn.Module):
    """The network: towers plus the retrieval task. States its loss in :meth:`compute_loss`.

    Shapes: user ids [B] -> queries [B, D]; item ids [B] -> candidates [B, D].
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        dim: int,
        task: RetrievalTask,
        *,
        seen: sp.csr_matrix | None = None,
        item_log_probs: torch.Tensor | None = None,
        user_l2: float = 0.0,
        item_bias: bool = False,
        init: str = "uniform",
        init_scale: float = 0.05,
    ) -> None:
        super().__init__()
        self.task = task
        self.user_l2 = user_l2
        if seen is not None:
            pool, pool_t, counts = pooling_matrices(seen)
            # Buffers, not state: rebuilt from the saved training matrix on load.
            self.register_buffer("history_pool", pool, persistent=False)
            self.register_buffer("history_pool_t", pool_t, persistent=False)
            self.register_buffer("history_counts", counts, persistent=False)
            self.query_tower = HistoryQueryTower(
                num_users, num_items, dim, init=init, scale=init_scale
            )
        else:
            self.query_tower = EmbeddingTower(num_users, dim, init=init, scale=init_scale)
        self.item_tower = EmbeddingTower(num_items, dim, init=init, scale=init_scale)
        # A per-item bias (a popularity prior), scored as one more dimension: the query gets a
        # constant 1, so the model stays a dot product of two vectors.
        self.item_bias = nn.Parameter(torch.zeros(num_items + 1, 1)) if item_bias else None
        self.register_buffer(
            "item_log_probs", item_log_probs if item_log_probs is not None else torch.zeros(0)
        )

    def queries(self, users: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """[B] user ids -> [B, D] query embeddings (``leave_out``: see HistoryQueryTower)."""
        if isinstance(self.query_tower, HistoryQueryTower):
            pool = (self.history_pool, self.history_pool_t)
            return self.query_tower(users, pool, self.history_counts, leave_out)
        return self.query_tower(users)

    def candidates(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors [B, D(+1)] of ``items``, or of the whole catalogue [N, D(+1)]."""
        vectors = self.item_tower.known() if items is None else self.item_tower(items)
        if self.item_bias is None:
            return vectors
        bias = self.item_bias[: self.item_tower.num] if items is None else self.item_bias[items]
        return torch.cat([vectors, bias], dim=1)

    def full_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """Queries [B, D(+1)] to score against :meth:`candidates`."""
        if self.item_bias is None:
            return queries
        return torch.cat([queries, queries.new_ones(queries.shape[0], 1)], dim=1)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        queries = self.queries(batch["user"], leave_out=batch["item"])
        positives = self.candidates(batch["item"])
        loss = self.task.loss(
            self.full_queries(queries),
            positives,
            batch["item"],
            all_items=self.candidates() if self.task.softmax == "full" else None,
            item_log_probs=self.item_log_probs if self.task.logq_correction else None,
            weights=batch.get("weight"),
        )
        if self.user_l2:
            loss = loss + self.user_l2 * queries.pow(2).sum(1).mean()
        return loss


class TwoTower(FactorizedRecommender):
    """Two-tower retrieval model; hyper-parameters in :class:`~recfunnel.config.TwoTowerConfig`
    (the retrieval task's softmax, temperature, accidental-hit removal, logQ correction and
    reduction: :class:`~recfunnel.tasks.RetrievalTask`)."""

    kind = "two-tower"
    config_class = TwoTowerConfig
    config: TwoTowerConfig

    def _task(self) -> RetrievalTask:
        c = self.config
        return RetrievalTask(
            softmax=c.softmax,
            temperature=c.temperature,
            remove_accidental_hits=c.remove_accidental_hits,
            logq_correction=c.logq_correction,
            reduction=c.reduction,
        )

    def _network(self, num_users: int, num_items: int, item_counts: np.ndarray | None):
        log_probs = None
        if item_counts is not None:
            probs = (item_counts + 1.0) / (item_counts.sum() + len(item_counts))
            log_probs = torch.as_tensor(np.log(probs), dtype=torch.float32)
        c = self.config
        return TwoTowerNet(
            num_users,
            num_items,
            c.dim,
            self._task(),
            seen=self.seen_ if c.pool_seen_items else None,
            item_log_probs=log_probs,
            user_l2=c.user_l2,
            item_bias=c.item_bias,
            init=c.init,
            init_scale=c.init_scale,
        )

    def _build_network(self, train, **context):
        self.net_ = self._network(train.num_users, train.num_items, train.item_counts())
        return self.net_

    def _new_network(self, state):
        net = self._network(*self.seen_.shape, None)
        net.item_log_probs = state["item_log_probs"]
        return net

    def _refresh(self) -> None:
        self._index = self._user_cache = None

    @torch.no_grad()
    def user_vectors(self, users):
        """[B, D] query vectors. Computed once for every user after fitting (the history
        tower pools all users in one product), then served from that cache."""
        self._check_fitted()
        if getattr(self, "_user_cache", None) is None:
            device = next(self.net_.parameters()).device
            everyone = torch.arange(self.num_users, device=device)
            self._user_cache = self.net_.full_queries(self.net_.queries(everyone)).float().cpu()
        return self._user_cache[torch.as_tensor(np.asarray(users, dtype=np.int64))]

    @torch.no_grad()
    def item_vectors(self):
        self._check_fitted()
        return self.net_.candidates().detach().float().cpu()

    @torch.no_grad()
    def fold_in(self, items: np.ndarray) -> torch.Tensor:
        """[1, D] query vector of a user known only by the items they interacted with.

        With ``pool_seen_items`` this is the OOV user embedding plus the pooled history, exactly
        the query tower's formula; without it, the mean of the items' vectors.
        """
        self._check_fitted()
        items = np.asarray(items, dtype=np.int64)
        if self.config.pool_seen_items:
            query = self.net_.query_tower.fold_in(torch.as_tensor(np.unique(items)))
        else:
            query = self.net_.item_tower(torch.as_tensor(items)).mean(0, keepdim=True)
        return self.net_.full_queries(query)
