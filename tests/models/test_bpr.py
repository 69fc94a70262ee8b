"""BPR's sampled negatives: the loss by hand, the sampling distributions, bad options; sparse
updates on large tables (BPR and SGD-MF share the network)."""

import numpy as np
import pytest
import torch

from recfunnel.data import Interactions, checkerboard
from recfunnel.errors import RecfunnelError
from recfunnel.models import BPR, SGDMF
from recfunnel.models.sgd_mf import BiasedMFNet, BPRLoss


def test_loss_is_the_mean_over_negatives_worked_by_hand():
    net = BiasedMFNet(2, 4, 1, init_scale=0.1)
    with torch.no_grad():
        net.user.weight[:] = torch.tensor([[1.0], [2.0]])
        net.item.weight[:] = torch.tensor([[1.0], [0.0], [-1.0], [0.5]])
        net.item_bias.weight.zero_()
    loss = BPRLoss(net, 0.0, np.ones(4), negatives=2)
    loss.sample = lambda shape, device: torch.tensor([[1, 2]])  # negatives 1 and 2
    value = loss.compute_loss({"user": torch.tensor([0]), "item": torch.tensor([0])})
    # user 0 scores item 0: 1, item 1: 0, item 2: -1
    # -> mean(-log sigmoid(1 - 0), -log sigmoid(1 + 1)) = mean(0.31326, 0.12693)
    assert value.item() == pytest.approx((0.3132617 + 0.1269280) / 2, abs=1e-6)


def test_hardest_weighting_keeps_only_the_highest_scored_negative_by_hand():
    net = BiasedMFNet(2, 4, 1, init_scale=0.1)
    with torch.no_grad():
        net.user.weight[:] = torch.tensor([[1.0], [2.0]])
        net.item.weight[:] = torch.tensor([[1.0], [0.0], [-1.0], [0.5]])
        net.item_bias.weight.zero_()
    loss = BPRLoss(net, 0.1, np.ones(4), negatives=3, weighting="hardest")
    loss.sample = lambda shape, device: torch.tensor([[2, 3, 1]])  # scores -1, 0.5, 0
    value = loss.compute_loss({"user": torch.tensor([0]), "item": torch.tensor([0])})
    # only item 3 counts: -log sigmoid(1 - 0.5) + 0.1 * (|p|^2 + |q_0|^2 + |q_3|^2) = 0.47408 +
    # 0.1 * (1 + 1 + 0.25)
    assert value.item() == pytest.approx(0.4740770 + 0.225, abs=1e-6)
    value.backward()
    assert net.item.weight.grad[[1, 2]].abs().sum() == 0  # the easier negatives get no gradient


def test_popularity_sampling_follows_count_to_the_three_quarters():
    counts = np.array([1.0, 16.0, 81.0, 0.0])
    loss = BPRLoss(BiasedMFNet(1, 4, 2, 0.1), 0.0, counts, negatives=1, sampling="popularity")
    torch.manual_seed(0)
    drawn = torch.bincount(loss.sample((200_000,), "cpu"), minlength=4).numpy() / 200_000
    expected = counts**0.75 / (counts**0.75).sum()  # 1 : 8 : 27 : 0
    np.testing.assert_allclose(drawn, expected, atol=0.005)
    uniform = BPRLoss(BiasedMFNet(1, 4, 2, 0.1), 0.0, counts, negatives=3)
    assert uniform.sample((5, 3), "cpu").shape == (5, 3)


def test_several_negatives_learn_the_checkerboard():
    board = checkerboard(20, 20, seed=0)
    model = BPR(dim=8, epochs=30, batch_size=32, learning_rate=0.05, negatives=4,
                regularization=1e-4, seed=1).fit(board)  # fmt: skip
    ids, _ = model.recommend(np.arange(20), 1)
    assert ((ids[:, 0] % 2) == (np.arange(20) % 2)).mean() >= 0.95


@pytest.mark.parametrize(
    "options, message",
    [(dict(negatives=0), "negatives must be at least 1"),
     (dict(sampling="hard"), "sampling must be one of uniform, popularity"),
     (dict(weighting="max"), "weighting must be one of mean, hardest")],
)  # fmt: skip
def test_bad_options(options, message):
    with pytest.raises(RecfunnelError, match=message):
        BPR(epochs=1, **options).fit(checkerboard(4, 4))


def _wide(num_users: int, num_items: int = 50, rows: int = 4000) -> Interactions:
    """Random interactions over a user table of ``num_users`` (most of them never seen)."""
    rng = np.random.default_rng(0)
    return Interactions(users=rng.integers(0, num_users, rows),
                        items=rng.integers(0, num_items, rows),
                        num_users=num_users, num_items=num_items)  # fmt: skip


@pytest.mark.parametrize("kind", [BPR, SGDMF])
def test_sparse_updates_unset_are_chosen_by_the_table_size(kind):
    """Above the model's ``sparse_above`` users + items a dense Adam step would update every
    row: unset, ``sparse_updates`` turns on there (sparse gradients reach the trainer), off
    below it, and off when weight decay is asked for (a lazy Adam has none)."""
    big, small = _wide(kind.sparse_above), _wide(kind.sparse_above - 100)
    for data, expected in [(big, True), (small, False)]:
        ratings = np.ones(len(data), np.float32)
        data = Interactions(data.users, data.items, data.num_users, data.num_items, ratings)
        model = kind(epochs=1, batch_size=512).fit(data)
        assert model.fit_config_.sparse_updates is expected
        assert model.net_.user.sparse is expected
    decayed = kind(epochs=1, batch_size=512, weight_decay=1e-4)
    data = Interactions(big.users, big.items, big.num_users, big.num_items,
                        np.ones(len(big), np.float32))  # fmt: skip
    assert decayed.fit(data).fit_config_.sparse_updates is False


def test_sparse_and_dense_sgd_steps_are_the_same_fit():
    """With plain SGD (no moments) a sparse step moves exactly the rows a dense step moves (BPR's
    L2 reaches only the batch's rows): the two fits end with the same factors."""
    data = _wide(300, 40, 2000)
    fits = [BPR(epochs=2, batch_size=256, optimizer="sgd", learning_rate=0.1, seed=3,
                sparse_updates=sparse).fit(data) for sparse in (False, True)]  # fmt: skip
    assert fits[1].net_.user.sparse and not fits[0].net_.user.sparse
    for name in ("user", "item", "item_bias"):
        torch.testing.assert_close(getattr(fits[1].net_, name).weight,
                                   getattr(fits[0].net_, name).weight)  # fmt: skip


def test_a_sparse_fit_saves_and_loads(tmp_path):
    model = BPR(epochs=1, batch_size=512, sparse_updates=True).fit(_wide(500))
    loaded = BPR.from_state(model.get_params(), model.state_tensors())
    torch.testing.assert_close(loaded.score(np.arange(5)), model.score(np.arange(5)))


def test_sparse_updates_refuse_weight_decay():
    with pytest.raises(RecfunnelError, match="weight_decay does not go with sparse updates"):
        BPR(epochs=1, sparse_updates=True, weight_decay=0.1)
