"""A weighted blend of several fitted models' standardised scores (``--model auto``'s ensemble).

For user ``u`` the score of item ``i`` is ``sum_m w_m * z_m(u, i)`` where ``z_m`` standardises
member ``m``'s scores over the catalogue for that user (mean 0, std 1), so members on different
scales (EASE's reconstructions, WALS's dot products, BPR's logits) mix by rank-like strength,
not by raw magnitude. ``--model auto`` builds one from the two best portfolio models when the
blend beats both on the validation split; it can also be trained directly, e.g.
``--set 'members=[{"model": "ease"}, {"model": "wals"}]' --set 'weights=[0.7, 0.3]'``.

Saved as one model: member ``m``'s tensors are stored under ``m<index>.``.
"""

from __future__ import annotations

import numpy as np
import torch

from recfunnel.config import BlendConfig
from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError
from recfunnel.models.base import Recommender


def standardise(scores: torch.Tensor) -> torch.Tensor:
    """Per row (mean 0, std 1) over the items, [B, N] -> [B, N]."""
    scores = scores.float()
    mean = scores.mean(1, keepdim=True)
    std = scores.std(1, keepdim=True).clamp_min(1e-6)
    return (scores - mean) / std


class Blend(Recommender):
    """A weighted sum of member models' standardised scores (see the module docstring;
    :class:`~recfunnel.config.BlendConfig`: ``members``, each ``{"model": KIND, "params":
    {...}}``, and ``weights``, one per member, equal by default)."""

    kind = "blend"
    config_class = BlendConfig
    config: BlendConfig

    def _member_specs(self) -> list[tuple[str, dict]]:
        if not self.config.members:
            raise RecfunnelError(
                'blend needs members, e.g. members=[{"model": "ease"}, {"model": "wals"}]',
                cli="--model blend needs members; e.g. --set "
                '\'members=[{"model": "ease"}, {"model": "wals"}]\'',
            )
        return [(m["model"], dict(m.get("params") or {})) for m in self.config.members]

    def _weights(self) -> list[float]:
        if self.config.weights is None:
            return [1.0 / len(self.config.members)] * len(self.config.members)
        return [float(w) for w in self.config.weights]

    def _check_data(self, train, **context):
        self._member_specs()  # no members: refused before any fit
        return train

    def _train(self, train: Interactions, validation, *, progress=False, dataset=None,
               **context):  # fmt: skip
        from recfunnel.models import model_class

        self.models_ = []
        for kind, params in self._member_specs():
            model = model_class(kind)(params)
            extra = {"dataset": dataset} if model.needs_dataset else {}
            self.models_.append(model.fit(train, validation=validation, **extra))

    @classmethod
    def from_models(cls, models: list, weights: list[float], params: list[dict]) -> Blend:
        """A blend of already fitted models (all fitted on the same interactions)."""
        members = [{"model": m.kind, "params": p} for m, p in zip(models, params, strict=True)]
        blend = cls(members=members, weights=list(weights))
        blend.seen_ = models[0].seen_
        blend.models_ = list(models)
        return blend

    def score(self, users) -> torch.Tensor:
        self._check_fitted()
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        total = None
        for weight, model in zip(self._weights(), self.models_, strict=True):
            with torch.no_grad():
                part = weight * standardise(model.score(users))
            total = part if total is None else total + part
        return total

    def _learned_tensors(self):
        out = {}
        for index, model in enumerate(self.models_):
            out.update({f"m{index}.{k}": v for k, v in model.state_tensors().items()})
        return out

    def _load_learned(self, tensors):
        from recfunnel.models import model_class

        self.models_ = []
        for index, (kind, params) in enumerate(self._member_specs()):
            prefix = f"m{index}."
            part = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            self.models_.append(model_class(kind).from_state(params, part))
