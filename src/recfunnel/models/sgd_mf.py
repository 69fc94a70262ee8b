"""Matrix factorization trained by gradient descent through the one Trainer.

* :class:`SGDMF`: biased MF for explicit ratings (Funk 2006; Koren, Bell & Volinsky 2009,
  "Matrix Factorization Techniques for Recommender Systems"):
  ``r_ui ~ mu + b_u + b_i + p_u . q_i``, loss = squared error + L2 on the row's parameters.
* :class:`BPR`: Bayesian personalised ranking for implicit feedback (Rendle et al. 2009): each
  positive (u, i) is paired with ``negatives`` sampled items j and the loss is the mean of
  ``-log sigmoid(s_ui - s_uj)`` + L2 on the rows' parameters, with ``s_ui = p_u . q_i + b_i``.

Both state their loss in ``compute_loss(batch)``; the Trainer owns the optimiser and epochs.
Letters: B batch, D factors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recfunnel import distributed
from recfunnel.config import (
    SPARSE_BPR_ABOVE,
    SPARSE_SGD_MF_ABOVE,
    BPRConfig,
    SGDMFConfig,
    sparse_updates_for,
)
from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError
from recfunnel.losses import bpr_loss
from recfunnel.models.base import FactorizedRecommender
from recfunnel.search_space import Choice, Float, Int


class BiasedMFNet(nn.Module):
    """Factors [U, D], [N, D] and biases; ``forward(users [B], items [B]) -> scores [B]``."""

    def __init__(self, num_users: int, num_items: int, dim: int, init_scale: float,
                 sparse: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.sparse = sparse
        self.user = nn.Embedding(num_users, dim, sparse=sparse)
        self.item = nn.Embedding(num_items, dim, sparse=sparse)
        self.user_bias = nn.Embedding(num_users, 1, sparse=sparse)
        self.item_bias = nn.Embedding(num_items, 1, sparse=sparse)
        for table in (self.user, self.item):
            nn.init.normal_(table.weight, std=init_scale)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)
        self.register_buffer("global_mean", torch.zeros(()))

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters whose gradients are sparse (every one, with ``sparse=True``): the trainer
        gives them a lazy Adam (:class:`recfunnel.training.LazyAdam`)."""
        return list(self.parameters()) if self.sparse else []

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dots = (self.user(users) * self.item(items)).sum(1)
        return self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0] + dots


class RatingLoss(nn.Module):
    """Squared error of biased MF plus ``regularization`` x the squared norms of each row's
    parameters (as Funk's per-rating SGD applies it), averaged over the batch."""

    def __init__(self, net: BiasedMFNet, regularization: float) -> None:
        super().__init__()
        self.net = net
        self.regularization = regularization

    def sparse_parameters(self) -> list[nn.Parameter]:
        return self.net.sparse_parameters()

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        u, i = batch["user"], batch["item"]
        error = batch["rating"] - self.net(u, i)
        penalty = (
            self.net.user(u).pow(2).sum(1)
            + self.net.item(i).pow(2).sum(1)
            + self.net.user_bias(u)[:, 0] ** 2
            + self.net.item_bias(i)[:, 0] ** 2
        )
        return (error**2 + self.regularization * penalty).mean()


class BPRLoss(nn.Module):
    """BPR with ``negatives`` sampled items per positive row, averaged, or only the highest
    scored of them (``weighting="hardest"``: dynamic negative sampling, Zhang et al. 2013,
    "Optimizing Top-N Collaborative Filtering via Dynamic Negative Item Sampling").

    Negatives are drawn uniformly or in proportion to ``count ** 0.75`` (``sampling``; the
    word2vec smoothing, so popular items are seen as negatives as often as they are positives
    and the item bias alone cannot win), with replacement and without excluding the user's
    positives (rare accidental hits, as in Rendle et al. 2009).
    """

    def __init__(
        self,
        net: BiasedMFNet,
        regularization: float,
        item_counts: np.ndarray,
        negatives: int = 1,
        sampling: str = "uniform",
        weighting: str = "mean",
    ) -> None:
        super().__init__()
        self.net = net
        self.regularization = regularization
        self.num_items = len(item_counts)
        self.negatives = negatives
        self.hardest = weighting == "hardest"
        cdf = None
        if sampling == "popularity":
            weights = torch.as_tensor(item_counts, dtype=torch.float64).clamp_min(0) ** 0.75
            cdf = torch.cumsum(weights, 0)
            cdf = (cdf / cdf[-1]).float()
        self.register_buffer("cdf", cdf)

    def sparse_parameters(self) -> list[nn.Parameter]:
        return self.net.sparse_parameters()

    def sample(self, shape: tuple[int, ...], device) -> torch.Tensor:
        if self.cdf is None:
            return torch.randint(0, self.num_items, shape, device=device)
        u = torch.rand(shape, device=device)
        return torch.searchsorted(self.cdf, u).clamp_max(self.num_items - 1)

    def negatives_of(self, rows: int, device) -> torch.Tensor:
        """[rows, K] negatives for this process's rows of the step: drawn for the whole global
        batch and sliced (:func:`~recfunnel.distributed.global_batch`), so a distributed step
        draws exactly what one process with the global batch draws."""
        total, offset = distributed.global_batch(rows)
        return self.sample((total, self.negatives), device)[offset : offset + rows]

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        u, i = batch["user"], batch["item"]
        j = self.negatives_of(len(i), i.device)  # [B, K]
        if self.hardest:  # only the highest scored negative counts (and is regularized)
            with torch.no_grad():
                scores = torch.einsum("bd,bkd->bk", self.net.user(u), self.net.item(j))
                scores += self.net.item_bias(j)[..., 0]
            j = j.gather(1, scores.argmax(1, keepdim=True))  # [B, 1]
        p, qi, qj = self.net.user(u), self.net.item(i), self.net.item(j)  # [B,D] [B,D] [B,K,D]
        bi, bj = self.net.item_bias(i)[:, 0], self.net.item_bias(j)[..., 0]  # [B] [B, K]
        positive = (p * qi).sum(1) + bi  # [B]
        negative = torch.einsum("bd,bkd->bk", p, qj) + bj  # [B, K]
        loss = bpr_loss(positive[:, None], negative)
        penalty = p.pow(2).sum(1) + qi.pow(2).sum(1) + bi**2 + (qj.pow(2).sum(2) + bj**2).mean(1)
        return loss + self.regularization * penalty.mean()


class _GradientMF(FactorizedRecommender):
    """Shared network, vectors and saving of the two gradient-trained MF models."""

    def _loss_module(self, net: BiasedMFNet, train: Interactions) -> nn.Module:
        raise NotImplementedError

    #: users + items above which ``sparse_updates`` unset means sparse
    sparse_above: int

    def _resolve(self, train: Interactions):
        """``sparse_updates`` unset: sparse on a large user + item table (a dense Adam step
        updates every row; :func:`~recfunnel.config.sparse_updates_for`)."""
        sparse = sparse_updates_for(self.config, train.num_users, train.num_items,
                                    self.sparse_above)  # fmt: skip
        return self.config.override(sparse_updates=sparse)

    def _new_network(self, state=None) -> BiasedMFNet:
        fitting = getattr(self, "fit_config_", None)  # a saved model loads dense: no training
        sparse = bool(fitting.sparse_updates) if fitting is not None and state is None else False
        return BiasedMFNet(*self.seen_.shape, self.config.dim, self.config.init_scale, sparse)

    def _build_network(self, train, **context):
        self.net_ = self._new_network()
        return self._loss_module(self.net_, train)

    @torch.no_grad()
    def user_vectors(self, users):
        self._check_fitted()
        users = torch.as_tensor(np.asarray(users, dtype=np.int64))
        return torch.cat([self.net_.user.weight[users], torch.ones(len(users), 1)], 1)

    @torch.no_grad()
    def item_vectors(self):
        self._check_fitted()
        return torch.cat([self.net_.item.weight, self.net_.item_bias.weight], 1)


class SGDMF(_GradientMF):
    """Biased matrix factorization for ratings, trained on the squared error
    (:class:`~recfunnel.config.SGDMFConfig`)."""

    kind = "sgd-mf"
    predicts_ratings = True
    #: what ``recfunnel tune`` searches
    search_space = {
        "dim": Choice((16, 32, 64)),
        "regularization": Float(1e-3, 1.0, log=True),
        "learning_rate": Float(1e-3, 3e-2, log=True),
        "epochs": Int(5, 40),
    }
    config_class = SGDMFConfig
    sparse_above = SPARSE_SGD_MF_ABOVE

    def _check_data(self, train, **context):
        if train.ratings is None:
            raise RecfunnelError(
                "SGD-MF needs ratings; fit interactions with ratings, or use BPR or WALS",
                cli="--model sgd-mf needs ratings; pass --rating-col, or use --model bpr or wals",
            )
        return train

    def _loss_module(self, net, train):
        net.global_mean.fill_(float(train.ratings.mean()))
        return RatingLoss(net, self.config.regularization)

    @torch.no_grad()
    def predict(self, users, items) -> np.ndarray:
        """Predicted ratings [B] of (user, item) index pairs."""
        self._check_fitted()
        u = torch.as_tensor(np.asarray(users, dtype=np.int64))
        i = torch.as_tensor(np.asarray(items, dtype=np.int64))
        return self.net_(u, i).numpy()


class BPR(_GradientMF):
    """Bayesian personalised ranking MF for implicit feedback (``negatives`` sampled items per
    positive, uniformly or by popularity; :class:`~recfunnel.config.BPRConfig`)."""

    kind = "bpr"
    #: what ``recfunnel tune`` searches
    search_space = {
        "dim": Choice((32, 64, 128)),
        "regularization": Float(1e-4, 1e-1, log=True),
        "learning_rate": Float(3e-3, 5e-2, log=True),
        "negatives": Choice((1, 4, 8, 16)),
        "epochs": Int(5, 30),
    }
    duplicates = "sum"  # repeats of a cell add up to its confidence
    config_class = BPRConfig
    sparse_above = SPARSE_BPR_ABOVE

    def _loss_module(self, net, train):
        config = self.config
        return BPRLoss(net, config.regularization, train.item_counts(), config.negatives,
                       config.sampling, config.weighting)  # fmt: skip

    @torch.no_grad()
    def fold_in(self, items: np.ndarray) -> torch.Tensor:
        """[1, D+1] a new user's vector: the mean of their items' factors (no retraining)."""
        self._check_fitted()
        q = self.net_.item.weight[torch.as_tensor(np.asarray(items, dtype=np.int64))]
        return torch.cat([q.mean(0), torch.ones(1)])[None, :]
