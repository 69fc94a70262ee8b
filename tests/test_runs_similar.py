"""Run.similar_items: raw ids in, the model's closest items out, the item and its title out."""

import numpy as np
import pytest

from recfunnel.data import Vocabulary, checkerboard
from recfunnel.errors import RecfunnelError, UnknownIdError
from recfunnel.models import TwoTower
from recfunnel.runs import Run


@pytest.fixture
def run():
    model = TwoTower(dim=4, epochs=2, softmax="full", reduction="mean", optimizer="adam",
                     learning_rate=0.05).fit(checkerboard(6, 8, seed=0))  # fmt: skip
    users = Vocabulary([f"u{i}" for i in range(6)], name="user")
    items = Vocabulary([f"i{i}" for i in range(8)], name="item")
    titles = ["Same", "Same"] + [f"Film {i}" for i in range(2, 8)]  # i0 and i1 share a title
    return Run(model, users, items, item_titles=titles)


def test_similar_items_match_the_model(run):
    rec = run.similar_items("i4", 3)
    ids, scores = run.model.similar_items(4, 3)
    assert rec.items == run.items.decode(ids) and np.allclose(rec.scores, scores)
    assert "i4" not in rec.items


def test_an_item_sharing_the_query_title_is_not_similar_to_itself(run):
    rec = run.similar_items("i0", 6)
    assert "i0" not in rec.items and "i1" not in rec.items and len(rec.items) == 6


def test_bad_input(run):
    with pytest.raises(UnknownIdError, match="unknown item 'nope'"):
        run.similar_items("nope")
    with pytest.raises(RecfunnelError, match="larger than the catalogue"):
        run.similar_items("i0", 8)
