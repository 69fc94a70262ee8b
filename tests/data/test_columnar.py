"""Parquet ingest, column-wise: a file or a folder, the same answer as the row-wise readers."""

import numpy as np
import pytest

from recfunnel.data import Columns, dataset_from_files, read_interactions
from recfunnel.data.columnar import IdColumn
from recfunnel.data.io import encode
from recfunnel.errors import DataError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ROWS = {
    "u": ["b", "a", "b", "c", "a", "d"],
    "i": [10, 11, 12, 10, 13, 11],
    "r": [5.0, 3.0, 4.0, 1.0, 2.0, 5.0],
    "t": [1, 2, 3, 4, 5, 6],
}
COLUMNS = Columns("u", "i", rating="r", time="t")


def write_csv(path):
    lines = ["u,i,r,t"] + [",".join(str(ROWS[c][j]) for c in "uirt") for j in range(6)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_file_and_a_folder_give_what_the_csv_reader_gives(tmp_path):
    want, _ = dataset_from_files(write_csv(tmp_path / "d.csv"), COLUMNS)
    pq.write_table(pa.table(ROWS), tmp_path / "d.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    table = pa.table(ROWS)
    pq.write_table(table.slice(0, 2), folder / "part-0.parquet")
    pq.write_table(table.slice(2, 3), folder / "part-1.parquet")
    pq.write_table(table.slice(5), folder / "part-2.parquet")
    pq.write_table(table.slice(0, 1), folder / "_ignored.parquet")
    (folder / "notes.txt").write_text("not data")
    for path in (tmp_path / "d.parquet", folder):
        got, raw = dataset_from_files(path, COLUMNS)
        assert isinstance(raw.users, IdColumn)
        assert got.users == want.users and got.items == want.items
        assert got.users.ids == ["b", "a", "c", "d"]  # first-seen order
        for name in ("users", "items", "ratings", "timestamps"):
            assert np.array_equal(getattr(got.interactions, name),
                                  getattr(want.interactions, name)), name  # fmt: skip


def test_test_rows_encode_against_the_training_vocabulary(tmp_path):
    pq.write_table(pa.table(ROWS), tmp_path / "train.parquet")
    pq.write_table(pa.table({"u": ["a", "zz", "d"], "i": [10, 10, 99]}), tmp_path / "test.pq")
    dataset, _ = dataset_from_files(tmp_path / "train.parquet", COLUMNS)
    test, dropped = encode(read_interactions(tmp_path / "test.pq", Columns("u", "i")),
                           dataset.users, dataset.items)  # fmt: skip
    assert dropped == 2  # an unknown user, an unknown item
    assert test.users.tolist() == [dataset.users.index("a")]
    assert test.items.tolist() == [dataset.items.index("10")]


def test_id_column_reads_like_a_list():
    ids = IdColumn(["x", "y"], np.array([1, 0, 1]))
    assert ids == ["y", "x", "y"] and len(ids) == 3 and ids[0] == "y" and ids[1:] == ["x", "y"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"u": ["a", None], "i": [1, 2], "r": [1, 2]}, "row 2 of .* has no user id"),
        ({"u": ["a", ""], "i": [1, 2], "r": [1, 2]}, "row 2 of .* has no user id"),
        ({"u": ["a", "b"], "i": [1, None], "r": [1, 2]}, "row 2 of .* has no item id"),
        ({"u": ["a", "b"], "i": [1, 2], "r": ["5", "bad"]}, "'bad' in row 2 .* is not a number"),
        ({"u": ["a", "b"], "i": [1, 2], "r": [5.0, None]}, "None in row 2 .* is not a number"),
        ({"u": ["a"], "i": [1], "x": [1]}, r"column 'r' \(rating\) is not in"),
        (
            {
                "u": pa.array([], pa.string()),
                "i": pa.array([], pa.int64()),
                "r": pa.array([], pa.float64()),
            },
            "has no rows",
        ),  # fmt: skip
    ],
)
def test_bad_parquet_gets_the_row_wise_errors(tmp_path, table, message):
    pq.write_table(pa.table(table), tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=message):
        read_interactions(tmp_path / "bad.parquet", Columns("u", "i", rating="r"))


def test_bad_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="folder without .parquet files"):
        read_interactions(empty, Columns("u", "i"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    pq.write_table(pa.table({"u": ["a"], "i": [1]}), mixed / "a.parquet")
    pq.write_table(pa.table({"u": ["b"], "i": ["x"]}), mixed / "b.parquet")
    with pytest.raises(DataError, match="do not share one schema"):
        read_interactions(mixed, Columns("u", "i"))
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(DataError, match="cannot read .* as Parquet"):
        read_interactions(tmp_path / "junk.parquet", Columns("u", "i"))


def test_iso_dates_and_float_times(tmp_path):
    pq.write_table(pa.table({"u": ["a", "b"], "i": [1, 2], "t": ["2020-01-01", "1970-01-02"]}),
                   tmp_path / "iso.parquet")  # fmt: skip
    raw = read_interactions(tmp_path / "iso.parquet", Columns("u", "i", time="t"))
    assert raw.timestamps[1] - raw.timestamps[0] < 0
    pq.write_table(pa.table({"u": ["a"], "i": [1], "t": [7.9]}), tmp_path / "f.parquet")
    assert read_interactions(tmp_path / "f.parquet", Columns("u", "i", time="t")).timestamps[0] == 7


def test_integer_ids_over_several_files_and_row_groups(tmp_path):
    users = np.array([7, 3, 7, 9, 3, 1, 9, 7], dtype=np.int64)
    items = np.array([100, 5, 5, 100, 42, 5, 8, 42], dtype=np.int32)
    folder = tmp_path / "parts"
    folder.mkdir()
    table = pa.table({"user": users, "item": items})
    pq.write_table(table.slice(0, 5), folder / "a.parquet", row_group_size=2)
    pq.write_table(table.slice(5), folder / "b.parquet", row_group_size=2)
    dataset, raw = dataset_from_files(folder, Columns())
    assert dataset.users.ids == ["7", "3", "9", "1"] and dataset.items.ids == [
        "100",
        "5",
        "42",
        "8",
    ]
    assert dataset.interactions.users.tolist() == [0, 1, 0, 2, 1, 3, 2, 0]
    assert dataset.interactions.items.tolist() == [0, 1, 1, 0, 2, 1, 3, 2]
    assert list(raw.users) == [str(u) for u in users]
    # a test file with integer ids encodes against the string vocabulary
    pq.write_table(pa.table({"user": [9, 4], "item": [8, 8]}), tmp_path / "test.parquet")
    test, dropped = encode(read_interactions(tmp_path / "test.parquet", Columns()),
                           dataset.users, dataset.items)  # fmt: skip
    assert dropped == 1 and test.users.tolist() == [2] and test.items.tolist() == [3]
