"""int32 user and item indices where num_users * num_items passes 2**31 and 2**32: every
(user, item) key must be made in int64. Two pairs here have keys exactly 2**32 apart, so an
int32 key would make them one pair (a wrong duplicate, a test row taken for a seen one)."""

import numpy as np
import torch

from recfunnel.data import Interactions
from recfunnel.data.splits import random_split, temporal_split
from recfunnel.metrics import dot_scorer, evaluate_scores
from recfunnel.models.popularity import MostPopular
from recfunnel.training import to_tensors, train_step

U, N = 200_000, 30_000
FAR_USER, FAR_ITEM = divmod(2**32, N)  # (143165, 16576): key 2**32, which wraps to (0, 0)'s 0
assert FAR_USER * N + FAR_ITEM == 2**32 and FAR_USER < U


def pairs(data: Interactions) -> list[tuple[int, int]]:
    return sorted(zip(data.users.tolist(), data.items.tolist(), strict=True))


def pairs_in_order(data: Interactions) -> list[tuple[int, int]]:
    return list(zip(data.users.tolist(), data.items.tolist(), strict=True))


def data() -> Interactions:
    users = [0, FAR_USER, FAR_USER, 71_583, 1, 2]  # 71_583 * N > 2**31: a negative int32 key
    items = [0, FAR_ITEM, FAR_ITEM, 0, 5, 6]
    return Interactions(users, items, U, N, timestamps=[1, 2, 3, 4, 5, 6])


def test_indices_are_int32_and_keys_do_not_wrap():
    d = data()
    assert d.users.dtype == np.int32 and d.items.dtype == np.int32  # what this file is about
    assert d.duplicate_pairs() == 1  # only the real repeat of (FAR_USER, FAR_ITEM)
    summed = d.deduplicate("sum")
    assert pairs(summed) == sorted({(0, 0), (FAR_USER, FAR_ITEM), (71_583, 0), (1, 5), (2, 6)})
    weights = dict(zip(pairs_in_order(summed), summed.weights.tolist(), strict=True))
    assert weights[(0, 0)] == 1 and weights[(FAR_USER, FAR_ITEM)] == 2
    csr = d.deduplicate("first").to_csr()
    assert csr.nnz == 5 and csr[0].indices.tolist() == [0] and csr[FAR_USER, FAR_ITEM] == 1


def test_wide_vocabularies_keep_int64_and_refuse_out_of_range():
    wide = Interactions([0, 2**31], [1, 0], 2**31 + 1, 2)
    assert wide.users.dtype == np.int64 and wide.users[1] == 2**31
    try:  # an index past int32 for a small vocabulary is refused, not wrapped into range
        Interactions([2**32], [0], 1, 1)
    except Exception as error:
        assert "user indices must lie in [0, 1)" in str(error)
    else:
        raise AssertionError("an out-of-range index was accepted")


def test_splits_keep_every_pair():
    d = data()
    train, test = random_split(d, 0.5, seed=3)
    assert pairs(train.concat(test)) == pairs(d)
    train, test = temporal_split(d, 1)
    assert pairs(train.concat(test)) == pairs(d)
    assert (FAR_USER, FAR_ITEM) in pairs(test)  # its latest row


def test_seen_masks_and_evaluation_tell_the_far_pairs_apart():
    train = Interactions([FAR_USER, 1, 2], [FAR_ITEM, 5, 6], U, N)
    model = MostPopular().fit(train)
    # user 0 saw nothing: FAR_ITEM (top with 5 and 6) is allowed; FAR_USER's is excluded
    assert FAR_ITEM in model.recommend(0, 3)[0].tolist()
    assert FAR_ITEM not in model.recommend(FAR_USER, 3)[0].tolist()
    # test row (0, 0): its int32 key equals the training pair (FAR_USER, FAR_ITEM)'s
    test = Interactions([0], [0], U, N)
    items = torch.zeros(N, 1)
    items[0] = 1.0  # item 0 first for everyone
    scorer = dot_scorer(lambda users: torch.ones(len(users), 1), items)
    metrics = evaluate_scores(scorer, train, test, factorized_ks=(), ranking_ks=(1,))
    assert metrics["recall@1"] == 1.0


def test_training_batches_are_int64():
    d = data()
    tensors = to_tensors(d, torch.device("cpu"))
    assert tensors["user"].dtype == torch.int32  # the whole column stays at half the memory
    seen = {}

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def compute_loss(self, batch):
            seen.update({name: column.dtype for name, column in batch.items()})
            keys = batch["user"] * N + batch["item"]  # what a model may compute from a batch
            assert int(keys.max()) == 2**32
            return self.w.sum() * 0 + self.w.sum()

    train_step(Probe(), tensors, torch.arange(len(d)))
    assert seen["user"] == seen["item"] == torch.int64
