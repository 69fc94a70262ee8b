"""Tasks turn embeddings into a loss; models state which task they use.

:class:`RetrievalTask` is the retrieval objective of a two-tower model, with four choices of
negatives: the in-batch softmax as TFRS's ``tfrs.tasks.Retrieval`` defines it; sampled softmax
over ``negatives`` items drawn uniformly or by popularity; mixed negatives, the batch's items plus
sampled ones (Yang et al. 2020, "Mixed Negative Sampling for Learning Two-tower Neural Networks
in Recommendations"); or a softmax over the full catalogue for catalogues where that is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from recfunnel.errors import RecfunnelError
from recfunnel.losses import (
    distinct_in_batch_softmax_loss,
    fused_full_softmax_loss,
    fused_in_batch_softmax_loss,
    sampled_softmax_loss,
)

SOFTMAXES = ("in-batch", "sampled", "mixed", "full")
SAMPLERS = ("uniform", "popularity")


@dataclass
class RetrievalTask:
    """Retrieval loss configuration.

    Attributes:
        softmax: where the negatives come from: ``"in-batch"`` (the other positives of the
            batch), ``"sampled"`` (``negatives`` items drawn by ``sampler``, shared by the
            batch), ``"mixed"`` (both) or ``"full"`` (every catalogue item).
        negatives: sampled and mixed: items drawn per batch (with replacement).
        sampler: ``"uniform"`` over the catalogue or ``"popularity"`` (training frequency).
        temperature: logits are divided by it.
        remove_accidental_hits: in-batch: drop a row's own item where it recurs in the batch.
            Sampled and mixed negatives always drop it (each row scores its positive once).
        logq_correction: subtract each negative's log sampling probability. In-batch: as TFRS
            does, from every logit (the positive's too). Sampled and mixed: the log of the
            item's expected number of draws, ``B p_j + S q_j`` (batch rows ``B`` drawn by
            popularity ``p``, ``S`` samples by ``q``), from each negative, so the loss
            estimates the full softmax (:func:`~recfunnel.losses.sampled_softmax_loss`).
        reduction: ``"sum"`` (TFRS) or ``"mean"``.
        distinct_candidates: in-batch only; score each row against the batch's distinct items,
            weighted by how often each occurs (:func:`~recfunnel.losses.
            distinct_in_batch_softmax_loss`): the same loss and gradients at a fraction of the
            cost, valid because a candidate's vector here is a function of its item id. Turn it
            off for a candidate tower that is not (dropout, per-row context).
    """

    softmax: str = "in-batch"
    negatives: int = 0
    sampler: str = "uniform"
    temperature: float = 1.0
    remove_accidental_hits: bool = False
    logq_correction: bool = False
    reduction: str = "sum"
    distinct_candidates: bool = True

    def __post_init__(self) -> None:
        if self.softmax not in SOFTMAXES:
            raise RecfunnelError(
                f"softmax must be one of {', '.join(SOFTMAXES)}, not {self.softmax!r}"
            )
        if self.sampler not in SAMPLERS:
            raise RecfunnelError(
                f"sampler must be one of {', '.join(SAMPLERS)}, not {self.sampler!r}"
            )
        if self.negatives < 0 or (self.softmax == "sampled" and self.negatives < 1):
            raise RecfunnelError(
                f"negatives must be at least 1 for the sampled softmax (0 or more for mixed), "
                f"not {self.negatives}"
            )
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
        sampled: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        batch_candidates: tuple[torch.Tensor, torch.Tensor, int] | None = None,
    ) -> torch.Tensor:
        """Loss of a batch.

        Args:
            queries: [B, D]; positives: [B, D] the positive items' embeddings; item_ids: [B].
            all_items: [N, D], needed for the full softmax.
            item_log_probs: [N] log in-batch sampling probabilities (training frequency),
                needed for the logQ correction.
            sampled: sampled and mixed: ``(ids [S], vectors [S, D], log_q [N])``, the drawn
                items, their vectors and the sampler's log probabilities.
            batch_candidates: in-batch and mixed: ``(ids [G], vectors [G, D], offset)``, the
                in-batch negatives when they are not this batch's own positives: every
                process's in a distributed step, this process's rows starting at ``offset``;
                default ``(item_ids, positives, 0)``.
        """
        if self.softmax in ("sampled", "mixed"):
            return self._sampled_loss(queries, positives, item_ids, item_log_probs, weights,
                                      sampled, batch_candidates)  # fmt: skip
        if self.softmax == "full":
            if all_items is None:
                raise RecfunnelError("the full softmax needs every item's embedding")
            return fused_full_softmax_loss(
                queries, all_items, item_ids, temperature=self.temperature,
                weights=weights, reduction=self.reduction,
            )  # fmt: skip
        offset = 0
        if batch_candidates is not None:  # every process's positives: a distributed step
            item_ids, positives, offset = batch_candidates
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
                reduction=self.reduction, offset=offset,
            )  # fmt: skip
        return fused_in_batch_softmax_loss(
            queries,
            positives,
            candidate_ids=item_ids if self.remove_accidental_hits else None,
            candidate_log_probs=log_probs,
            temperature=self.temperature,
            weights=weights,
            reduction=self.reduction,
            offset=offset,
        )

    def _sampled_loss(self, queries, positives, item_ids, item_log_probs, weights, sampled,
                      batch_candidates):  # fmt: skip
        if sampled is None:
            raise RecfunnelError(f"the {self.softmax} softmax needs sampled negatives")
        sampled_ids, sampled_vectors, sampler_log_probs = sampled
        if self.softmax == "mixed":
            batch_ids, batch_vectors, _ = batch_candidates or (item_ids, positives, 0)
            ids = torch.cat([batch_ids, sampled_ids])
            vectors = torch.cat([batch_vectors, sampled_vectors])
        else:
            batch_ids, ids, vectors = sampled_ids[:0], sampled_ids, sampled_vectors
        distinct, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
        rows = torch.arange(len(ids), device=ids.device)
        first = torch.full_like(distinct, len(ids)).scatter_reduce_(0, inverse, rows, "amin")
        offsets = counts.to(queries.dtype).log()
        if self.logq_correction:
            expected = len(sampled_ids) * sampler_log_probs[distinct].exp()
            if len(batch_ids):
                if item_log_probs is None:
                    raise RecfunnelError("the logQ correction needs item sampling probabilities")
                expected = expected + len(batch_ids) * item_log_probs[distinct].exp()
            offsets = offsets - expected.log()
        return sampled_softmax_loss(
            queries, positives, item_ids, vectors[first], distinct, negative_offsets=offsets,
            temperature=self.temperature, weights=weights, reduction=self.reduction,
        )  # fmt: skip
