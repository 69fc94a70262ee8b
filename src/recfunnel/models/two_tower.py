"""Two-tower retrieval: a query (user) tower and a candidate (item) tower scored by dot product.

The TFRS MovieLens retrieval tutorial's model, trained by the one :class:`~recfunnel.training.
Trainer` with a :class:`~recfunnel.tasks.RetrievalTask` (in-batch softmax as TFRS defines it,
sampled or mixed negatives, or a full-catalogue softmax). ``softmax="auto"`` (the ``default``
preset) scores the full catalogue where that is cheap and switches to mixed negatives with
sparse updates (the settings in ``large``) where it is not: see :meth:`TwoTower.resolve`.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recfunnel import distributed
from recfunnel.config import TwoTowerConfig
from recfunnel.data.interactions import Interactions
from recfunnel.models.base import FactorizedRecommender
from recfunnel.models.towers import EmbeddingTower, HistoryQueryTower, pooling_matrices
from recfunnel.search_space import Choice, Float, Int
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
        item_l2: float = 0.0,
        history_sample: int | None = None,
        user_embedding: bool = True,
        item_bias: bool = False,
        init: str = "uniform",
        init_scale: float = 0.05,
        sparse: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.task = task
        self.user_l2 = user_l2
        self.item_l2 = item_l2
        self.history_sample = history_sample
        self.sparse = sparse
        if seen is not None:
            # Buffers, not state: rebuilt from the saved training matrix on load.
            if sparse:  # pool the batch's rows of the history (CSR), see HistoryQueryTower
                seen = seen.tocsr()
                counts = np.diff(seen.indptr).astype(np.float32)
                self.register_buffer("history_indptr", torch.as_tensor(
                    seen.indptr.astype(np.int64)), persistent=False)  # fmt: skip
                self.register_buffer("history_indices", torch.as_tensor(
                    seen.indices.astype(np.int64)), persistent=False)  # fmt: skip
                self.register_buffer("history_counts", torch.as_tensor(counts), persistent=False)
            else:
                pool, pool_t, counts = pooling_matrices(seen)
                self.register_buffer("history_pool", pool, persistent=False)
                self.register_buffer("history_pool_t", pool_t, persistent=False)
                self.register_buffer("history_counts", counts, persistent=False)
            self.query_tower = HistoryQueryTower(
                num_users, num_items, dim, init=init, scale=init_scale, sparse=sparse,
                own=user_embedding,
            )  # fmt: skip
        else:
            self.query_tower = EmbeddingTower(
                num_users, dim, init=init, scale=init_scale, sparse=sparse
            )
        self.item_tower = EmbeddingTower(num_items, dim, init=init, scale=init_scale,
                                         sparse=sparse)  # fmt: skip
        # A per-item bias (a popularity prior), scored as one more dimension: the query gets a
        # constant 1, so the model stays a dot product of two vectors.
        self.item_bias = nn.Parameter(torch.zeros(num_items + 1, 1)) if item_bias else None
        self.register_buffer(
            "item_log_probs", item_log_probs if item_log_probs is not None else torch.zeros(0)
        )
        # Sampled negatives: the sampler's log probabilities [N] and a generator of its own
        # (its state is part of a checkpoint).
        self.generator = torch.Generator().manual_seed(seed + 1)
        log_q = torch.zeros(0)
        if task.softmax in ("sampled", "mixed"):
            if task.sampler == "popularity" and item_log_probs is not None:
                log_q = item_log_probs.clone()
            else:
                log_q = torch.full((num_items,), -float(np.log(num_items)))
        self.register_buffer("sampler_log_probs", log_q, persistent=False)
        self.sampler_cdf = log_q.double().exp().cumsum(0)  # on the CPU, as the generator

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters whose gradients are sparse (every one, with ``sparse=True``)."""
        return list(self.parameters()) if self.sparse else []

    def queries(self, users: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """[B] user ids -> [B, D] query embeddings (``leave_out``: see HistoryQueryTower)."""
        if isinstance(self.query_tower, HistoryQueryTower):
            if self.sparse:
                rows = (self.history_indptr, self.history_indices)
                return self.query_tower(users, None, self.history_counts, leave_out, rows=rows,
                                        sample=self.history_sample,
                                        generator=self.generator)  # fmt: skip
            pool = (self.history_pool, self.history_pool_t)
            return self.query_tower(users, pool, self.history_counts, leave_out)
        return self.query_tower(users)

    def candidates(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Item vectors [B, D(+1)] of ``items``, or of the whole catalogue [N, D(+1)]."""
        vectors = self.item_tower.known() if items is None else self.item_tower(items)
        if self.item_bias is None:
            return vectors
        if items is None:
            bias = self.item_bias[: self.item_tower.num]
        else:
            bias = F.embedding(items, self.item_bias, sparse=self.sparse)
        return torch.cat([vectors, bias], dim=1)

    def sample_negatives(self, device: torch.device) -> torch.Tensor:
        """[S] item ids drawn by the task's sampler (with replacement)."""
        count = self.task.negatives
        if self.task.sampler == "uniform":
            ids = torch.randint(len(self.sampler_log_probs), (count,), generator=self.generator)
        else:
            u = torch.rand(count, generator=self.generator, dtype=torch.float64)
            ids = torch.searchsorted(self.sampler_cdf, u * float(self.sampler_cdf[-1]))
            ids.clamp_(max=len(self.sampler_cdf) - 1)
        return ids.to(device)

    def full_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """Queries [B, D(+1)] to score against :meth:`candidates`."""
        if self.item_bias is None:
            return queries
        return torch.cat([queries, queries.new_ones(queries.shape[0], 1)], dim=1)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        queries = self.queries(batch["user"], leave_out=batch["item"])
        sampled = None
        if self.task.softmax in ("sampled", "mixed"):
            sampled_ids = self.sample_negatives(queries.device)
            # one lookup of the distinct items: a sparse gradient then holds each row once
            wanted = torch.cat([batch["item"], sampled_ids])
            local, position = torch.unique(wanted, return_inverse=True)
            vectors = self.candidates(local)[position]
            positives = vectors[: len(batch["item"])]
            sampled = (sampled_ids, vectors[len(batch["item"]) :], self.sampler_log_probs)
        else:
            positives = self.candidates(batch["item"])
        gathered = None
        if self.task.softmax in ("in-batch", "mixed") and distributed.active():
            gathered = distributed.gather_candidates(positives, batch["item"])  # global negatives
            gathered = (gathered[1], gathered[0], gathered[2])
        loss = self.task.loss(
            self.full_queries(queries),
            positives,
            batch["item"],
            all_items=self.candidates() if self.task.softmax == "full" else None,
            item_log_probs=self.item_log_probs if self.task.logq_correction else None,
            weights=batch.get("weight"),
            sampled=sampled,
            batch_candidates=gathered,
        )
        if self.user_l2:
            loss = loss + self.user_l2 * queries.pow(2).sum(1).mean()
        if self.item_l2:
            dim = self.item_tower.embedding.embedding_dim  # the bias column is not penalised
            loss = loss + self.item_l2 * positives[:, :dim].pow(2).sum(1).mean()
        return loss


#: ``softmax="auto"`` scores the full catalogue up to this many items ...
AUTO_FULL_MAX_ITEMS = 20_000
#: ... and while (training rows x items) stays under this (about a minute per epoch on 2 cores)
AUTO_FULL_MAX_COST = 5e9


class TwoTower(FactorizedRecommender):
    """Two-tower retrieval model; hyper-parameters in :class:`~recfunnel.config.TwoTowerConfig`
    (the retrieval task's softmax, negatives, sampler, temperature, accidental-hit removal,
    logQ correction and reduction: :class:`~recfunnel.tasks.RetrievalTask`).

    ``softmax="auto"`` (the ``default`` preset) is ``"full"`` when the catalogue has at most
    20,000 items and (rows x items) is at most 5e9; else the settings in ``large`` replace
    these ones (softmax ``"mixed"`` unless ``large`` says otherwise). :meth:`resolve` gives the
    config a fit uses; the run records it (``resolved_config``).
    """

    kind = "two-tower"
    #: what ``recfunnel tune`` searches
    search_space = {
        "dim": Choice((32, 64, 128)),
        "learning_rate": Float(3e-3, 5e-2, log=True),
        "user_l2": Float(1e-4, 1.0, log=True),
        "epochs": Int(3, 15),
    }
    config_class = TwoTowerConfig
    config: TwoTowerConfig

    def resolve(self, num_rows: int, num_items: int) -> TwoTowerConfig:
        """The config a fit on ``num_rows`` rows of ``num_items`` items uses: ``softmax="auto"``
        resolved, ``trainer.epochs`` cut to those ``trainer.max_examples`` reaches."""
        config = self.config
        if config.softmax == "auto":
            cheap = num_items <= AUTO_FULL_MAX_ITEMS and num_rows * num_items <= AUTO_FULL_MAX_COST
            config = config.override(softmax="full") if cheap else config.resolve_large()
        budget = config.trainer.max_examples
        if budget is not None:
            epochs = int(min(config.trainer.epochs, max(1, -(-budget // max(1, num_rows)))))
            config = config.override(**{"trainer.epochs": epochs})
        return config

    def _resolve(self, train: Interactions) -> TwoTowerConfig:
        return self.resolve(len(train), train.num_items)

    def _task(self, config: TwoTowerConfig) -> RetrievalTask:
        softmax = config.softmax
        return RetrievalTask(
            softmax="in-batch" if softmax == "auto" else softmax,  # auto: for loading only
            negatives=config.negatives,
            sampler=config.sampler,
            temperature=config.temperature,
            remove_accidental_hits=config.remove_accidental_hits,
            logq_correction=config.logq_correction,
            reduction=config.reduction,
        )

    def _network(self, num_users: int, num_items: int, item_counts: np.ndarray | None,
                 config: TwoTowerConfig | None = None) -> TwoTowerNet:  # fmt: skip
        """The network of ``config`` (default: the model's own, as saved)."""
        config = config or self.config
        log_probs = None
        if item_counts is not None:
            probs = (item_counts + 1.0) / (item_counts.sum() + len(item_counts))
            log_probs = torch.as_tensor(np.log(probs), dtype=torch.float32)
        return TwoTowerNet(
            num_users,
            num_items,
            config.dim,
            self._task(config),
            seen=self.seen_ if config.pool_seen_items else None,
            item_log_probs=log_probs,
            user_l2=config.user_l2,
            item_l2=config.item_l2,
            history_sample=config.history_sample,
            user_embedding=config.user_embedding,
            item_bias=config.item_bias,
            init=config.init,
            init_scale=config.init_scale,
            sparse=config.sparse_updates,
            seed=config.trainer.seed,
        )

    def _build_network(self, train, **context):
        self.net_ = self._network(train.num_users, train.num_items, train.item_counts(),
                                  self.fit_config_)  # fmt: skip
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
