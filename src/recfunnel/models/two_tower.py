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
from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError
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
        sparse: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.task = task
        self.user_l2 = user_l2
        self.sparse = sparse
        if history is not None:
            # Buffers, not state: rebuilt from the saved training matrix on load.
            if sparse:  # pool the batch's rows of the history (CSR), see HistoryQueryTower
                history = history.tocsr()
                counts = np.diff(history.indptr).astype(np.float32)
                self.register_buffer("history_indptr", torch.as_tensor(
                    history.indptr.astype(np.int64)), persistent=False)  # fmt: skip
                self.register_buffer("history_indices", torch.as_tensor(
                    history.indices.astype(np.int64)), persistent=False)  # fmt: skip
                self.register_buffer("history_counts", torch.as_tensor(counts), persistent=False)
            else:
                pool, pool_t, counts = pooling_matrices(history)
                self.register_buffer("history_pool", pool, persistent=False)
                self.register_buffer("history_pool_t", pool_t, persistent=False)
                self.register_buffer("history_counts", counts, persistent=False)
            self.query_tower = HistoryQueryTower(
                num_users, num_items, dim, init=init, scale=init_scale, sparse=sparse
            )
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
                return self.query_tower(users, None, self.history_counts, leave_out, rows=rows)
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
        return loss


#: ``softmax="auto"`` scores the full catalogue up to this many items ...
AUTO_FULL_MAX_ITEMS = 20_000
#: ... and while (training rows x items) stays under this (about a minute per epoch on 2 cores)
AUTO_FULL_MAX_COST = 5e9
#: what ``large`` may set
LARGE_OPTIONS = ("softmax", "negatives", "sampler", "logq_correction", "sparse_updates",
                 "batch_size", "learning_rate", "epochs", "max_examples", "optimizer")  # fmt: skip


class TwoTower(FactorizedRecommender):
    """Two-tower retrieval model.

    Args:
        dim: embedding dimension.
        softmax: ``"in-batch"``, ``"sampled"``, ``"mixed"``, ``"full"`` (see
            :class:`~recfunnel.tasks.RetrievalTask`) or ``"auto"``: ``"full"`` when the
            catalogue has at most 20,000 items and (rows x items) is at most 5e9, else the
            settings in ``large`` replace these ones (softmax ``"mixed"`` unless ``large`` says
            otherwise). :meth:`resolve` gives the settings a fit uses; the run records them.
        negatives, sampler: sampled and mixed softmax: items drawn per batch, and how.
        temperature, remove_accidental_hits, logq_correction, reduction: the retrieval task.
        sparse_updates: embedding lookups give sparse gradients and the history is pooled for
            the batch's users only, so a step costs the rows it touches, not the tables' size
            (Adam becomes :class:`torch.optim.SparseAdam`, a lazy Adam). Not with the full
            softmax, whose gradient reaches every item.
        large: settings for ``softmax="auto"`` on a large catalogue (keys: softmax, negatives,
            sampler, logq_correction, sparse_updates, batch_size, learning_rate, epochs,
            max_examples, optimizer).
        max_examples: stop a fit once it has trained on this many rows (the last epoch may
            be partial): a fit's time stays bounded however large the data; ``None``: every
            epoch.
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
        negatives: int = 0,
        sampler: str = "uniform",
        sparse_updates: bool = False,
        large: dict | None = None,
        max_examples: int | None = None,
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

    def resolve(self, num_rows: int, num_items: int) -> dict:
        """The hyper-parameters a fit on ``num_rows`` rows of ``num_items`` items uses:
        ``softmax="auto"`` resolved, ``epochs`` cut to those ``max_examples`` reaches."""
        params = self.get_params()
        large = dict(params.pop("large") or {})
        unknown = sorted(set(large) - set(LARGE_OPTIONS))
        if unknown:
            raise RecfunnelError(
                f"large cannot set {', '.join(unknown)}; it takes {', '.join(LARGE_OPTIONS)}"
            )
        if params["softmax"] == "auto":
            cheap = num_items <= AUTO_FULL_MAX_ITEMS and num_rows * num_items <= AUTO_FULL_MAX_COST
            if cheap:
                params["softmax"] = "full"
            else:
                params.update(large)
                if params["softmax"] == "auto":
                    params["softmax"] = "mixed"
        budget = params["max_examples"]
        if budget is not None:
            params["epochs"] = int(min(params["epochs"], max(1, -(-budget // max(1, num_rows)))))
        if params["sparse_updates"] and params["softmax"] == "full":
            raise RecfunnelError(
                "sparse_updates does not go with the full softmax (its gradient reaches every "
                "item); use softmax=mixed or sampled"
            )
        return params

    def _task(self, params: dict | None = None) -> RetrievalTask:
        params = params or self.get_params()
        softmax = params["softmax"]
        return RetrievalTask(
            softmax="in-batch" if softmax == "auto" else softmax,  # auto: for loading only
            negatives=params["negatives"],
            sampler=params["sampler"],
            temperature=params["temperature"],
            remove_accidental_hits=params["remove_accidental_hits"],
            logq_correction=params["logq_correction"],
            reduction=params["reduction"],
        )

    def _build(self, num_users: int, num_items: int, item_counts: np.ndarray | None,
               params: dict | None = None) -> TwoTowerNet:  # fmt: skip
        params = params or self.get_params()
        log_probs = None
        if item_counts is not None:
            probs = (item_counts + 1.0) / (item_counts.sum() + len(item_counts))
            log_probs = torch.as_tensor(np.log(probs), dtype=torch.float32)
        return TwoTowerNet(
            num_users,
            num_items,
            self.dim,
            self._task(params),
            history=self.seen_ if self.history else None,
            item_log_probs=log_probs,
            user_l2=self.user_l2,
            item_bias=self.item_bias,
            init=self.init,
            init_scale=self.init_scale,
            sparse=bool(params.get("sparse_updates")),
            seed=self.seed,
        )

    def trainer_config(self, progress: bool = False, params: dict | None = None) -> TrainerConfig:
        return TrainerConfig.from_params(params or self.get_params(), progress=progress)

    def fit(self, train: Interactions, *, validation: Interactions | None = None, progress=False):
        params = self.resolve(len(train), train.num_items)
        config = self.trainer_config(progress, params)  # validates the trainer settings first
        self._task(params)
        self.resolved_ = params
        self._remember(train)
        seed_everything(self.seed)
        self.net_ = self._build(train.num_users, train.num_items, train.item_counts(), params)
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
