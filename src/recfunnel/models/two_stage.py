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

from recfunnel.config import TwoStageConfig
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
    """Retrieval top-``candidates`` -> ranker re-scores -> top-k (see the module docstring;
    hyper-parameters in :class:`~recfunnel.config.TwoStageConfig`, whose ``retrieval`` and
    ``ranker`` are the two stages' own configs). Each stage is fitted, validated and stopped
    early as it would be alone."""

    kind = "two-stage"
    needs_dataset = True
    config_class = TwoStageConfig
    config: TwoStageConfig

    def _train(self, train, validation, *, progress=False, dataset=None, **context) -> None:
        c = self.config
        self.retrieval_ = TwoTower(c.retrieval).fit(train, validation=validation,
                                                    progress=progress)  # fmt: skip
        shortlists = self.shortlists(np.arange(train.num_users)) if c.hard_negatives else None
        self.ranker_ = RankingModel(c.ranker).fit(
            train, validation=validation, progress=progress, dataset=dataset,
            shortlists=shortlists,
        )  # fmt: skip
        self.training_log_ = {
            "retrieval": self.retrieval_.training_log_, "ranker": self.ranker_.training_log_,
        }  # fmt: skip

    def shortlists(self, users, batch: int = 4096) -> torch.Tensor:
        """[B, candidates] the retrieval stage's top items per user, training items excluded
        (``-1`` pads a user with fewer unseen items)."""
        n = min(self.config.candidates, self.num_items)
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
        final = (1 - self.config.blend) * _standardise(ranked) + self.config.blend * _standardise(
            retrieved
        )
        return final.masked_fill(~mask, float("-inf"))

    def _top_k(self, users, k, *, exclude, allow, deny):
        """Shortlist max(candidates, k) items with retrieval (same exclusions), re-rank, cut."""
        n = min(max(self.config.candidates, k), self.num_items)
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
        n = min(self.config.candidates, self.num_items)
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

        c = self.config
        self.retrieval_ = TwoTower.from_state(c.retrieval.to_dict(), part("retrieval."))
        self.ranker_ = RankingModel.from_state(c.ranker.to_dict(), part("ranker."))
