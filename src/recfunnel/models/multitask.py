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

from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError
from recfunnel.losses import mse_loss
from recfunnel.models.base import FactorizedRecommender
from recfunnel.models.towers import EmbeddingTower
from recfunnel.tasks import RetrievalTask
from recfunnel.training import Trainer, TrainerConfig, seed_everything


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
    """Retrieval and rating prediction from shared embeddings (see the module docstring).

    Args:
        rating_weight, retrieval_weight: weights of the two losses (TFRS: (1, 0), (0, 1),
            (1, 1)).
        dim, hidden: embedding dimension and rating-MLP sizes before the output unit.
        softmax, reduction, temperature: the retrieval task.
        init, init_scale: embedding initialisation (Keras' U(-0.05, 0.05) by default).
        optimizer, learning_rate, weight_decay, batch_size, epochs, device, seed: the trainer.
    """

    kind = "multitask"
    predicts_ratings = True

    def __init__(
        self,
        *,
        rating_weight: float = 1.0,
        retrieval_weight: float = 1.0,
        dim: int = 32,
        hidden: list | tuple = (256, 128),
        softmax: str = "in-batch",
        reduction: str = "sum",
        temperature: float = 1.0,
        init: str = "uniform",
        init_scale: float = 0.05,
        optimizer: str = "adagrad",
        learning_rate: float = 0.1,
        weight_decay: float = 0.0,
        batch_size: int = 8192,
        epochs: int = 3,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        params = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        params["hidden"] = list(hidden)
        self._set_params(params)

    def _build(self, num_users: int, num_items: int) -> MultitaskNet:
        task = RetrievalTask(
            softmax=self.softmax, reduction=self.reduction, temperature=self.temperature
        )
        return MultitaskNet(
            num_users, num_items, self.dim, tuple(self.hidden), task, self.rating_weight,
            self.retrieval_weight, self.init, self.init_scale,
        )  # fmt: skip

    def fit(self, train: Interactions, *, validation=None, progress=False):
        if self.rating_weight < 0 or self.retrieval_weight < 0:
            raise RecfunnelError("task weights must be non-negative")
        if self.rating_weight == 0 and self.retrieval_weight == 0:
            raise RecfunnelError("both task weights are 0; give rating_weight or retrieval_weight")
        if self.rating_weight and train.ratings is None:
            raise RecfunnelError(
                "rating_weight > 0 needs ratings; fit interactions with ratings",
                cli="rating_weight > 0 needs ratings; give --rating-col",
            )
        config = TrainerConfig.from_params(self.get_params(), progress=progress)
        self._remember(train)
        seed_everything(self.seed)
        self.net_ = self._build(train.num_users, train.num_items)
        self.history_ = Trainer(config).fit(self.net_, train)
        self.net_.to("cpu").eval()
        self._index = None
        return self

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

    def _learned_tensors(self):
        return {
            f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()
        }

    def _load_learned(self, tensors):
        num_users, num_items = self.seen_.shape
        self.net_ = self._build(num_users, num_items)
        self.net_.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()})
        self.net_.eval()
