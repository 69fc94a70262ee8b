import math

import pytest
import torch

from recfunnel.losses import (
    bpr_loss,
    distinct_in_batch_softmax_loss,
    full_softmax_loss,
    fused_full_softmax_loss,
    fused_in_batch_softmax_loss,
    in_batch_softmax_loss,
    mse_loss,
)


def test_in_batch_softmax_by_hand():
    # logits = I (2x2); each row: log(e^1 + e^0) - 1 = log(1 + e) - 1 = 0.3132617
    eye = torch.eye(2)
    expected = 2 * (math.log(1 + math.e) - 1)
    assert in_batch_softmax_loss(eye, eye).item() == pytest.approx(expected, rel=1e-6)
    assert in_batch_softmax_loss(eye, eye, reduction="mean").item() == pytest.approx(expected / 2)


def test_accidental_hits_are_removed():
    # both rows hold the same item: with hits removed each row's only candidate is itself -> 0
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss = in_batch_softmax_loss(q, q, candidate_ids=torch.tensor([7, 7]))
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


def test_logq_correction_by_hand():
    # logits = 0 everywhere; log q = [log 0.5, log 0.25] -> row logits [-log .5, -log .25]
    zeros = torch.zeros(2, 1)
    logq = torch.log(torch.tensor([0.5, 0.25]))
    logits = -logq
    row0 = torch.logsumexp(logits, 0) - logits[0]
    row1 = torch.logsumexp(logits, 0) - logits[1]
    got = in_batch_softmax_loss(zeros, zeros, candidate_log_probs=logq)
    assert got.item() == pytest.approx((row0 + row1).item(), rel=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"temperature": 0.3},
        {"reduction": "mean"},
        {"candidate_ids": "ids"},
        {"candidate_log_probs": "logq"},
        {"weights": "w", "reduction": "mean", "temperature": 2.0},
    ],
)
def test_fused_equals_reference_in_value_and_gradient(options):
    gen = torch.Generator().manual_seed(0)
    b, d = 300, 8
    extras = {
        "ids": torch.randint(0, 40, (b,), generator=gen),
        "logq": torch.randn(b, generator=gen),
        "w": torch.rand(b, generator=gen),
    }
    opts = {k: extras.get(v, v) if isinstance(v, str) else v for k, v in options.items()}
    q = torch.randn(b, d, generator=gen, requires_grad=True)
    c = torch.randn(b, d, generator=gen, requires_grad=True)
    ref = in_batch_softmax_loss(q, c, **opts)
    ref_grads = torch.autograd.grad(ref, (q, c))
    fused = fused_in_batch_softmax_loss(q, c, chunk=64, **opts)
    fused_grads = torch.autograd.grad(fused, (q, c))
    assert fused.item() == pytest.approx(ref.item(), rel=1e-5)
    for a, b_ in zip(ref_grads, fused_grads, strict=False):
        torch.testing.assert_close(a, b_, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"temperature": 0.3},
        {"reduction": "mean"},
        {"remove_accidental_hits": True},
        {"candidate_log_probs": True},
        {"candidate_log_probs": True, "remove_accidental_hits": True, "temperature": 2.0},
        {"weights": True, "reduction": "mean"},
    ],
)
def test_distinct_items_equal_the_batch_form_in_value_and_embedding_gradient(options):
    # Candidates are looked up by id, so repeats are exact copies; the loss over the distinct
    # items must equal the [B, B] reference and give the embeddings the same gradient.
    gen = torch.Generator().manual_seed(3)
    b, d, n = 400, 8, 30
    ids = torch.randint(0, n, (b,), generator=gen)
    table = torch.randn(n, d, generator=gen, requires_grad=True)
    q = torch.randn(b, d, generator=gen, requires_grad=True)
    item_logq = torch.randn(n, generator=gen)
    weights = torch.rand(b, generator=gen)
    ref_opts = {k: v for k, v in options.items() if k in ("temperature", "reduction")}
    if options.get("candidate_log_probs"):
        ref_opts["candidate_log_probs"] = item_logq[ids]
    if options.get("weights"):
        ref_opts["weights"] = weights
    ref = in_batch_softmax_loss(
        q, table[ids], candidate_ids=ids if options.get("remove_accidental_hits") else None,
        **ref_opts,
    )  # fmt: skip
    got = distinct_in_batch_softmax_loss(
        q, table[ids], ids, remove_accidental_hits=bool(options.get("remove_accidental_hits")),
        chunk=64, **ref_opts,
    )  # fmt: skip
    assert got.item() == pytest.approx(ref.item(), rel=1e-5)
    pairs = zip(torch.autograd.grad(ref, (q, table)), torch.autograd.grad(got, (q, table)),
                strict=True)  # fmt: skip
    for a, b_ in pairs:
        torch.testing.assert_close(a, b_, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("options", [{}, {"temperature": 0.5, "reduction": "sum"}, {"weights": 1}])
def test_fused_full_softmax_equals_reference(options):
    gen = torch.Generator().manual_seed(1)
    q = torch.randn(50, 4, generator=gen, requires_grad=True)
    items = torch.randn(30, 4, generator=gen, requires_grad=True)
    targets = torch.randint(0, 30, (50,), generator=gen)
    if "weights" in options:
        options = {"weights": torch.rand(50, generator=gen)}
    ref = full_softmax_loss(q, items, targets, **options)
    fused = fused_full_softmax_loss(q, items, targets, chunk=16, **options)
    assert fused.item() == pytest.approx(ref.item(), rel=1e-5)
    grads = zip(
        torch.autograd.grad(ref, (q, items)), torch.autograd.grad(fused, (q, items)), strict=True
    )
    for a, b in grads:
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_full_softmax_by_hand():
    # one query scoring items [1, 0, 0]; target 0: log(e + 2) - 1
    q = torch.tensor([[1.0]])
    items = torch.tensor([[1.0], [0.0], [0.0]])
    got = full_softmax_loss(q, items, torch.tensor([0]))
    assert got.item() == pytest.approx(math.log(math.e + 2) - 1, rel=1e-6)


def test_bpr_and_mse_by_hand():
    assert bpr_loss(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(math.log(2))
    assert mse_loss(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 1.0])).item() == pytest.approx(2.5)
