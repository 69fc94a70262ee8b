"""Item-based autoencoder for rating prediction (I-AutoRec; Sedhain et al. 2015, "AutoRec:
Autoencoders Meet Collaborative Filtering").

Each item is described by its column of training ratings ``r_i`` [U] (0 where unobserved). An
encoder ``h_i = sigmoid(V r_i + b)`` [H] and a decoder ``W h_i + c`` [U] reconstruct the
column; the loss counts observed cells only, plus ``l2 / 2 * (|V|^2 + |W|^2)``. Once trained,
the item codes ``h_i`` are fixed, so the predicted rating of (u, i) is the factorized form
``W_u . h_i + c_u``: :class:`ItemAutoencoder` keeps only the codes [N, H], the decoder rows
[U, H] and the user offsets [U]. The ranking model blends it with its own prediction
(:class:`~recfunnel.models.ranking.RankingModel`, ``autoencoder``).

Letters: U users, N items, H hidden units, B items in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from recfunnel.data.interactions import Interactions
from recfunnel.training import Trainer, TrainerConfig


class ItemAutoencoderNet(nn.Module):
    """The network trained on batches of items; states its loss in :meth:`compute_loss`."""

    def __init__(self, ratings: torch.Tensor, hidden: int, l2: float) -> None:
        super().__init__()
        num_items, num_users = ratings.shape
        self.register_buffer("ratings", ratings)  # [N, U], 0 = unobserved
        self.encoder = nn.Linear(num_users, hidden)
        self.decoder = nn.Linear(hidden, num_users)
        self.l2 = l2

    def codes(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """[B, H] item codes (all items when ``items`` is None)."""
        columns = self.ratings if items is None else self.ratings[items]
        return torch.sigmoid(self.encoder(columns))

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        items = batch["item"]
        target = self.ratings[items]
        error = (self.decoder(self.codes(items)) - target) * (target != 0)
        # the penalty is spread over the batches of an epoch in proportion to their size
        share = len(items) / len(self.ratings)
        penalty = self.encoder.weight.pow(2).sum() + self.decoder.weight.pow(2).sum()
        return error.pow(2).sum() + 0.5 * self.l2 * share * penalty


@dataclass
class ItemAutoencoder:
    """A trained item autoencoder in factorized form: ``rating(u, i) = decoder[u] . codes[i] +
    offsets[u]`` (codes [N, H], decoder [U, H], offsets [U])."""

    codes: torch.Tensor
    decoder: torch.Tensor
    offsets: torch.Tensor

    @classmethod
    def fit(
        cls,
        train: Interactions,
        *,
        hidden: int,
        l2: float,
        epochs: int,
        learning_rate: float = 1e-3,
        batch_size: int = 256,
        device: str = "auto",
        seed: int = 0,
    ) -> ItemAutoencoder:
        """Train on ``train``'s ratings (Adam over batches of items)."""
        ratings = torch.zeros(train.num_items, train.num_users)
        ratings[train.items, train.users] = torch.as_tensor(train.ratings, dtype=torch.float32)
        torch.manual_seed(seed)
        net = ItemAutoencoderNet(ratings, hidden, l2)
        config = TrainerConfig(
            epochs=epochs, batch_size=batch_size, optimizer="adam", learning_rate=learning_rate,
            device=device, seed=seed,
        )  # fmt: skip
        Trainer(config).fit(net, {"item": torch.arange(train.num_items)})
        net.to("cpu")
        with torch.no_grad():
            return cls(net.codes(), net.decoder.weight.detach().clone(),
                       net.decoder.bias.detach().clone())  # fmt: skip

    def predict(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B] predicted ratings of aligned (user, item) index pairs."""
        return (self.decoder[users] * self.codes[items]).sum(1) + self.offsets[users]

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """[B, M] predicted ratings of ``items`` ([M], or [B, M] per user) for ``users`` [B]."""
        codes = self.codes[items]
        if items.ndim == 1:
            return self.decoder[users] @ codes.T + self.offsets[users, None]
        return torch.einsum("bh,bmh->bm", self.decoder[users], codes) + self.offsets[users, None]

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"codes": self.codes, "decoder": self.decoder, "offsets": self.offsets}
