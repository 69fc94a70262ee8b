"""pandas / Arrow entry points and recommendations back as a DataFrame."""

from __future__ import annotations

import numpy as np
import pytest

from recfunnel.data import Dataset, Interactions
from recfunnel.errors import DataError

pd = pytest.importorskip("pandas")


@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "uid": ["alice", "bob", "alice", "carol", "bob"],
            "movie": [10, 20, 30, 10, 10],
            "stars": [5.0, 3.0, 4.0, 2.0, 1.0],
            "when": pd.to_datetime(
                ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04", "2024-01-05"]
            ),
            "name": ["Ten", "Twenty", "Thirty", "Ten", "Ten"],
        }
    )


def test_dataset_from_pandas_maps_raw_ids(frame):
    ds = Dataset.from_pandas(frame, user_col="uid", item_col="movie", rating_col="stars",
                             time_col="when", title_col="name")  # fmt: skip
    assert ds.users.ids == ["alice", "bob", "carol"]
    assert ds.items.ids == ["10", "20", "30"]  # ints become raw-id strings, no ".0"
    inter = ds.interactions
    assert inter.users.tolist() == [0, 1, 0, 2, 1] and inter.items.tolist() == [0, 1, 2, 0, 0]
    assert inter.ratings.tolist() == [5.0, 3.0, 4.0, 2.0, 1.0]
    assert inter.timestamps[0] == 1704067200  # 2024-01-01T00:00:00Z in epoch seconds
    assert ds.item_titles == ["Ten", "Twenty", "Thirty"]


def test_dataset_from_arrow_matches_pandas(frame):
    pa = pytest.importorskip("pyarrow")
    table = pa.Table.from_pandas(frame)
    a = Dataset.from_arrow(table, user_col="uid", item_col="movie", rating_col="stars",
                           time_col="when")  # fmt: skip
    b = Dataset.from_pandas(frame, user_col="uid", item_col="movie", rating_col="stars",
                            time_col="when")  # fmt: skip
    assert a.users == b.users and a.items == b.items
    for name in ("users", "items", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(a.interactions, name), getattr(b.interactions, name))


def test_errors_speak_python(frame):
    with pytest.raises(DataError, match=r"'user' \(user\) is not in the frame.*user_col="):
        Dataset.from_pandas(frame, item_col="movie")
    doubled = pd.concat([frame, frame.iloc[:1]])
    with pytest.raises(DataError, match="1 duplicate.*duplicates='first'"):
        Dataset.from_pandas(doubled, user_col="uid", item_col="movie")
    kept = Dataset.from_pandas(doubled, user_col="uid", item_col="movie", duplicates="first")
    assert len(kept.interactions) == 5
    holes = frame.assign(uid=["alice", None, "bob", "carol", "bob"])
    with pytest.raises(DataError, match="row 2 of the frame has no user"):
        Dataset.from_pandas(holes, user_col="uid", item_col="movie")
    with pytest.raises(DataError, match="not integer indices; use Dataset.from_pandas"):
        Interactions.from_pandas(frame, user_col="uid", item_col="movie")


def test_interactions_from_pandas_takes_dense_indices():
    df = pd.DataFrame({"u": [0, 1, 1, 3], "i": [2, 0, 1, 2], "w": [1.0, 2.0, 0.5, 1.0]})
    inter = Interactions.from_pandas(df, user_col="u", item_col="i", weight_col="w")
    assert (inter.num_users, inter.num_items) == (4, 3)
    assert inter.weights.tolist() == [1.0, 2.0, 0.5, 1.0]
    wide = Interactions.from_pandas(df, user_col="u", item_col="i", num_items=10)
    assert wide.num_items == 10


def test_recommend_frame(tmp_path):
    from recfunnel.models import MostPopular
    from recfunnel.runs import Run

    df = pd.DataFrame({"user": list("aabbbc"), "item": ["x", "y", "x", "z", "w", "x"]})
    ds = Dataset.from_pandas(df, title_col="item")
    run = Run(MostPopular().fit(ds.interactions), ds.users, ds.items, item_titles=ds.item_titles)
    out = run.recommend_frame(["a", "c", "nobody"], k=2)
    assert list(out.columns) == ["user", "rank", "item", "score", "title"]
    assert out["user"].tolist() == ["a", "a", "c", "c", "nobody", "nobody"]
    assert out["rank"].tolist() == [1, 2, 1, 2, 1, 2]
    assert "x" not in out[out.user == "a"]["item"].tolist()  # seen items excluded
    assert out[out.user == "nobody"]["item"].tolist()[0] == "x"  # cold start: most popular
