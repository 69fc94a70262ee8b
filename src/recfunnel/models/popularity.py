"""Most-popular baseline: every user gets the items with the most training interactions."""

from __future__ import annotations

import numpy as np
import torch

from recfunnel.config import MostPopularConfig
from recfunnel.data.interactions import Interactions
from recfunnel.models.base import FactorizedRecommender


class MostPopular(FactorizedRecommender):
    """Scores each item by its training count (a one-dimensional factorized model)."""

    kind = "most-popular"
    config_class = MostPopularConfig

    def _train(self, train: Interactions, validation, *, progress=False, **context):
        self.counts_ = torch.as_tensor(train.item_counts().astype(np.float32))
        self._index = None

    def user_vectors(self, users):
        return torch.ones(len(np.atleast_1d(users)), 1)

    def item_vectors(self):
        self._check_fitted()
        return self.counts_[:, None]

    def fold_in(self, items) -> torch.Tensor:
        return torch.ones(1, 1)

    def _learned_tensors(self):
        return {"counts": self.counts_}

    def _load_learned(self, tensors):
        self.counts_ = tensors["counts"]
