import numpy as np
import pytest

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
    data = checkerboard(10, 10, seed=0)
    model = TwoTower(dim=4, softmax="full", reduction="mean", pool_seen_items=True, epochs=2,
                     optimizer="adam", learning_rate=0.01).fit(data)  # fmt: skip
    vector = model.fold_in(np.array([0, 2, 4]))
    assert vector.shape == (1, 4)


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
