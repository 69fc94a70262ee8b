import math

import numpy as np
import pytest
import torch

from recfunnel.data import Interactions
from recfunnel.metrics import evaluate_scores, factorized_key, rating_metrics

# 1 user, 5 items. Scores rank items 0 > 1 > 2 > 3 > 4. Item 0 was seen in training.
SCORES = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])


def scorer(users):
    return SCORES[: len(users)].clone()


def data(test_items):
    train = Interactions([0], [0], 1, 5)
    test = Interactions([0] * len(test_items), test_items, 1, 5)
    return train, test


def test_factorized_top_k_counts_rank_among_all_items_without_exclusion():
    train, test = data([1, 3])  # ranks 1 and 3 among all five (item 0 not excluded)
    m = evaluate_scores(scorer, train, test, factorized_ks=(1, 2, 4), ranking_ks=(1,))
    assert m[factorized_key(1)] == 0.0
    assert m[factorized_key(2)] == 0.5
    assert m[factorized_key(4)] == 1.0


def test_ranking_metrics_by_hand():
    train, test = data([1, 3])
    # seen item 0 excluded -> ranking is 1, 2, 3, 4; relevant {1, 3} at positions 0 and 2
    m = evaluate_scores(scorer, train, test, factorized_ks=(), ranking_ks=(1, 2, 3))
    assert m["recall@1"] == 1.0  # 1 hit / min(1, 2)
    assert m["recall@2"] == 0.5
    assert m["recall@3"] == 1.0
    assert m["precision@3"] == pytest.approx(2 / 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@3"] == pytest.approx(dcg / idcg)
    assert m["map@3"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["mrr"] == 1.0
    assert m["hit_rate@1"] == 1.0
    assert m["coverage@1"] == pytest.approx(1 / 5)


def test_ties_count_in_the_items_favour():
    train, test = Interactions([0], [4], 1, 5), Interactions([0], [2], 1, 5)
    m = evaluate_scores(
        lambda u: torch.ones(1, 5), train, test, factorized_ks=(1,), ranking_ks=(1,)
    )
    assert m[factorized_key(1)] == 1.0


def test_rating_metrics():
    got = rating_metrics(np.array([1.0, 3.0]), np.array([2.0, 1.0]))
    assert got["rmse"] == pytest.approx(math.sqrt(2.5))
    assert got["mae"] == pytest.approx(1.5)
