import json

import pytest

from recfunnel.data import Columns, dataset_from_files, read_interactions
from recfunnel.errors import DataError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("d.csv", "u,i,r\na,x,5\nb,y,3\n"),
        ("d.tsv", "u\ti\tr\na\tx\t5\nb\ty\t3\n"),
        ("d.jsonl", '{"u": "a", "i": "x", "r": 5}\n{"u": "b", "i": "y", "r": 3}\n'),
    ],
)
def test_reads_each_text_format(tmp_path, name, text):
    raw = read_interactions(write(tmp_path / name, text), Columns("u", "i", rating="r"))
    assert raw.users == ["a", "b"] and raw.items == ["x", "y"]
    assert raw.ratings.tolist() == [5.0, 3.0]


def test_reads_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"u": [1, 2], "i": ["x", "y"]}), tmp_path / "d.parquet")
    raw = read_interactions(tmp_path / "d.parquet", Columns("u", "i"))
    assert raw.users == ["1", "2"]


def test_bad_files_get_one_line_errors(tmp_path):
    cols = Columns("u", "i", rating="r")
    with pytest.raises(DataError, match="file not found"):
        read_interactions(tmp_path / "missing.csv", cols)
    with pytest.raises(
        DataError, match=r"column 'r' \(rating\) is not in .* Columns\(rating="
    ) as e:
        read_interactions(write(tmp_path / "a.csv", "u,i\na,x\n"), cols)
    assert e.value.for_cli().endswith("pass --rating-col with one of them")  # the CLI's words
    with pytest.raises(DataError, match="'bad' in row 2 .* is not a number"):
        read_interactions(write(tmp_path / "b.csv", "u,i,r\na,x,1\nb,y,bad\n"), cols)
    with pytest.raises(DataError, match="has no rows"):
        read_interactions(write(tmp_path / "c.csv", "u,i,r\n"), cols)
    with pytest.raises(DataError, match="format"):
        read_interactions(write(tmp_path / "d.xls", "u,i\n"), cols)
    with pytest.raises(DataError, match="not valid JSON"):
        read_interactions(write(tmp_path / "e.jsonl", "{nope\n"), cols)
    for line in ("\n".join(["u,i,r", "a,x,1", "a,x,2"]),):
        with pytest.raises(DataError, match="1 repeated .* duplicates='keep'"):
            dataset_from_files(write(tmp_path / "f.csv", line + "\n"), cols, duplicates="error")


def test_duplicates_can_be_merged(tmp_path):
    path = write(tmp_path / "f.csv", "u,i,r\na,x,1\na,x,3\nb,y,2\n")
    dataset, _ = dataset_from_files(path, Columns("u", "i", rating="r"), duplicates="mean")
    assert len(dataset.interactions) == 2
    assert sorted(dataset.interactions.ratings.tolist()) == [2.0, 2.0]


def test_dataset_vocabularies_come_from_the_file(tmp_path):
    rows = [{"user": "u1", "item": "i1"}, {"user": "u2", "item": "i1"}]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows))
    dataset, _ = dataset_from_files(path, Columns())
    assert dataset.users.ids == ["u1", "u2"] and dataset.items.ids == ["i1"]
