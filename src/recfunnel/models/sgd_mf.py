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

from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError
from recfunnel.losses import bpr_loss
from recfunnel.metrics import evaluate_scores
from recfunnel.models.base import FactorizedRecommender
from recfunnel.search_space import Choice, Float, Int
from recfunnel.training import Trainer, TrainerConfig, seed_everything


class BiasedMFNet(nn.Module):
    """Factors [U, D], [N, D] and biases; ``forward(users [B], items [B]) -> scores [B]``."""

    def __init__(self, num_users: int, num_items: int, dim: int, init_scale: float) -> None:
        super().__init__()
        self.user = nn.Embedding(num_users, dim)
        self.item = nn.Embedding(num_items, dim)
        self.user_bias = nn.Embedding(num_users, 1)
        self.item_bias = nn.Embedding(num_items, 1)
        for table in (self.user, self.item):
            nn.init.normal_(table.weight, std=init_scale)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)
        self.register_buffer("global_mean", torch.zeros(()))

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


SAMPLING = ("uniform", "popularity")


class BPRLoss(nn.Module):
    """BPR with ``negatives`` sampled items per positive row, averaged.

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
    ) -> None:
        super().__init__()
        self.net = net
        self.regularization = regularization
        self.num_items = len(item_counts)
        self.negatives = negatives
        cdf = None
        if sampling == "popularity":
            weights = torch.as_tensor(item_counts, dtype=torch.float64).clamp_min(0) ** 0.75
            cdf = torch.cumsum(weights, 0)
            cdf = (cdf / cdf[-1]).float()
        self.register_buffer("cdf", cdf)

    def sample(self, shape: tuple[int, ...], device) -> torch.Tensor:
        if self.cdf is None:
            return torch.randint(0, self.num_items, shape, device=device)
        u = torch.rand(shape, device=device)
        return torch.searchsorted(self.cdf, u).clamp_max(self.num_items - 1)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        u, i = batch["user"], batch["item"]
        j = self.sample((len(i), self.negatives), i.device)  # [B, K]
        p, qi, qj = self.net.user(u), self.net.item(i), self.net.item(j)  # [B,D] [B,D] [B,K,D]
        bi, bj = self.net.item_bias(i)[:, 0], self.net.item_bias(j)[..., 0]  # [B] [B, K]
        positive = (p * qi).sum(1) + bi  # [B]
        negative = torch.einsum("bd,bkd->bk", p, qj) + bj  # [B, K]
        loss = bpr_loss(positive[:, None], negative)
        penalty = p.pow(2).sum(1) + qi.pow(2).sum(1) + bi**2 + (qj.pow(2).sum(2) + bj**2).mean(1)
        return loss + self.regularization * penalty.mean()


class _GradientMF(FactorizedRecommender):
    """Shared fitting, vectors and saving of the two gradient-trained MF models."""

    def _check(self, train: Interactions) -> None:
        if self.dim < 1:
            raise RecfunnelError(f"dim must be at least 1, not {self.dim}")
        if self.regularization < 0:
            raise RecfunnelError(f"regularization must be >= 0, not {self.regularization}")

    def _loss_module(self, net: BiasedMFNet, train: Interactions) -> nn.Module:
        raise NotImplementedError

    def fit(self, train: Interactions, *, validation: Interactions | None = None, progress=False):
        config = TrainerConfig.from_params(self.get_params(), progress=progress)
        self._check(train)
        self._remember(train)
        seed_everything(self.seed)
        self.net_ = BiasedMFNet(train.num_users, train.num_items, self.dim, self.init_scale)
        loss = self._loss_module(self.net_, train)
        validate = None
        if validation is not None and len(validation):

            def validate():
                if self.predicts_ratings:
                    return {"validation_rmse": self._rmse(validation)}
                return evaluate_scores(
                    self.score, train, validation, factorized_ks=(), ranking_ks=(10,)
                )

        self.history_ = Trainer(config).fit(loss, train, validate=validate)
        self.net_.to("cpu").eval()
        self._index = None
        return self

    @torch.no_grad()
    def user_vectors(self, users):
        self._check_fitted()
        users = torch.as_tensor(np.asarray(users, dtype=np.int64))
        return torch.cat([self.net_.user.weight[users], torch.ones(len(users), 1)], 1)

    @torch.no_grad()
    def item_vectors(self):
        self._check_fitted()
        return torch.cat([self.net_.item.weight, self.net_.item_bias.weight], 1)

    def _learned_tensors(self):
        return {
            f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()
        }

    def _load_learned(self, tensors):
        num_users, num_items = self.seen_.shape
        self.net_ = BiasedMFNet(num_users, num_items, self.dim, self.init_scale)
        self.net_.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()})
        self.net_.eval()
        self._index = None


class SGDMF(_GradientMF):
    """Biased matrix factorization for ratings, trained on the squared error.

    Args:
        dim: factors D.
        regularization: L2 weight on each row's factors and biases.
        init_scale: standard deviation of the initial factors.
        optimizer, learning_rate, batch_size, epochs, device, seed: the trainer.
    """

    kind = "sgd-mf"
    predicts_ratings = True
    #: what ``recfunnel tune`` searches
    search_space = {
        "dim": Choice((16, 32, 64)),
        "regularization": Float(1e-3, 1.0, log=True),
        "learning_rate": Float(1e-3, 3e-2, log=True),
        "epochs": Int(5, 40),
    }

    def __init__(
        self,
        *,
        dim: int = 32,
        regularization: float = 0.1,
        init_scale: float = 0.1,
        optimizer: str = "adam",
        learning_rate: float = 0.01,
        batch_size: int = 1024,
        epochs: int = 20,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        self._set_params({k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def _check(self, train):
        super()._check(train)
        if train.ratings is None:
            raise RecfunnelError(
                "SGD-MF needs ratings; fit interactions with ratings, or use BPR or WALS",
                cli="--model sgd-mf needs ratings; pass --rating-col, or use --model bpr or wals",
            )

    def _loss_module(self, net, train):
        net.global_mean.fill_(float(train.ratings.mean()))
        return RatingLoss(net, self.regularization)

    @torch.no_grad()
    def predict(self, users, items) -> np.ndarray:
        """Predicted ratings [B] of (user, item) index pairs."""
        self._check_fitted()
        u = torch.as_tensor(np.asarray(users, dtype=np.int64))
        i = torch.as_tensor(np.asarray(items, dtype=np.int64))
        return self.net_(u, i).numpy()

    def _rmse(self, data: Interactions) -> float:
        error = self.predict(data.users, data.items) - data.ratings
        return float(np.sqrt(np.mean(error**2)))


class BPR(_GradientMF):
    """Bayesian personalised ranking MF for implicit feedback (sampled negatives).

    Args: as :class:`SGDMF`, and

    * ``regularization`` weighs the L2 penalty of the user, positive and negative rows;
    * ``negatives``: items sampled per positive (the loss averages their BPR terms);
    * ``sampling``: ``"uniform"`` or ``"popularity"`` (``count ** 0.75``).
    """

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

    def __init__(
        self,
        *,
        dim: int = 32,
        regularization: float = 0.01,
        negatives: int = 8,
        sampling: str = "uniform",
        init_scale: float = 0.1,
        optimizer: str = "adam",
        learning_rate: float = 0.01,
        batch_size: int = 1024,
        epochs: int = 20,
        device: str = "cpu",
        seed: int = 0,
    ) -> None:
        self._set_params({k: v for k, v in locals().items() if k not in ("self", "__class__")})

    def _check(self, train):
        super()._check(train)
        if self.negatives < 1:
            raise RecfunnelError(f"negatives must be at least 1, not {self.negatives}")
        if self.sampling not in SAMPLING:
            raise RecfunnelError(
                f"sampling must be one of {', '.join(SAMPLING)}, not {self.sampling!r}"
            )

    def _loss_module(self, net, train):
        return BPRLoss(net, self.regularization, train.item_counts(), self.negatives, self.sampling)

    @torch.no_grad()
    def fold_in(self, items: np.ndarray) -> torch.Tensor:
        """[1, D+1] a new user's vector: the mean of their items' factors (no retraining)."""
        self._check_fitted()
        q = self.net_.item.weight[torch.as_tensor(np.asarray(items, dtype=np.int64))]
        return torch.cat([q.mean(0), torch.ones(1)])[None, :]
