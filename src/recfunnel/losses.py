"""Loss functions: small, pure, and documented with their shapes.

Letters: B batch, D embedding dimension, N catalogue size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NEG_INF = float("-inf")


def _reduce(per_row: torch.Tensor, reduction: str, weights: torch.Tensor | None = None):
    if weights is not None:
        per_row = per_row * weights
    if reduction == "sum":
        return per_row.sum()
    if reduction == "mean":
        return per_row.sum() / (weights.sum() if weights is not None else per_row.numel())
    if reduction == "none":
        return per_row
    raise ValueError(f"reduction must be 'sum', 'mean' or 'none', not {reduction!r}")


def in_batch_softmax_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    *,
    candidate_ids: torch.Tensor | None = None,
    candidate_log_probs: torch.Tensor | None = None,
    temperature: float = 1.0,
    weights: torch.Tensor | None = None,
    reduction: str = "sum",
) -> torch.Tensor:
    """Softmax cross-entropy where row ``i``'s positive is candidate ``i`` and the other
    candidates in the batch are its negatives, as TFRS's ``Retrieval`` task defines it.

    Args:
        queries: [B, D] query embeddings.
        candidates: [B, D] embeddings of each query's positive candidate.
        candidate_ids: [B] item ids; where given, *accidental hits* (the row's own item
            appearing elsewhere in the batch) are removed from the negatives.
        candidate_log_probs: [B] log sampling probability of each candidate; where given, it is
            subtracted from the logits (logQ correction, Yi et al. 2019, RecSys).
        temperature: logits are divided by it.
        weights: [B] per-row sample weights.
        reduction: ``"sum"`` (TFRS's default), ``"mean"`` or ``"none"``.

    Scores are ``queries @ candidates.T`` [B, B] and the labels are the identity matrix.
    """
    logits = queries @ candidates.T
    if temperature != 1.0:
        logits = logits / temperature
    if candidate_log_probs is not None:
        logits = logits - candidate_log_probs[None, :]
    if candidate_ids is not None:
        same = candidate_ids[:, None] == candidate_ids[None, :]
        same.fill_diagonal_(False)
        logits = logits.masked_fill(same, NEG_INF)
    target = torch.arange(logits.shape[0], device=logits.device)
    return _reduce(F.cross_entropy(logits, target, reduction="none"), reduction, weights)


class _FusedSoftmaxCrossEntropy(torch.autograd.Function):
    """Softmax cross-entropy of queries against candidates, forward and backward in one pass.

    Row ``i``'s logits are ``q_i . c_j / T + column_offsets_j`` over all candidates ``j``, plus
    ``target_offsets_i`` on its label, candidate ``targets[i]``; ``loss_offsets_i`` is added to
    its loss (a constant: it changes the value, not the gradient). The [B, M] logits are never
    held whole: each chunk of rows is scored, normalised, turned into its gradient
    ``softmax - onehot`` and multiplied back into ``dq`` and ``dc`` while still in cache. Two to
    three times faster on CPU than autograd through :func:`torch.nn.functional.cross_entropy`,
    and equal to it (tested).
    """

    @staticmethod
    def forward(ctx, queries, candidates, targets, column_offsets, target_offsets, loss_offsets,
                hit_ids, weights, temperature, chunk, mean):  # fmt: skip
        n = queries.shape[0]
        q = queries.detach()
        c = candidates.detach()
        dq = torch.empty_like(q)
        dc = torch.zeros_like(c)
        total = q.new_zeros((), dtype=torch.float64)
        scale = 1.0 / temperature
        minus_one = q.new_full((min(chunk, n), 1), -1.0)
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            target = targets[start:end, None]  # [b, 1]: gather/scatter are cheaper than indexing
            logits = torch.mm(q[start:end], c.T)
            if scale != 1.0:
                logits.mul_(scale)
            if column_offsets is not None:
                logits.add_(column_offsets[None, :])
            if target_offsets is not None:
                logits.scatter_add_(1, target, target_offsets[start:end, None])
            if hit_ids is not None:  # the row's own item elsewhere among the candidates
                same = hit_ids[target] == hit_ids[None, :]
                same.scatter_(1, target, False)
                logits.masked_fill_(same, NEG_INF)
            top = logits.amax(1, keepdim=True)
            positive = logits.gather(1, target)
            logits.sub_(top).exp_()
            norm = logits.sum(1, keepdim=True)
            row_loss = (top + norm.log() - positive).squeeze(1)
            if loss_offsets is not None:
                row_loss += loss_offsets[start:end]
            logits.div_(norm)
            logits.scatter_add_(1, target, minus_one[: end - start])
            if weights is not None:
                row_loss = row_loss * weights[start:end]
                logits.mul_(weights[start:end, None])
            total += row_loss.sum(dtype=torch.float64)
            torch.mm(logits, c, out=dq[start:end])
            dc.addmm_(logits.T, q[start:end])
        denom = (weights.sum() if weights is not None else n) if mean else 1.0
        factor = scale / denom
        ctx.save_for_backward(dq.mul_(factor), dc.mul_(factor))
        return (total / denom).to(queries.dtype)

    @staticmethod
    def backward(ctx, grad):
        dq, dc = ctx.saved_tensors
        return (dq * grad, dc * grad) + (None,) * 9


def _fused(queries, candidates, targets, *, column_offsets=None, target_offsets=None,
           loss_offsets=None, hit_ids=None, weights=None, temperature=1.0, reduction="sum",
           chunk=128):  # fmt: skip
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")
    return _FusedSoftmaxCrossEntropy.apply(
        queries, candidates, targets, column_offsets, target_offsets, loss_offsets, hit_ids,
        weights, float(temperature), int(chunk), reduction == "mean",
    )  # fmt: skip


def fused_in_batch_softmax_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    *,
    candidate_ids: torch.Tensor | None = None,
    candidate_log_probs: torch.Tensor | None = None,
    temperature: float = 1.0,
    weights: torch.Tensor | None = None,
    reduction: str = "sum",
    chunk: int = 128,
    offset: int = 0,
) -> torch.Tensor:
    """:func:`in_batch_softmax_loss`, fused (same arguments and result; ``sum``/``mean`` only).

    ``offset``: row ``i``'s positive is candidate ``offset + i`` (the candidates of a
    distributed step are every process's, see :mod:`recfunnel.distributed`)."""
    targets = torch.arange(offset, offset + queries.shape[0], device=queries.device)
    offsets = None if candidate_log_probs is None else -candidate_log_probs
    return _fused(queries, candidates, targets, column_offsets=offsets, hit_ids=candidate_ids,
                  weights=weights, temperature=temperature, reduction=reduction,
                  chunk=chunk)  # fmt: skip


def distinct_in_batch_softmax_loss(
    queries: torch.Tensor,
    candidates: torch.Tensor,
    item_ids: torch.Tensor,
    *,
    remove_accidental_hits: bool = False,
    candidate_log_probs: torch.Tensor | None = None,
    temperature: float = 1.0,
    weights: torch.Tensor | None = None,
    reduction: str = "sum",
    chunk: int = 256,
    offset: int = 0,
) -> torch.Tensor:
    """:func:`in_batch_softmax_loss` scored against the batch's distinct items only.

    Valid when a candidate's vector (and log sampling probability) depends on its item id
    alone, as with an embedding lookup: then the B candidates of a batch hold M <= B distinct
    vectors, and an item that occurs ``m`` times adds ``m * exp(logit)`` to every row's
    normaliser. Scoring the M distinct items with ``log m`` added to their logits gives the
    loss of the [B, B] form, and the same gradient once it reaches the item embeddings, at M/B
    of the cost (MovieLens 100k at batch 8192: about 1500 distinct items, 0.18).

    Args:
        queries: [B, D]; candidates: [B, D]; item_ids: [B] the candidates' item ids.
        remove_accidental_hits: count a row's own item once (its own occurrence), as
            ``in_batch_softmax_loss(..., candidate_ids=item_ids)`` does.
        candidate_log_probs, temperature, weights, reduction: as in
            :func:`in_batch_softmax_loss`.

    The gradient of each distinct item flows to its first occurrence in ``candidates``.
    ``offset``: the queries are rows ``offset ..`` of the candidates (a distributed step).
    """
    distinct, inverse, counts = torch.unique(item_ids, return_inverse=True, return_counts=True)
    rows = torch.arange(len(item_ids), device=item_ids.device)
    first = torch.full_like(distinct, len(item_ids)).scatter_reduce_(0, inverse, rows, "amin")
    log_counts = counts.to(queries.dtype).log()
    offsets = log_counts
    if candidate_log_probs is not None:
        offsets = offsets - candidate_log_probs[first]
    targets = inverse[offset : offset + queries.shape[0]]
    own = log_counts[targets]  # each row's positive occurs this many times (log)
    return _fused(
        queries, candidates[first], targets, column_offsets=offsets,
        target_offsets=-own if remove_accidental_hits else None,
        loss_offsets=None if remove_accidental_hits else own, weights=weights,
        temperature=temperature, reduction=reduction, chunk=chunk,
    )  # fmt: skip


def fused_full_softmax_loss(
    queries: torch.Tensor,
    item_vectors: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    weights: torch.Tensor | None = None,
    reduction: str = "mean",
    chunk: int = 256,
) -> torch.Tensor:
    """:func:`full_softmax_loss` (without ``item_bias``), fused; ``sum``/``mean`` only."""
    return _fused(queries, item_vectors, targets, weights=weights, temperature=temperature,
                  reduction=reduction, chunk=chunk)  # fmt: skip


def full_softmax_loss(
    queries: torch.Tensor,
    item_vectors: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    item_bias: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Softmax cross-entropy over the whole catalogue.

    Args:
        queries: [B, D]; item_vectors: [N, D]; targets: [B] item ids.
        item_bias: optional [N] added to every row's logits.
    """
    logits = queries @ item_vectors.T
    if item_bias is not None:
        logits = logits + item_bias[None, :]
    if temperature != 1.0:
        logits = logits / temperature
    return _reduce(F.cross_entropy(logits, targets, reduction="none"), reduction, weights)


class _FusedSampledSoftmax(torch.autograd.Function):
    """Softmax cross-entropy of each query's positive against a shared set of negatives,
    forward and backward in one pass (see :func:`sampled_softmax_loss`)."""

    @staticmethod
    def forward(ctx, queries, positives, negatives, negative_offsets, positive_offsets,
                hit_columns, weights, temperature, chunk, mean):  # fmt: skip
        n = queries.shape[0]
        q, p, c = queries.detach(), positives.detach(), negatives.detach()
        dq = torch.empty_like(q)
        dp = torch.empty_like(p)
        dc = torch.zeros_like(c)
        total = q.new_zeros((), dtype=torch.float64)
        scale = 1.0 / temperature
        for start in range(0, n, chunk):
            end = min(start + chunk, n)
            qc, pc = q[start:end], p[start:end]
            logits = torch.mm(qc, c.T)
            if scale != 1.0:
                logits.mul_(scale)
            if negative_offsets is not None:
                logits.add_(negative_offsets[None, :])
            if hit_columns is not None:  # the row's own item among the negatives
                hits = hit_columns[start:end]
                rows = (hits >= 0).nonzero().squeeze(1)
                logits[rows, hits[rows]] = NEG_INF
            positive = (qc * pc).sum(1) * scale
            if positive_offsets is not None:
                positive = positive + positive_offsets[start:end]
            top = torch.maximum(logits.amax(1), positive)
            logits.sub_(top[:, None]).exp_()
            own = (positive - top).exp()
            norm = logits.sum(1) + own
            row_loss = top + norm.log() - positive
            logits.div_(norm[:, None])
            g_pos = own / norm - 1.0  # d loss / d positive logit
            if weights is not None:
                w = weights[start:end]
                row_loss = row_loss * w
                logits.mul_(w[:, None])
                g_pos = g_pos * w
            total += row_loss.sum(dtype=torch.float64)
            torch.mm(logits, c, out=dq[start:end])
            dq[start:end].addcmul_(g_pos[:, None], pc)
            torch.mul(qc, g_pos[:, None], out=dp[start:end])
            dc.addmm_(logits.T, qc)
        denom = (weights.sum() if weights is not None else n) if mean else 1.0
        factor = scale / denom
        ctx.save_for_backward(dq.mul_(factor), dp.mul_(factor), dc.mul_(factor))
        return (total / denom).to(queries.dtype)

    @staticmethod
    def backward(ctx, grad):
        dq, dp, dc = ctx.saved_tensors
        return (dq * grad, dp * grad, dc * grad) + (None,) * 7


def sampled_softmax_loss(
    queries: torch.Tensor,
    positives: torch.Tensor,
    positive_ids: torch.Tensor,
    negatives: torch.Tensor,
    negative_ids: torch.Tensor,
    *,
    negative_offsets: torch.Tensor | None = None,
    positive_offsets: torch.Tensor | None = None,
    temperature: float = 1.0,
    weights: torch.Tensor | None = None,
    reduction: str = "mean",
    chunk: int = 256,
) -> torch.Tensor:
    """Softmax cross-entropy of each row's positive against negatives shared by the batch.

    Row ``i``'s loss is ``-s_i + log(exp(s_i) + sum_j exp(q_i . n_j / T + o_j))`` with
    ``s_i = q_i . p_i / T (+ positive_offsets_i)``, where column ``j`` is left out of row
    ``i`` when ``negative_ids[j] == positive_ids[i]`` (an *accidental hit*: the row's own item
    drawn as a negative). With ``o_j = log(m_j) - log(E_j)``, ``m_j`` the times item ``j`` was
    drawn and ``E_j`` its expected number of draws, the sum estimates the full catalogue's
    normaliser (importance sampling, Bengio & Senecal 2008; the logQ correction of Yi et al.
    2019): this is how the sampled and mixed negatives of
    :class:`~recfunnel.tasks.RetrievalTask` are scored.

    Args:
        queries: [B, D]; positives: [B, D]; positive_ids: [B] item ids.
        negatives: [M, D] vectors of *distinct* items; negative_ids: [M] their ids, sorted
            ascending (as :func:`torch.unique` returns them).
        negative_offsets: [M] added to every row's logit of each negative.
        positive_offsets: [B] added to each row's positive logit.
        temperature: dot products are divided by it (offsets are not).
        weights: [B] per-row sample weights; reduction: ``"sum"`` or ``"mean"``.

    The [B, M] logits are scored, normalised and turned into gradients in row chunks, never
    held whole (as :class:`_FusedSoftmaxCrossEntropy`).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', not {reduction!r}")
    column = torch.searchsorted(negative_ids, positive_ids.contiguous()).clamp_(
        max=len(negative_ids) - 1
    )
    hit = negative_ids[column] == positive_ids
    hit_columns = torch.where(hit, column, torch.full_like(column, -1))
    return _FusedSampledSoftmax.apply(
        queries, positives, negatives, negative_offsets, positive_offsets, hit_columns, weights,
        float(temperature), int(chunk), reduction == "mean",
    )  # fmt: skip


def sampled_softmax_reference(
    queries, positives, positive_ids, negatives, negative_ids, *, negative_offsets=None,
    positive_offsets=None, temperature=1.0, weights=None, reduction="mean",
):  # fmt: skip
    """:func:`sampled_softmax_loss` by autograd over the explicit [B, 1 + M] logits (tests)."""
    positive = (queries * positives).sum(1) / temperature
    if positive_offsets is not None:
        positive = positive + positive_offsets
    logits = queries @ negatives.T / temperature
    if negative_offsets is not None:
        logits = logits + negative_offsets[None, :]
    logits = logits.masked_fill(positive_ids[:, None] == negative_ids[None, :], NEG_INF)
    logits = torch.cat([positive[:, None], logits], 1)
    target = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
    return _reduce(F.cross_entropy(logits, target, reduction="none"), reduction, weights)


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor, reduction: str = "mean"):
    """Bayesian personalised ranking (Rendle et al. 2009): ``-log sigmoid(pos - neg)``, [B]."""
    return _reduce(-F.logsigmoid(positive - negative), reduction)


def mse_loss(predicted: torch.Tensor, target: torch.Tensor, weights=None, reduction: str = "mean"):
    """Squared error per row, reduced: [B] -> scalar."""
    return _reduce((predicted - target) ** 2, reduction, weights)


def gbce_loss(
    positive: torch.Tensor,
    negative: torch.Tensor,
    beta: float,
    *,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """gBCE, the generalised binary cross-entropy of gSASRec (Petrov & Macdonald, RecSys 2023).

    Row ``i``'s loss is ``-(beta * log sigmoid(p_i) + sum_j log(1 - sigmoid(n_ij)))``: the
    positive's probability raised to ``beta`` counters the overconfidence that sampling few
    negatives causes (``beta = 1`` is plain BCE); the mean over rows is returned.

    Args:
        positive: [T] scores of the positives; negative: [T, k] scores of sampled negatives.
        beta: the power (see :func:`recfunnel.models.sequential.gbce_beta`).
        mask: [T, k] bool, False for negatives to leave out (e.g. the positive drawn again).
    """
    negative_terms = F.logsigmoid(-negative)
    if mask is not None:
        negative_terms = negative_terms * mask
    return -(beta * F.logsigmoid(positive) + negative_terms.sum(1)).mean()
