"""Ranking model: losses and layers by hand, fitting, cold start from features, save -> load."""

import math

import numpy as np
import pytest
import torch

from recfunnel.data import Dataset, Interactions, Vocabulary
from recfunnel.errors import RecfunnelError
from recfunnel.models import RankingModel, TwoStage
from recfunnel.models.ranking import CrossLayer, RankingNet, listwise_softmax_loss

FAST = dict(
    dim=4, epochs=30, batch_size=32, learning_rate=0.05, pool_seen_items=False, init_scale=0.1
)


def gender_genre_dataset():
    """20 users (even: F, odd: M) x 6 items (0-2 genre A, 3-5 genre B). F users rate genre A
    5 and genre B 1; M users the reverse. Every rating is known, so features explain it all."""
    users, items, ratings = [], [], []
    for u in range(20):
        for i in range(6):
            likes = (u % 2 == 0) == (i < 3)
            users.append(u)
            items.append(i)
            ratings.append(5.0 if likes else 1.0)
    data = Interactions(users, items, 20, 6, ratings=ratings, timestamps=np.arange(len(users)))
    genres = np.array([[1, 0]] * 3 + [[0, 1]] * 3, dtype=np.float32)
    return Dataset(
        interactions=data,
        users=Vocabulary([f"u{u}" for u in range(20)], name="user"),
        items=Vocabulary([f"i{i}" for i in range(6)], name="item"),
        user_table={"gender": np.array(["F", "M"] * 10)},
        item_table={"genres": genres},
    )


@pytest.fixture(scope="module")
def fitted():
    dataset = gender_genre_dataset()
    model = RankingModel(**FAST).fit(dataset.interactions, dataset=dataset)
    return model, dataset


def test_listwise_loss_by_hand():
    # softmax over [2, 0] with the positive first: -log(e^2 / (e^2 + 1)) = log(1 + e^-2)
    loss = listwise_softmax_loss(torch.tensor([[2.0, 0.0]]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-2)), abs=1e-6)


def test_cross_layer_by_hand():
    layer = CrossLayer(2)
    with torch.no_grad():
        layer.project.weight.copy_(torch.eye(2))
        layer.project.bias.zero_()
    x = torch.tensor([[1.0, 2.0]])
    # x0 * (W x + b) + x = [1*1, 2*2] + [1, 2]
    assert layer(x, x).tolist() == [[2.0, 6.0]]
    low_rank = CrossLayer(8, rank=2)
    assert low_rank(torch.ones(3, 8), torch.ones(3, 8)).shape == (3, 8)


def test_fits_the_training_ratings(fitted):
    model, dataset = fitted
    data = dataset.interactions
    predicted = model.predict(data.users, data.items)
    assert np.sqrt(np.mean((predicted - data.ratings) ** 2)) < 0.3
    assert predicted.min() >= 1.0 and predicted.max() <= 5.0  # clipped to the training range


def test_new_user_is_scored_from_their_features(fitted):
    model, _ = fitted
    woman = model.score_new_user({"gender": ["F"]})
    man = model.score_new_user({"gender": ["M"]})
    assert woman[:3].min() > woman[3:].max()  # F users like genre A
    assert man[3:].min() > man[:3].max()
    unknown = model.score_new_user({})  # the shared OOV representation
    assert not torch.allclose(woman, unknown) and not torch.allclose(man, unknown)


def test_new_item_is_scored_from_its_features(fitted):
    model, _ = fitted
    women, men = np.arange(0, 20, 2), np.arange(1, 20, 2)
    genre_a = {"genres": np.array([[1, 0]], np.float32)}
    genre_b = {"genres": np.array([[0, 1]], np.float32)}
    assert (model.score_new_item(genre_a, women) > model.score_new_item(genre_b, women)).all()
    assert (model.score_new_item(genre_b, men) > model.score_new_item(genre_a, men)).all()


def test_save_load_keeps_scores_and_feature_encoding(fitted):
    model, _ = fitted
    clone = RankingModel.from_state(model.get_params(), model.state_tensors())
    users = np.arange(20)
    torch.testing.assert_close(clone.score(users), model.score(users), rtol=0, atol=0)
    torch.testing.assert_close(
        clone.score_new_user({"gender": ["F"]}), model.score_new_user({"gender": ["F"]}),
        rtol=0, atol=0,
    )  # fmt: skip


@pytest.mark.parametrize("head", ["mlp", "dcn", "dot+dcn"])
def test_deep_heads_learn_the_pattern(head):
    dataset = gender_genre_dataset()
    model = RankingModel(**{**FAST, "head": head, "hidden": [16], "cross_rank": 2}).fit(
        dataset.interactions, dataset=dataset
    )
    scores = model.score(np.array([0, 1]))
    assert scores[0, :3].min() > scores[0, 3:].max()
    assert scores[1, 3:].min() > scores[1, :3].max()


@pytest.mark.parametrize("objective", ["watch", "listwise"])
def test_implicit_objectives_rank_positives_first(objective):
    dataset = gender_genre_dataset()
    liked = dataset.interactions.ratings == 5.0
    data = Interactions(dataset.interactions.users[liked], dataset.interactions.items[liked], 20, 6)
    model = RankingModel(**{**FAST, "objective": objective, "features": False}).fit(data)
    scores = model.score(np.array([0, 1]))
    assert scores[0, :3].min() > scores[0, 3:].max()
    assert scores[1, 3:].min() > scores[1, :3].max()


def test_bad_settings_and_missing_inputs():
    dataset = gender_genre_dataset()
    with pytest.raises(RecfunnelError, match="head must be one of"):
        RankingModel(head="transformer").fit(dataset.interactions, dataset=dataset)
    with pytest.raises(RecfunnelError, match="got no dataset"):
        RankingModel().fit(dataset.interactions)
    no_ratings = Interactions([0, 1], [0, 1], 2, 2)
    with pytest.raises(RecfunnelError, match="needs ratings"):
        RankingModel(features=False).fit(no_ratings)
    model = RankingModel(**{**FAST, "features": False, "epochs": 1}).fit(dataset.interactions)
    with pytest.raises(RecfunnelError, match="no user features"):
        model.score_new_user({"gender": ["F"]})


def test_two_stage_ranker_must_recommend():
    with pytest.raises(RecfunnelError, match="'listwise' or 'watch'"):
        TwoStage(ranker={"objective": "rating"}).fit(gender_genre_dataset().interactions)


def test_two_stage_with_blend_one_keeps_the_retrieval_order():
    from recfunnel.data import checkerboard

    data = checkerboard(12, 16, seed=1)
    model = TwoStage(
        retrieval=dict(dim=8, epochs=3, batch_size=64, softmax="full", reduction="mean",
                       optimizer="adam", learning_rate=0.05),
        ranker=dict(dim=8, epochs=2, batch_size=64, features=False, objective="listwise"),
        candidates=6, blend=1.0,
    ).fit(data)  # fmt: skip
    users = np.arange(12)
    ids, _ = model.recommend(users, 4)
    retrieval_ids, _ = model.retrieval_.recommend(users, 4)
    np.testing.assert_array_equal(ids, retrieval_ids)
    # score(): each user's unseen shortlist ranks first, everything else is finite and below it
    scores = model.score(users)
    assert torch.isfinite(scores).all()
    shortlisted = scores > -1000
    assert (shortlisted.sum(1) == 6).all()
    assert not (shortlisted.numpy() & (model.seen_.toarray() > 0)).any()


def test_negatives_come_from_the_users_shortlist_and_skip_padding_and_the_positive():
    dataset = gender_genre_dataset()
    liked = dataset.interactions.ratings == 5.0
    data = Interactions(dataset.interactions.users[liked], dataset.interactions.items[liked], 20, 6)
    lists = np.full((20, 4), -1)
    lists[:, 0] = (np.arange(20) % 2) * 3 + 1  # each user's list: one item they like, padding
    model = RankingModel(**{**FAST, "objective": "listwise", "features": False, "epochs": 1})
    model.fit(data, shortlists=lists)
    net = model.net_
    assert net.shortlists is None  # training only: a fitted model does not keep them
    net.shortlists = torch.as_tensor(lists)
    torch.manual_seed(0)
    users = torch.arange(20).repeat(5)
    items = torch.as_tensor(lists[users.numpy(), 0])  # the positive is the listed item itself
    negatives, invalid = net.draw_negatives(users, items)
    assert invalid.all()  # every draw is padding or the positive: nothing to push down
    users, items = torch.tensor([0, 1]), torch.tensor([0, 3])
    negatives, invalid = net.draw_negatives(users.repeat(50), items.repeat(50))
    assert set(negatives[~invalid].tolist()) == {1, 4}  # only the listed items
    with pytest.raises(RecfunnelError, match="one row per user"):
        RankingModel(**{**FAST, "objective": "listwise", "features": False}).fit(
            data, shortlists=lists[:5]
        )
    with pytest.raises(RecfunnelError, match="objective 'rating' has none"):
        RankingModel(**{**FAST, "features": False}).fit(dataset.interactions, shortlists=lists)


def test_two_stage_ranker_trains_on_the_retrieval_shortlists(monkeypatch):
    from recfunnel.data import checkerboard

    seen = {}
    original = RankingModel.fit

    def spy(self, train, **kwargs):
        seen["shortlists"] = kwargs.get("shortlists")
        return original(self, train, **kwargs)

    monkeypatch.setattr(RankingModel, "fit", spy)
    data = checkerboard(12, 16, seed=1)
    model = TwoStage(
        retrieval=dict(dim=8, epochs=3, batch_size=64, softmax="full", reduction="mean",
                       optimizer="adam", learning_rate=0.05),
        ranker=dict(dim=8, epochs=2, batch_size=64, features=False, objective="listwise"),
        candidates=5,
    ).fit(data)  # fmt: skip
    lists = seen["shortlists"]
    assert lists.shape == (12, 5)
    expected, _ = model.retrieval_.recommend(np.arange(12), 5)  # seen items excluded
    np.testing.assert_array_equal(lists.numpy(), expected)
    assert model.ranker_.net_.shortlists is None


def held_out_genre_ratings():
    """gender_genre_dataset with every user's rating of one item held out (item u % 6)."""
    dataset = gender_genre_dataset()
    data = dataset.interactions
    held = data.items == data.users % 6
    part = lambda m: Interactions(  # noqa: E731
        data.users[m], data.items[m], 20, 6, ratings=data.ratings[m], timestamps=data.timestamps[m]
    )
    return dataset, part(~held), part(held)


def test_item_autoencoder_predicts_held_out_ratings():
    from recfunnel.models.autoencoder import ItemAutoencoder

    _, train, test = held_out_genre_ratings()
    model = ItemAutoencoder.fit(train, hidden=8, l2=0.01, epochs=300, learning_rate=0.01,
                                batch_size=6)  # fmt: skip
    predicted = model.predict(torch.as_tensor(test.users), torch.as_tensor(test.items))
    error = (predicted.numpy() - test.ratings) ** 2
    assert np.sqrt(error.mean()) < 0.5  # ratings are 1 or 5: the mean alone is off by ~2
    scores = model.score(torch.as_tensor([0, 1]), torch.arange(6))
    torch.testing.assert_close(scores[0, 2], model.predict(torch.tensor([0]), torch.tensor([2]))[0])


def test_ranking_model_blends_the_autoencoder_and_saves_it(tmp_path):
    dataset, train, test = held_out_genre_ratings()
    params = {**FAST, "features": False, "autoencoder": 8, "autoencoder_l2": 0.01,
              "autoencoder_epochs": 100, "autoencoder_weight": 0.5}  # fmt: skip
    model = RankingModel(**params).fit(train)
    users, items = torch.as_tensor(test.users), torch.as_tensor(test.items)
    mixed = model.predict(test.users, test.items)
    model.config = model.config.override(autoencoder_weight=0.0)
    alone = model.predict(test.users, test.items)
    model.config = model.config.override(autoencoder_weight=1.0)
    auto = model.predict(test.users, test.items)
    expected = np.clip(model.autoencoder_.predict(users, items).numpy(), 1.0, 5.0)
    np.testing.assert_allclose(auto, expected, rtol=1e-5)
    inside = (alone > 1) & (alone < 5) & (auto > 1) & (auto < 5)  # no clipping
    assert inside.sum() >= 5
    np.testing.assert_allclose(mixed[inside], 0.5 * (alone + auto)[inside], rtol=1e-4)
    # ranking scores blend the same way; an unseen (OOV) user keeps the network's alone
    torch.testing.assert_close(
        model.score([0])[0], model.autoencoder_.score(users[:1] * 0, torch.arange(6))[0]
    )
    oov_blended = model.score([20])
    model.config = model.config.override(autoencoder_weight=0.0)
    torch.testing.assert_close(oov_blended, model.score([20]))
    model.config = model.config.override(autoencoder_weight=0.5)
    from recfunnel.models import model_class

    again = model_class("ranking").from_state(model.get_params(), model.state_tensors())
    np.testing.assert_allclose(again.predict(test.users, test.items), mixed, rtol=1e-6)
    with pytest.raises(RecfunnelError, match="objective 'rating'"):
        RankingModel(**{**params, "objective": "listwise"}).fit(train)


def test_an_autoencoder_that_cannot_fit_in_memory_is_refused_before_training(monkeypatch):
    """Its dense items x users rating matrix and users x hidden weights are sized up front,
    beside the network's own check: a catalogue too large for them fails in one line at the
    start, not with an allocation error after the network has trained."""
    from recfunnel.models import base, ranking

    _, train, _ = held_out_genre_ratings()
    budget = 200_000  # bytes: the network (about 1 KB of weights here) fits, hidden=2000 not
    monkeypatch.setattr(base, "available_memory", lambda: budget)
    monkeypatch.setattr(ranking, "available_memory", lambda: budget)
    trained = []
    monkeypatch.setattr(ranking.RankingModel, "_train", lambda *a, **k: trained.append(1))
    with pytest.raises(RecfunnelError, match=r"the item autoencoder \(autoencoder=2000\) needs"):
        RankingModel(**{**FAST, "features": False, "autoencoder": 2000}).fit(train)
    assert not trained
    RankingModel(**{**FAST, "features": False, "autoencoder": 2}).fit(train)  # a small one fits
    assert trained


def test_sparse_ranking_pools_a_batch_of_users_as_the_full_product_does():
    """With sparse updates the SVD++ term pools only the batch's users' histories: the same
    vectors as the product over every user's history (and an empty history pools to 0)."""
    _, train, _ = held_out_genre_ratings()
    history = train.to_csr().tolil()
    history[3] = 0  # user 3 has no history at all
    history = history.tocsr()
    history.eliminate_zeros()
    common = dict(dim=4, head="dot", hidden=(), cross_layers=0, cross_rank=None,
                  user_features=None, item_features=None, history=history, context_buckets=0,
                  objective="rating", negatives=1, l2=0.0, item_sampling=None, init_scale=0.1,
                  rating_mean=3.0)  # fmt: skip
    torch.manual_seed(0)
    dense = RankingNet(20, 6, **common)
    sparse = RankingNet(20, 6, **common, sparse=True)
    sparse.load_state_dict(dense.state_dict())
    users = torch.tensor([0, 3, 7, 7, 19, 20])  # a repeat and the OOV row
    torch.testing.assert_close(sparse.user_vectors(users)[0], dense.user_vectors(users)[0])
    assert sparse.user_vectors(torch.tensor([3]))[0].abs().sum() > 0  # its own embedding
    assert {id(p) for p in sparse.sparse_parameters()} >= {id(sparse.implicit.weight),
                                                           id(sparse.user_emb.weight)}  # fmt: skip
    assert dense.sparse_parameters() == []


def test_sparse_and_dense_sgd_ranking_fits_are_the_same():
    """Plain SGD moves exactly the rows a dense step moves (the L2 penalty reaches the batch's
    vectors only), so the sparse path, history pooling included, gives the dense fit."""
    _, train, test = held_out_genre_ratings()
    params = {**FAST, "features": False, "pool_seen_items": True, "epochs": 5, "l2": 0.01,
              "optimizer": "sgd", "learning_rate": 0.05, "seed": 2}  # fmt: skip
    fits = [RankingModel(**params, sparse_updates=s).fit(train) for s in (False, True)]
    assert fits[1].net_.sparse and not fits[0].net_.sparse
    torch.testing.assert_close(fits[1].net_.implicit.weight, fits[0].net_.implicit.weight)
    np.testing.assert_allclose(fits[1].predict(test.users, test.items),
                               fits[0].predict(test.users, test.items), rtol=1e-5)  # fmt: skip
    clone = RankingModel.from_state(fits[1].get_params(), fits[1].state_tensors())
    np.testing.assert_allclose(clone.predict(test.users, test.items),
                               fits[1].predict(test.users, test.items), rtol=1e-6)  # fmt: skip


def test_sparse_updates_unset_follow_the_table_size():
    from recfunnel.config import SPARSE_RANKING_ABOVE

    model = RankingModel(**FAST)
    assert model._sparse(SPARSE_RANKING_ABOVE, 1) is True
    assert model._sparse(943, 1682) is False
    assert RankingModel(**FAST, weight_decay=1e-4)._sparse(SPARSE_RANKING_ABOVE, 1) is False
    assert RankingModel(**FAST, sparse_updates=True)._sparse(943, 1682) is True
    _, train, _ = held_out_genre_ratings()
    fitted = RankingModel(**{**FAST, "features": False, "epochs": 1}).fit(train)
    assert fitted.fit_config_.sparse_updates is False
    with pytest.raises(RecfunnelError, match="weight_decay does not go with sparse updates"):
        RankingModel(**FAST, sparse_updates=True, weight_decay=0.1)
