"""Multitask retrieval + rating: shared user and item embeddings, two losses, one model.

The TFRS multitask tutorial's model: a user embedding ``e_u`` and an item embedding ``e_i``
(dimension D, with OOV rows) are shared by

* a retrieval task - :class:`~recfunnel.tasks.RetrievalTask` over ``<e_u, e_i>`` (in-batch
  softmax as TFRS, or full softmax), and
* a rating task - an MLP over ``[e_u, e_i]`` (TFRS: 256-128-1) trained with mean squared error,

and trained on ``rating_weight * MSE + retrieval_weight * retrieval loss``. Recommending is the
retrieval side (dot products, so it is a factorized model with a top-k index); ``predict`` is the
rating side.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from recfunnel.config import MultitaskConfig
from recfunnel.errors import RecfunnelError
from recfunnel.losses import mse_loss
from recfunnel.models.base import FactorizedRecommender
from recfunnel.models.towers import EmbeddingTower
from recfunnel.tasks import RetrievalTask


class MultitaskNet(nn.Module):
    """Shared embeddings, a rating MLP and a retrieval task. Shapes: ids [B] -> [B, D]."""

    def __init__(self, num_users, num_items, dim, hidden, task, rating_weight, retrieval_weight,
                 init, init_scale):  # fmt: skip
        super().__init__()
        self.users = EmbeddingTower(num_users, dim, init=init, scale=init_scale)
        self.items = EmbeddingTower(num_items, dim, init=init, scale=init_scale)
        layers: list[nn.Module] = []
        width = 2 * dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        layers.append(nn.Linear(width, 1))
        self.rating = nn.Sequential(*layers)
        self.task = task
        self.rating_weight = rating_weight
        self.retrieval_weight = retrieval_weight

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B] ids -> [B] predicted ratings."""
        return self.rating(torch.cat([self.users(users), self.items(items)], -1)).squeeze(-1)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        queries = self.users(batch["user"])
        candidates = self.items(batch["item"])
        loss = queries.new_zeros(())
        if self.rating_weight:
            predicted = self.rating(torch.cat([queries, candidates], -1)).squeeze(-1)
            loss = loss + self.rating_weight * mse_loss(predicted, batch["rating"].float())
        if self.retrieval_weight:
            retrieval = self.task.loss(
                queries, candidates, batch["item"],
                all_items=self.items.known() if self.task.softmax == "full" else None,
                weights=batch.get("weight"),
            )  # fmt: skip
            loss = loss + self.retrieval_weight * retrieval
        return loss


class Multitask(FactorizedRecommender):
    """Retrieval and rating prediction from shared embeddings (see the module docstring;
    hyper-parameters in :class:`~recfunnel.config.MultitaskConfig`)."""

    kind = "multitask"
    predicts_ratings = True
    config_class = MultitaskConfig
    config: MultitaskConfig

    def _rates(self) -> bool:
        return self.config.rating_weight > 0

    def _check_data(self, train, **context):
        if self.config.rating_weight and train.ratings is None:
            raise RecfunnelError(
                "rating_weight > 0 needs ratings; fit interactions with ratings",
                cli="rating_weight > 0 needs ratings; give --rating-col",
            )
        return train

    def _new_network(self, state=None) -> MultitaskNet:
        c = self.config
        task = RetrievalTask(softmax=c.softmax, reduction=c.reduction, temperature=c.temperature)
        return MultitaskNet(
            *self.seen_.shape, c.dim, c.hidden, task, c.rating_weight, c.retrieval_weight,
            c.init, c.init_scale,
        )  # fmt: skip

    def _build_network(self, train, **context):
        self.net_ = self._new_network()
        return self.net_

    @torch.no_grad()
    def user_vectors(self, users):
        self._check_fitted()
        return self.net_.users(torch.as_tensor(np.asarray(users, dtype=np.int64))).float()

    @torch.no_grad()
    def item_vectors(self):
        self._check_fitted()
        return self.net_.items.known().detach().float()

    @torch.no_grad()
    def predict(self, users, items) -> np.ndarray:
        """Predicted ratings [B] of (user, item) index pairs (the rating head, unclipped, as
        TFRS evaluates it)."""
        self._check_fitted()
        users = torch.as_tensor(np.asarray(users, dtype=np.int64))
        items = torch.as_tensor(np.asarray(items, dtype=np.int64))
        return self.net_.predict(users, items).numpy()

    def fold_in(self, items) -> torch.Tensor:
        return self.item_vectors()[torch.as_tensor(np.asarray(items, dtype=np.int64))].mean(
            0, keepdim=True
        )
