"""The sequential model: causal masking, losses against references, order, save/load, splits."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recfunnel.data import Interactions
from recfunnel.data.sequences import leave_last_out, read_sequences, sasrec_protocol, to_sequences
from recfunnel.data.vocab import Vocabulary
from recfunnel.errors import DataError, RecfunnelError
from recfunnel.losses import gbce_loss, sampled_softmax_reference
from recfunnel.models.sequential import Sequential, SequentialNet, SequentialTask, gbce_beta
from recfunnel.runs import Run


def cycles(num_users=40, num_items=10, length=8, seed=0) -> Interactions:
    """Each user walks the items in a cycle from a random start: the next item is always
    ``(last + 1) % num_items``, so only the order tells what comes next."""
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, num_items, num_users)
    users = np.repeat(np.arange(num_users), length)
    steps = np.tile(np.arange(length), num_users)
    items = (starts[users] + steps) % num_items
    return Interactions(users, items, num_users, num_items, timestamps=steps * 10)


@pytest.fixture(scope="module")
def cyclic_model():
    model = Sequential(dim=16, blocks=1, max_len=8, dropout=0.0, epochs=40, batch_size=16,
                       learning_rate=0.01, device="cpu")  # fmt: skip
    return model.fit(cycles())


@pytest.mark.parametrize("arch", ["transformer", "gru"])
def test_a_position_never_sees_later_items(arch):
    torch.manual_seed(0)
    net = SequentialNet(20, arch=arch, dim=8, blocks=2, heads=2, dropout=0.0, max_len=12).eval()
    a = torch.tensor([[3, 5, 7, 9, 11, 13, 2, 4]])
    b = a.clone()
    b[0, 5:] = torch.tensor([1, 1, 1])  # change the items after position 4
    with torch.no_grad():
        ha, hb = net(a), net(b)
    torch.testing.assert_close(ha[:, :5], hb[:, :5])
    assert not torch.allclose(ha[:, 5:], hb[:, 5:])  # a broken test would pass on equal outputs


def test_padding_on_the_right_changes_no_real_position():
    torch.manual_seed(0)
    net = SequentialNet(20, arch="transformer", dim=8, blocks=2, heads=1, dropout=0.0,
                        max_len=12).eval()  # fmt: skip
    seq = torch.tensor([[3, 5, 7, 9]])
    padded = torch.tensor([[3, 5, 7, 9, 0, 0, 0]])
    with torch.no_grad():
        torch.testing.assert_close(net(seq), net(padded)[:, :4])


def _task(loss, num_items=12, dim=8, negatives=5, seed=0):
    torch.manual_seed(seed)
    net = SequentialNet(num_items, arch="transformer", dim=dim, blocks=1, heads=1, dropout=0.0,
                        max_len=6).eval()  # fmt: skip
    return SequentialTask(net, loss=loss, negatives=negatives, sampler="uniform", gbce_t=0.75,
                          item_counts=None, seed=seed)  # fmt: skip


def _batch():
    window = torch.tensor([[1, 2, 3, 4, 5, 6, 7], [4, 9, 2, 0, 0, 0, 0], [12, 11, 0, 0, 0, 0, 0]])
    return {"window": window, "length": torch.tensor([6, 2, 1])}


def _reference_positions(task, batch):
    """Per sequence, unpadded, position by position: (hidden [D], target index) pairs."""
    out = []
    for window, length in zip(batch["window"], batch["length"], strict=True):
        n = int(length)
        hidden = task.net(window[None, :n])[0]
        for t in range(n):
            out.append((hidden[t], int(window[t + 1]) - 1))
    return out


def test_full_softmax_loss_is_the_mean_cross_entropy_of_every_position():
    task, batch = _task("softmax"), _batch()
    items = task.net.item_vectors()
    reference = torch.stack(
        [F.cross_entropy((h @ items.T)[None], torch.tensor([t])) for h, t in
         _reference_positions(task, batch)]
    ).mean()  # fmt: skip
    torch.testing.assert_close(task.compute_loss(batch), reference, rtol=1e-5, atol=1e-6)
    assert len(_reference_positions(task, batch)) == 9  # 6 + 2 + 1 real positions


def test_sampled_softmax_matches_the_reference_with_the_same_draws():
    task, batch = _task("sampled", negatives=7), _batch()
    state = task.generator.get_state()
    loss = task.compute_loss(batch)
    task.generator.set_state(state)
    drawn = torch.multinomial(task.sampler_probs, 7, replacement=True, generator=task.generator)
    ids, counts = torch.unique(drawn, return_counts=True)
    offsets = (counts.double().log() - (task.sampler_probs[ids] * 7).log()).float()
    pairs = _reference_positions(task, batch)
    hidden = torch.stack([h for h, _ in pairs])
    targets = torch.tensor([t for _, t in pairs])
    items = task.net.item_vectors()
    reference = sampled_softmax_reference(hidden, items[targets], targets, items[ids], ids,
                                          negative_offsets=offsets)  # fmt: skip
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)


def test_gbce_by_hand_and_its_beta():
    # scores 0: log sigmoid(0) = -log 2, so beta=0.5 with two negatives: (0.5 + 2) log 2
    loss = gbce_loss(torch.zeros(1), torch.zeros(1, 2), 0.5)
    assert float(loss) == pytest.approx(2.5 * math.log(2))
    masked = gbce_loss(torch.zeros(1), torch.zeros(1, 2), 0.5, mask=torch.tensor([[True, False]]))
    assert float(masked) == pytest.approx(1.5 * math.log(2))
    assert gbce_beta(1, 3416, 0.0) == pytest.approx(1.0)  # t = 0: plain BCE
    assert gbce_beta(2, 3, 0.75) == pytest.approx(1.0)  # every other item sampled: alpha = 1
    assert gbce_beta(1, 3, 1.0) == pytest.approx(0.5)  # t = 1: beta = alpha
    assert gbce_beta(256, 3417, 0.75) == pytest.approx(
        0.0752 * (0.75 * (1 - 1 / 0.0752) + 1 / 0.0752), rel=1e-3
    )


def test_gbce_loss_of_the_task_matches_a_loop_with_the_same_draws():
    task, batch = _task("gbce", negatives=4), _batch()
    state = task.generator.get_state()
    loss = task.compute_loss(batch)
    task.generator.set_state(state)
    drawn = torch.randint(12, (3, 4), generator=task.generator)
    items = task.net.item_vectors()
    beta = gbce_beta(4, 12, 0.75)
    terms = []
    for row, (window, length) in enumerate(zip(batch["window"], batch["length"], strict=True)):
        hidden = task.net(window[None, : int(length)])[0]
        for t in range(int(length)):
            target = int(window[t + 1]) - 1
            term = beta * F.logsigmoid(hidden[t] @ items[target])
            for j in drawn[row].tolist():
                if j != target:
                    term = term + F.logsigmoid(-(hidden[t] @ items[j]))
            terms.append(-term)
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-5, atol=1e-6)


def test_it_learns_the_next_item_from_the_order(cyclic_model):
    # every user walks the cycle: after 3, 4, 5 comes 6; the same items reversed end with 3
    ids, _ = cyclic_model.recommend_history([3, 4, 5], 1, exclude_seen=False)
    assert ids.tolist() == [6]
    ids, _ = cyclic_model.recommend_history([5, 4, 3], 1, exclude_seen=False)
    assert ids.tolist() == [4]
    ids, _ = cyclic_model.recommend_history([3, 4, 5], 3)  # the history itself is excluded
    assert ids[0] == 6 and not {3, 4, 5} & set(ids.tolist())


def test_recommend_continues_the_training_sequence(cyclic_model):
    data = cycles()
    indptr, items = to_sequences(data)
    for user in range(5):
        last = items[indptr[user + 1] - 1]
        ids, _ = cyclic_model.recommend(user, 1, exclude_seen=False)
        assert ids.tolist() == [(last + 1) % 10]


def test_save_load_round_trip_through_run(tmp_path, cyclic_model):
    run = Run(cyclic_model, Vocabulary(range(40), name="user"), Vocabulary(range(10), name="item"))
    run.save(tmp_path / "run")
    loaded = Run.load(tmp_path / "run")
    assert isinstance(loaded.model, Sequential)
    np.testing.assert_array_equal(loaded.model.sequence_items_, cyclic_model.sequence_items_)
    for user in ("0", "7"):
        a, b = run.recommend(user, 4), loaded.recommend(user, 4)
        assert a.items == b.items
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    a = run.recommend_history(["2", "3"], 3, exclude_seen=False)
    b = loaded.recommend_history(["2", "3"], 3, exclude_seen=False)
    assert a.items == b.items and a.items[0] == "4"  # after 2, 3 comes 4
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)


def test_extend_continues_each_users_sequence_in_time_order(cyclic_model):
    data = cycles()
    model = Sequential(dim=4, blocks=1, max_len=4, epochs=1, device="cpu").fit(data)
    extra = Interactions([1, 0, 1], [9, 8, 7], 40, 10, timestamps=[5, 0, 3])
    model.extend(extra)
    indptr, items = to_sequences(data)
    np.testing.assert_array_equal(model.sequence(0), [*items[indptr[0] : indptr[1]], 8])
    np.testing.assert_array_equal(model.sequence(1), [*items[indptr[1] : indptr[2]], 7, 9])
    np.testing.assert_array_equal(model.sequence(2), items[indptr[2] : indptr[3]])
    assert model.seen_[1, 9] == 1 and model.seen_[0, 8] == 1


def test_leave_last_out_by_time_then_row_order():
    # user 0: times 5, 1, 3, 3 -> order rows 1, 2, 3, 0 (the tie 3/3 keeps row order)
    data = Interactions(
        users=[0, 0, 0, 0, 1, 1, 2], items=[0, 1, 2, 3, 4, 5, 6], num_users=3, num_items=7,
        timestamps=[5, 1, 3, 3, 9, 2, 1],
    )  # fmt: skip
    train, validation, test = leave_last_out(data)

    def pairs(part):
        return sorted(zip(part.users.tolist(), part.items.tolist(), strict=True))

    assert pairs(test) == [(0, 0), (1, 4)]
    assert pairs(validation) == [(0, 3)]
    assert pairs(train) == [(0, 1), (0, 2), (1, 5), (2, 6)]
    train2, none, test2 = leave_last_out(data, validation=False)
    assert none is None and len(train2) == 5 and len(test2) == 2


def test_read_sequences_and_the_protocol(tmp_path):
    for part in ("train", "val"):
        (tmp_path / part).mkdir()
    (tmp_path / "train" / "input.txt").write_text("1 2 3\n4 5\n2 5 1 3\n")
    (tmp_path / "val" / "input.txt").write_text("4 5 3\n")
    (tmp_path / "val" / "output.txt").write_text("1\n")
    data = read_sequences(tmp_path / "train" / "input.txt")
    assert data.users.ids == ["1", "2", "3"] and data.items.ids == ["1", "2", "3", "4", "5"]
    indptr, items = to_sequences(data.interactions)
    assert data.items.decode(items[indptr[2] : indptr[3]]) == ["2", "5", "1", "3"]
    protocol = sasrec_protocol(tmp_path)
    assert protocol.context.users.tolist() == [1]
    assert protocol.dataset.items.decode(protocol.context.items) == ["3"]
    assert protocol.dataset.items.decode(protocol.test.items) == ["1"]
    assert protocol.context.timestamps.tolist() == [2] and protocol.test.timestamps.tolist() == [3]
    (tmp_path / "val" / "input.txt").write_text("9 9 3\n")
    with pytest.raises(DataError, match="extends no training line"):
        sasrec_protocol(tmp_path)


def test_bad_settings_are_refused_in_one_line():
    data = cycles(num_users=4)
    with pytest.raises(RecfunnelError, match="loss must be one of"):
        Sequential(loss="bce").fit(data)
    with pytest.raises(RecfunnelError, match="divisible by heads"):
        Sequential(dim=10, heads=3).fit(data)
    with pytest.raises(RecfunnelError, match="two ordered items"):
        Sequential(epochs=1).fit(Interactions([0, 1], [0, 1], 2, 2))
