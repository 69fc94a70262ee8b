"""Two-stage recommender: retrieval shortlists, ranking re-orders the shortlist.

For each user: the retrieval model (a :class:`~recfunnel.models.TwoTower`) returns its top
``candidates`` items with the user's training items excluded; the ranker (a
:class:`~recfunnel.models.ranking.RankingModel`, trained for the recommending objective -
``listwise`` or ``watch`` - not for rating regression) scores those candidates. With
``hard_negatives`` (the default) the ranker is trained on the retrieval stage's own shortlists:
each training row's list is its positive and ``negatives`` items drawn from the user's
shortlist, so it learns to order exactly what retrieval hands it. The final score of a
candidate is

    (1 - blend) * z(ranker score) + blend * z(retrieval score)

where ``z`` standardises a user's scores over their shortlist (mean 0, std 1), so the ranker
may use the retrieval score as one of its signals. ``recommend`` shortlists
``max(candidates, k)`` items under the same exclusions and allow/deny lists; ``score`` (used by
the metrics) ranks the re-ranked shortlist of unseen items above every other item, which follow
in retrieval order.

Saved as one model: the sub-models' tensors are stored under ``retrieval.`` and ``ranker.``.
"""

from __future__ import annotations

import numpy as np
import torch

from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError
from recfunnel.models.base import Recommender
from recfunnel.models.ranking import RankingModel
from recfunnel.models.two_tower import TwoTower

#: gap between the shortlist's scores (z-scores) and the rest in :meth:`TwoStage.score`
OFFSET = 1e4


def _standardise(scores: torch.Tensor) -> torch.Tensor:
    """Per row: (x - mean) / std over the finite entries, [B, M] -> [B, M]."""
    finite = torch.isfinite(scores)
    x = torch.where(finite, scores, torch.zeros_like(scores))
    n = finite.sum(1, keepdim=True).clamp(min=1)
    mean = x.sum(1, keepdim=True) / n
    var = (torch.where(finite, x - mean, torch.zeros_like(x)) ** 2).sum(1, keepdim=True) / n
    return torch.where(finite, (x - mean) / var.sqrt().clamp(min=1e-6), scores)


class TwoStage(Recommender):
    """Retrieval top-``candidates`` -> ranker re-scores -> top-k (see the module docstring).

    Args:
        retrieval: keyword arguments of the :class:`TwoTower` retrieval model.
        ranker: keyword arguments of the :class:`RankingModel` ranker.
        candidates: shortlist size N per user (default 100).
        blend: weight of the retrieval score in the final score (0 = ranker only).
        hard_negatives: draw the ranker's training negatives from the retrieval shortlists
            (else as its ``objective`` does alone: sampled from the catalogue).
        seed: seeds both sub-models unless their own arguments set ``seed``.
    """

    kind = "two-stage"
    needs_dataset = True

    def __init__(
        self,
        *,
        retrieval: dict | None = None,
        ranker: dict | None = None,
        candidates: int = 100,
        blend: float = 0.5,
        hard_negatives: bool = True,
        seed: int = 0,
    ) -> None:
        self._set_params(
            {
                "retrieval": dict(retrieval or {}),
                "ranker": dict(ranker or {}),
                "candidates": candidates,
                "blend": blend,
                "hard_negatives": hard_negatives,
                "seed": seed,
            }
        )

    def _check(self) -> None:
        if self.candidates < 1:
            raise RecfunnelError(f"candidates must be at least 1, not {self.candidates}")
        if not 0.0 <= self.blend <= 1.0:
            raise RecfunnelError(f"blend must lie in [0, 1], not {self.blend}")
        if self.ranker.get("objective", "rating") == "rating":
            raise RecfunnelError(
                "the two-stage ranker must be trained to recommend; set its objective to "
                "'listwise' or 'watch', not 'rating'"
            )

    def fit(self, train: Interactions, *, validation=None, progress=False, dataset=None):
        self._check()
        self._remember(train)
        retrieval = {"seed": self.seed, **self.retrieval}
        ranker = {"seed": self.seed, **self.ranker}
        self.retrieval_ = TwoTower(**retrieval).fit(train, progress=progress)
        shortlists = self.shortlists(np.arange(train.num_users)) if self.hard_negatives else None
        self.ranker_ = RankingModel(**ranker).fit(
            train, progress=progress, dataset=dataset, shortlists=shortlists
        )
        return self

    def shortlists(self, users, batch: int = 4096) -> torch.Tensor:
        """[B, candidates] the retrieval stage's top items per user, training items excluded
        (``-1`` pads a user with fewer unseen items)."""
        n = min(self.candidates, self.num_items)
        parts = []
        for start in range(0, len(users), batch):
            chunk = users[start : start + batch]
            ids, _ = self.retrieval_._top_k(chunk, n, exclude=self.seen_[chunk], allow=None,
                                            deny=None)  # fmt: skip
            parts.append(ids)
        return torch.cat(parts) if parts else torch.zeros(0, n, dtype=torch.long)

    @torch.no_grad()
    def _rerank(self, users, ids: torch.Tensor, retrieved: torch.Tensor) -> torch.Tensor:
        """Final scores [B, M] of shortlists ``ids`` [B, M] (``-1`` = padding)."""
        mask = ids >= 0
        safe = torch.where(mask, ids, torch.zeros_like(ids))
        ranked = self.ranker_.score_candidates(users, safe.numpy()).float()
        ranked = ranked.masked_fill(~mask, float("-inf"))
        retrieved = retrieved.float().masked_fill(~mask, float("-inf"))
        final = (1 - self.blend) * _standardise(ranked) + self.blend * _standardise(retrieved)
        return final.masked_fill(~mask, float("-inf"))

    def _top_k(self, users, k, *, exclude, allow, deny):
        """Shortlist max(candidates, k) items with retrieval (same exclusions), re-rank, cut."""
        n = min(max(self.candidates, k), self.num_items)
        ids, retrieved = self.retrieval_._top_k(users, n, exclude=exclude, allow=allow, deny=deny)
        final = self._rerank(users, ids, retrieved)
        top = torch.topk(final, k, dim=1)
        ids = torch.gather(ids, 1, top.indices).masked_fill(torch.isneginf(top.values), -1)
        return ids, top.values

    @torch.no_grad()
    def score(self, users) -> torch.Tensor:
        """Scores [B, N]: the re-ranked shortlist of unseen items first; every other item after
        it in retrieval order (its retrieval score shifted below ``-OFFSET``). Finite everywhere,
        so the metrics keep relevant items that retrieval failed to shortlist."""
        self._check_fitted()
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        n = min(self.candidates, self.num_items)
        ids, retrieved = self.retrieval_._top_k(
            users, n, exclude=self.seen_[users], allow=None, deny=None
        )
        final = self._rerank(users, ids, retrieved)
        out = self.retrieval_.score(users).float()
        out = out - out.max(1, keepdim=True).values - OFFSET
        mask = ids >= 0
        rows = torch.arange(len(users))[:, None].expand_as(ids)
        out[rows[mask], ids[mask]] = final[mask]
        return out

    def _learned_tensors(self):
        out = {f"retrieval.{k}": v for k, v in self.retrieval_.state_tensors().items()}
        out.update({f"ranker.{k}": v for k, v in self.ranker_.state_tensors().items()})
        return out

    def _load_learned(self, tensors):
        def part(prefix):
            return {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}

        retrieval = {"seed": self.seed, **self.retrieval}
        ranker = {"seed": self.seed, **self.ranker}
        self.retrieval_ = TwoTower.from_state(retrieval, part("retrieval."))
        self.ranker_ = RankingModel.from_state(ranker, part("ranker."))
