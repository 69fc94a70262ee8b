"""Side features: encoding with OOV buckets, JSON round trip, and feature files."""

import numpy as np
import pytest

from recfunnel.data import Dataset, Interactions, Vocabulary
from recfunnel.errors import DataError
from recfunnel.features import (
    FeatureSpec,
    TimeBuckets,
    infer_column,
    json_tensor,
    read_feature_file,
    tensor_json,
    title_tokens,
)


def small_dataset():
    users = Vocabulary(["a", "b", "c"], name="user")
    items = Vocabulary(["x", "y"], name="item")
    return Dataset(
        interactions=Interactions([0, 1, 2], [0, 1, 0], 3, 2),
        users=users,
        items=items,
        item_titles=["Heat (1995)", "Heat Wave (1990)"],
        user_table={
            "age": np.array([17, 30, 60]),
            "gender": np.array(["F", "M", "F"]),
            "zip": np.array(["94043", "10001", "94110"]),
        },
        item_table={"genres": np.array([[1, 0, 1], [0, 1, 0]], np.float32)},
    )


def test_title_tokens_drop_the_year():
    assert title_tokens("Heat Wave (1990)") == ["heat", "wave"]


def test_user_features_encode_known_values_and_oov():
    spec = FeatureSpec.from_dataset(small_dataset())
    labels = spec.user.labels()
    # age buckets <18, 18-25, 25-35, 35-45, 45-50, 50-56, >=56, oov; gender F, M, oov; zip 10, 94
    assert labels[:8] == ["age=<18", "age=18-25", "age=25-35", "age=35-45", "age=45-50",
                          "age=50-56", "age=>=56", "age=<oov>"]  # fmt: skip
    assert labels[8:] == ["gender=F", "gender=M", "gender=<oov>", "zip=10", "zip=94", "zip=<oov>"]
    encoded = spec.user.encode({"age": [30], "gender": ["X"], "zip": ["94999"]}, 1)
    names = sorted(labels[i] for i in encoded.ids[0].tolist())
    assert names == ["age=25-35", "gender=<oov>", "zip=94"]
    missing = spec.user.encode({}, 1)  # no columns at all: every column's OOV bucket
    assert sorted(labels[i] for i in missing.ids[0].tolist()) == [
        "age=<oov>", "gender=<oov>", "zip=<oov>",
    ]  # fmt: skip


def test_item_features_multi_hot_and_title_tokens():
    dataset = small_dataset()
    spec = FeatureSpec.from_dataset(dataset)
    labels = spec.item.labels()
    assert labels == ["genres=0", "genres=1", "genres=2", "title=heat", "title=<oov>"]
    encoded = spec.item.encode(spec.item_table(dataset), 2)
    first = {
        labels[i]: w
        for i, w in zip(encoded.ids[0].tolist(), encoded.weights[0].tolist(), strict=True)
        if w
    }
    assert first == pytest.approx({"genres=0": 0.5**0.5, "genres=2": 0.5**0.5, "title=heat": 1.0})
    second = {
        labels[i]: w
        for i, w in zip(encoded.ids[1].tolist(), encoded.weights[1].tolist(), strict=True)
        if w
    }
    # "wave" was seen once only, so it falls into the title OOV bucket
    assert second == pytest.approx(
        {"genres=1": 1.0, "title=heat": 0.5**0.5, "title=<oov>": 0.5**0.5}
    )


def test_spec_json_round_trip_encodes_identically():
    dataset = small_dataset()
    spec = FeatureSpec.from_dataset(dataset, timestamps=np.arange(100))
    again = FeatureSpec.from_json(tensor_json(json_tensor(spec.to_json())))
    a = spec.user.encode(dataset.user_table, 3)
    b = again.user.encode(dataset.user_table, 3)
    assert (a.ids == b.ids).all() and (a.weights == b.weights).all()
    assert again.context.boundaries == spec.context.boundaries


def test_time_buckets_cut_at_quantiles():
    buckets = TimeBuckets.fit(np.arange(100), buckets=4)
    import torch

    assert buckets.encode(torch.tensor([0, 30, 60, 99])).tolist() == [0, 1, 2, 3]


def test_numeric_columns_are_bucketized_with_nan_as_oov():
    column = infer_column("score", np.arange(100, dtype=float))
    assert column.kind == "bucket" and len(column.boundaries) == 9
    assert column.encode([np.nan])[0][0][0] == len(column.boundaries) + 1


def test_feature_file_reads_named_columns(tmp_path):
    path = tmp_path / "users.csv"
    path.write_text("user,age,city\na,31,paris\nc,,rome\nzzz,40,oslo\n")
    table = read_feature_file(str(path), "user", Vocabulary(["a", "b", "c"]), "user")
    assert table["age"][0] == 31 and np.isnan(table["age"][1]) and np.isnan(table["age"][2])
    assert table["city"].tolist() == ["paris", "", "rome"]


def test_feature_file_errors_name_the_problem(tmp_path):
    vocab = Vocabulary(["a"])
    with pytest.raises(DataError, match="feature file not found"):
        read_feature_file(str(tmp_path / "nope.csv"), "user", vocab, "user")
    bad = tmp_path / "users.csv"
    bad.write_text("id,age\na,3\n")
    with pytest.raises(DataError, match="no 'user' column"):
        read_feature_file(str(bad), "user", vocab, "user")
    only_ids = tmp_path / "ids.csv"
    only_ids.write_text("user\na\n")
    with pytest.raises(DataError, match="no feature columns"):
        read_feature_file(str(only_ids), "user", vocab, "user")
    weird = tmp_path / "users.xlsx"
    weird.write_text("x")
    with pytest.raises(DataError, match="cannot tell the format"):
        read_feature_file(str(weird), "user", vocab, "user")
