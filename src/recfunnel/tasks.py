"""Tasks turn embeddings into a loss; models state which task they use.

:class:`RetrievalTask` is the retrieval objective of a two-tower model: the in-batch softmax as
TFRS's ``tfrs.tasks.Retrieval`` defines it, or a softmax over the full catalogue for catalogues
that fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recfunnel.errors import RecfunnelError
from recfunnel.losses import (
    distinct_in_batch_softmax_loss,
    fused_full_softmax_loss,
    fused_in_batch_softmax_loss,
)


@dataclass
class RetrievalTask:
    """Retrieval loss configuration.

    Attributes:
        softmax: ``"in-batch"`` (negatives are the other positives of the batch) or ``"full"``
            (negatives are every catalogue item).
        temperature: logits are divided by it.
        remove_accidental_hits: in-batch only; drop a row's own item where it recurs in the batch.
        logq_correction: in-batch only; subtract each item's log sampling probability.
        reduction: ``"sum"`` (TFRS) or ``"mean"``.
        distinct_candidates: in-batch only; score each row against the batch's distinct items,
            weighted by how often each occurs (:func:`~recfunnel.losses.
            distinct_in_batch_softmax_loss`): the same loss and gradients at a fraction of the
            cost, valid because a candidate's vector here is a function of its item id. Turn it
            off for a candidate tower that is not (dropout, per-row context).
    """

    softmax: str = "in-batch"
    temperature: float = 1.0
    remove_accidental_hits: bool = False
    logq_correction: bool = False
    reduction: str = "sum"
    distinct_candidates: bool = True

    def __post_init__(self) -> None:
        if self.softmax not in ("in-batch", "full"):
            raise RecfunnelError(f"softmax must be 'in-batch' or 'full', not {self.softmax!r}")
        if self.temperature <= 0:
            raise RecfunnelError(f"temperature must be positive, not {self.temperature}")

    def loss(
        self,
        queries: torch.Tensor,
        positives: torch.Tensor,
        item_ids: torch.Tensor,
        *,
        all_items: torch.Tensor | None = None,
        item_log_probs: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss of a batch.

        Args:
            queries: [B, D]; positives: [B, D] the positive items' embeddings; item_ids: [B].
            all_items: [N, D], needed for the full softmax.
            item_log_probs: [N] log sampling probabilities, needed for the logQ correction.
        """
        if self.softmax == "full":
            if all_items is None:
                raise RecfunnelError("the full softmax needs every item's embedding")
            return fused_full_softmax_loss(
                queries, all_items, item_ids, temperature=self.temperature,
                weights=weights, reduction=self.reduction,
            )  # fmt: skip
        log_probs = None
        if self.logq_correction:
            if item_log_probs is None:
                raise RecfunnelError("the logQ correction needs item sampling probabilities")
            log_probs = item_log_probs[item_ids]
        if self.distinct_candidates:
            return distinct_in_batch_softmax_loss(
                queries, positives, item_ids,
                remove_accidental_hits=self.remove_accidental_hits,
                candidate_log_probs=log_probs, temperature=self.temperature, weights=weights,
                reduction=self.reduction,
            )  # fmt: skip
        return fused_in_batch_softmax_loss(
            queries,
            positives,
            candidate_ids=item_ids if self.remove_accidental_hits else None,
            candidate_log_probs=log_probs,
            temperature=self.temperature,
            weights=weights,
            reduction=self.reduction,
        )
