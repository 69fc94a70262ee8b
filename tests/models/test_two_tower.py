import numpy as np
import pytest
import torch

from recfunnel.data import checkerboard
from recfunnel.metrics import evaluate_scores
from recfunnel.models import TwoTower


@pytest.mark.parametrize(
    "params",
    [
        dict(softmax="full", reduction="mean", optimizer="adam", learning_rate=0.05, epochs=30),
        dict(softmax="in-batch", optimizer="adam", learning_rate=0.05, epochs=30, batch_size=32),
        dict(softmax="full", reduction="mean", optimizer="adam", learning_rate=0.05, epochs=30,
             pool_seen_items=True),
    ],
)  # fmt: skip
def test_checkerboard_is_learned_exactly(params):
    """Even users like even items: every user's first unseen recommendation has their parity."""
    data = checkerboard(20, 20, seed=0, density=0.6)
    model = TwoTower(dim=8, batch_size=params.pop("batch_size", 64), **params).fit(data)
    ids, _ = model.recommend(np.arange(20), 1)
    assert ((ids[:, 0] % 2) == (np.arange(20) % 2)).all()  # precision@1 == 1


def test_checkerboard_precision_at_one_via_metrics():
    full = checkerboard(40, 40, seed=2, density=1.0)
    rng = np.random.default_rng(0)
    test_mask = rng.random(len(full)) < 0.25
    train, test = full.subset(~test_mask), full.subset(test_mask)
    model = TwoTower(dim=8, softmax="full", reduction="mean", optimizer="adam",
                     learning_rate=0.05, epochs=40, batch_size=64).fit(train)  # fmt: skip
    metrics = evaluate_scores(model.score, train, test, factorized_ks=(), ranking_ks=(1,))
    assert metrics["precision@1"] == 1.0


def test_fold_in_from_history_matches_query_tower():
    """A known user's query is e_u + |H|^-1/2 sum h_j; folding in the same items gives the OOV
    row's embedding plus the same pooled term, value for value."""
    data = checkerboard(10, 10, seed=0)
    model = TwoTower(dim=4, softmax="full", reduction="mean", pool_seen_items=True, epochs=2,
                     optimizer="adam", learning_rate=0.01).fit(data)  # fmt: skip
    tower = model.net_.query_tower
    own, oov = tower.users.embedding.weight[3], tower.users.embedding.weight[tower.users.num]
    items = np.unique(data.items[data.users == 3])
    pooled = tower.history[torch.as_tensor(items)].sum(0) / np.sqrt(len(items))
    query = model.user_vectors([3])[0]
    torch.testing.assert_close(query, (own + pooled).detach(), rtol=1e-5, atol=1e-6)
    folded = model.fold_in(items)[0]
    torch.testing.assert_close(folded - oov, query - own, rtol=1e-5, atol=1e-6)
    assert pooled.abs().sum() > 0  # the pooled term is not trivially zero
    # recommending from the history ranks as the folded-in query does
    ids, _ = model.recommend_history(items, 3)
    expected = torch.topk(model.item_vectors() @ folded.detach(), 10).indices.tolist()
    assert ids.tolist() == [i for i in expected if i not in set(items.tolist())][:3]


def test_seed_makes_training_reproducible():
    data = checkerboard(10, 10, seed=0)
    a = TwoTower(dim=4, epochs=2, seed=5).fit(data).item_vectors()
    b = TwoTower(dim=4, epochs=2, seed=5).fit(data).item_vectors()
    assert (a == b).all()


def test_early_stopping_restores_the_best_epoch():
    full = checkerboard(30, 30, seed=0, density=0.8)
    rng = np.random.default_rng(1)
    mask = rng.random(len(full)) < 0.2
    model = TwoTower(dim=8, softmax="full", reduction="mean", optimizer="adam",
                     learning_rate=0.05, epochs=50, batch_size=64, patience=2)  # fmt: skip
    model.fit(full.subset(~mask), validation=full.subset(mask))
    log = model.training_log_
    assert all("recall@10" in e for e in log.epochs)
    best = max(e["recall@10"] for e in log.epochs)
    assert log.epochs[log.best_epoch - 1]["recall@10"] == best
    assert log.stopped_early and log.best_epoch < len(log.epochs)
    # the fitted model is the best epoch's: its validation metric is the best one, exactly
    again = evaluate_scores(model.score, full.subset(~mask), full.subset(mask), factorized_ks=(),
                            ranking_ks=(10,))  # fmt: skip
    assert again["recall@10"] == best
