"""Sampled and mixed negatives: the fused loss against explicit references."""

import math

import pytest
import torch

from recfunnel.errors import RecfunnelError
from recfunnel.losses import (
    full_softmax_loss,
    sampled_softmax_loss,
    sampled_softmax_reference,
)
from recfunnel.tasks import RetrievalTask


def _leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


def test_sampled_softmax_by_hand():
    # q = (1, 0); positive scores 1; negatives score 0 and 2 (id 5 is the row's own item: out)
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[1.0, 0.0]])
    negatives = torch.tensor([[0.0, 1.0], [2.0, 0.0], [3.0, 0.0]])
    loss = sampled_softmax_loss(q, p, torch.tensor([5]), negatives, torch.tensor([1, 2, 5]))
    assert loss.item() == pytest.approx(math.log(math.e + 1 + math.e**2) - 1, rel=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"temperature": 0.3, "reduction": "sum"},
        {"weights": True, "offsets": True},
        {"offsets": True, "positive_offsets": True, "chunk": 3},
    ],
)
def test_fused_sampled_softmax_equals_reference_in_value_and_gradient(options):
    B, M, D = 9, 7, 4
    q, p, n = _leaves((B, D), (B, D), (M, D))
    negative_ids = torch.tensor([0, 2, 3, 5, 8, 9, 11])
    positive_ids = torch.tensor([2, 1, 5, 5, 11, 4, 0, 7, 3])  # six rows hit a negative
    g = torch.Generator().manual_seed(1)
    kwargs = {
        "temperature": options.get("temperature", 1.0),
        "reduction": options.get("reduction", "mean"),
        "weights": torch.rand(B, generator=g, dtype=torch.float64)
        if "weights" in options
        else None,
        "negative_offsets": torch.randn(M, generator=g, dtype=torch.float64)
        if "offsets" in options
        else None,
        "positive_offsets": torch.randn(B, generator=g, dtype=torch.float64)
        if "positive_offsets" in options
        else None,
    }
    expected = sampled_softmax_reference(q, p, positive_ids, n, negative_ids, **kwargs)
    want = torch.autograd.grad(expected, (q, p, n))
    got = sampled_softmax_loss(q, p, positive_ids, n, negative_ids, chunk=options.get("chunk", 256),
                               **kwargs)  # fmt: skip
    grads = torch.autograd.grad(got, (q, p, n))
    assert got.item() == pytest.approx(expected.item(), rel=1e-10)
    for a, b in zip(grads, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_every_other_item_as_negatives_is_the_full_softmax():
    B, N, D = 6, 10, 3
    q, items = _leaves((B, D), (N, D))
    targets = torch.tensor([0, 3, 3, 9, 4, 1])
    full = full_softmax_loss(q, items, targets)
    got = sampled_softmax_loss(q, items[targets], targets, items, torch.arange(N))
    assert got.item() == pytest.approx(full.item(), rel=1e-10)
    torch.testing.assert_close(torch.autograd.grad(got, q)[0], torch.autograd.grad(full, q)[0])


def _mixed_reference(q, positives, ids, draws, vectors_of, p_batch, q_sampler, batch, samples):
    """Every draw (batch positives, then samples) a separate column with logit
    ``s - log E_j``, the row's own item masked out, its positive scored once."""
    rows = []
    for i in range(len(q)):
        own = (q[i] * positives[i]).sum()
        logits = [own]
        for j in draws.tolist():
            if j == ids[i]:
                continue
            expected = batch * p_batch[j] + samples * q_sampler[j]
            logits.append((q[i] * vectors_of(j)).sum() - torch.log(expected))
        rows.append(torch.logsumexp(torch.stack(logits), 0) - own)
    return torch.stack(rows).mean()


@pytest.mark.parametrize("softmax", ["mixed", "sampled"])
def test_mixed_and_sampled_negatives_equal_the_per_draw_reference(softmax):
    N, D = 12, 4
    q, table = _leaves((5, D), (N, D), seed=3)
    ids = torch.tensor([3, 3, 7, 0, 11])
    sampled_ids = torch.tensor([3, 5, 5, 9, 0, 2])
    p_batch = torch.softmax(torch.randn(N, dtype=torch.float64), 0)
    q_sampler = torch.full((N,), 1.0 / N, dtype=torch.float64)
    task = RetrievalTask(softmax=softmax, negatives=len(sampled_ids), logq_correction=True,
                         reduction="mean")  # fmt: skip
    got = task.loss(
        q, table[ids], ids, item_log_probs=p_batch.log(),
        sampled=(sampled_ids, table[sampled_ids], q_sampler.log()),
    )  # fmt: skip
    draws = torch.cat([ids, sampled_ids]) if softmax == "mixed" else sampled_ids
    batch = len(ids) if softmax == "mixed" else 0
    expected = _mixed_reference(q, table[ids], ids, draws, lambda j: table[j], p_batch,
                                q_sampler, batch, len(sampled_ids))  # fmt: skip
    assert got.item() == pytest.approx(expected.item(), rel=1e-9)
    g_got = torch.autograd.grad(got, (q, table))
    g_want = torch.autograd.grad(expected, (q, table))
    for a, b in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_logq_corrected_samples_estimate_the_full_softmax():
    # E[sum_j m_j exp(s_j) / (S q_j)] = sum_j exp(s_j): many popularity draws give the full loss
    N, D, S = 30, 4, 400_000
    q, table = _leaves((8, D), (N, D), seed=5)
    targets = torch.randint(0, N, (8,), generator=torch.Generator().manual_seed(0))
    popularity = torch.softmax(torch.randn(N, dtype=torch.float64), 0)
    drawn = torch.multinomial(popularity, S, replacement=True,
                              generator=torch.Generator().manual_seed(1))  # fmt: skip
    task = RetrievalTask(softmax="sampled", negatives=S, logq_correction=True, reduction="mean")
    got = task.loss(q, table[targets], targets, sampled=(drawn, table[drawn], popularity.log()))
    assert got.item() == pytest.approx(full_softmax_loss(q, table, targets).item(), abs=0.01)
    uncorrected = RetrievalTask(softmax="sampled", negatives=S, reduction="mean")
    biased = uncorrected.loss(q, table[targets], targets,
                              sampled=(drawn, table[drawn], popularity.log()))  # fmt: skip
    assert abs(biased.item() - full_softmax_loss(q, table, targets).item()) > 1.0


def test_bad_negative_options_are_one_line_errors():
    with pytest.raises(RecfunnelError, match="softmax must be one of"):
        RetrievalTask(softmax="hierarchical")
    with pytest.raises(RecfunnelError, match="negatives must be at least 1"):
        RetrievalTask(softmax="sampled", negatives=0)
    with pytest.raises(RecfunnelError, match="sampler must be one of"):
        RetrievalTask(softmax="mixed", sampler="zipf")
