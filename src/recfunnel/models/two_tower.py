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

from recfunnel.data.interactions import Interactions
from recfunnel.metrics import evaluate_scores
from recfunnel.models.base import FactorizedRecommender
from recfunnel.models.towers import EmbeddingTower, HistoryQueryTower, pooling_matrices
from recfunnel.search_space import Choice, Float, Int
from recfunnel.tasks import RetrievalTask
from recfunnel.training import Trainer, TrainerConfig, seed_everything


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
        history: sp.csr_matrix | None = None,
        item_log_probs: torch.Tensor | None = None,
        user_l2: float = 0.0,
        item_bias: bool = False,
        init: str = "uniform",
        init_scale: float = 0.05,
    ) -> None:
        super().__init__()
        self.task = task
        self.user_l2 = user_l2
        if history is not None:
            pool, pool_t, counts = pooling_matrices(history)
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
    """Two-tower retrieval model.

    Args:
        dim: embedding dimension.
        softmax, temperature, remove_accidental_hits, logq_correction, reduction: the retrieval
            task (see :class:`~recfunnel.tasks.RetrievalTask`).
        history: add the pooled embeddings of the user's training items to the query tower.
        user_l2: L2 penalty on the query embeddings of each batch (mean squared norm).
        item_bias: learn a per-item bias (a popularity prior), scored as an extra dimension.
        init, init_scale: embedding initialisation (Keras' U(-0.05, 0.05) by default).
        optimizer, learning_rate, weight_decay, batch_size, epochs, patience, device, seed: the
            trainer (see :class:`~recfunnel.training.TrainerConfig`).
    """

    kind = "two-tower"
    #: what ``recfunnel tune`` searches
    search_space = {
        "dim": Choice((32, 64, 128)),
        "learning_rate": Float(3e-3, 5e-2, log=True),
        "user_l2": Float(1e-4, 1.0, log=True),
        "epochs": Int(3, 15),
    }

    def __init__(
        self,
        *,
        dim: int = 32,
        softmax: str = "in-batch",
        temperature: float = 1.0,
        remove_accidental_hits: bool = False,
        logq_correction: bool = False,
        reduction: str = "sum",
        history: bool = False,
        user_l2: float = 0.0,
        item_bias: bool = False,
        init: str = "uniform",
        init_scale: float = 0.05,
        optimizer: str = "adagrad",
        learning_rate: float = 0.1,
        weight_decay: float = 0.0,
        batch_size: int = 8192,
        epochs: int = 3,
        patience: int | None = None,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        self._set_params({k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def _task(self) -> RetrievalTask:
        return RetrievalTask(
            softmax=self.softmax,
            temperature=self.temperature,
            remove_accidental_hits=self.remove_accidental_hits,
            logq_correction=self.logq_correction,
            reduction=self.reduction,
        )

    def _build(self, num_users: int, num_items: int, item_counts: np.ndarray | None) -> TwoTowerNet:
        log_probs = None
        if item_counts is not None:
            probs = (item_counts + 1.0) / (item_counts.sum() + len(item_counts))
            log_probs = torch.as_tensor(np.log(probs), dtype=torch.float32)
        return TwoTowerNet(
            num_users,
            num_items,
            self.dim,
            self._task(),
            history=self.seen_ if self.history else None,
            item_log_probs=log_probs,
            user_l2=self.user_l2,
            item_bias=self.item_bias,
            init=self.init,
            init_scale=self.init_scale,
        )

    def trainer_config(self, progress: bool = False) -> TrainerConfig:
        return TrainerConfig.from_params(self.get_params(), progress=progress)

    def fit(self, train: Interactions, *, validation: Interactions | None = None, progress=False):
        config = self.trainer_config(progress)  # validates the trainer settings first
        self._task()
        self._remember(train)
        seed_everything(self.seed)
        self.net_ = self._build(train.num_users, train.num_items, train.item_counts())
        validate = None
        if validation is not None and len(validation):

            def validate():
                self._user_cache = None  # the towers changed since the last epoch
                return evaluate_scores(
                    self.score, train, validation, factorized_ks=(), ranking_ks=(10,)
                )

        self.history_ = Trainer(config).fit(self.net_, train, validate=validate)
        self.net_.to("cpu")
        self._index = self._user_cache = None
        return self

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

        With ``history=True`` this is the OOV user embedding plus the pooled history, exactly
        the query tower's formula; without it, the mean of the items' vectors.
        """
        self._check_fitted()
        items = np.asarray(items, dtype=np.int64)
        if self.history:
            query = self.net_.query_tower.fold_in(torch.as_tensor(np.unique(items)))
        else:
            query = self.net_.item_tower(torch.as_tensor(items)).mean(0, keepdim=True)
        return self.net_.full_queries(query)

    def _learned_tensors(self):
        return {
            f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()
        }

    def _load_learned(self, tensors):
        num_users, num_items = self.seen_.shape
        self.net_ = self._build(num_users, num_items, None)
        state = {k.removeprefix("net."): v for k, v in tensors.items()}
        self.net_.item_log_probs = state["item_log_probs"]
        self.net_.load_state_dict(state)
        self.net_.eval()
        self._index = self._user_cache = None
