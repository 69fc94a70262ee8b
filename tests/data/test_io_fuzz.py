"""Property tests of the command line's data readers: whatever a file holds, ``recfunnel train``
either trains or stops with one ``error:`` line and exit status 2 — never a traceback.

Deterministic in CI (the "ci" hypothesis profile in tests/conftest.py); ``python
benchmarks/fuzz.py`` runs the same properties with fresh seeds and a larger budget.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from recfunnel.cli import main

SUFFIXES = [".csv", ".tsv", ".jsonl", ".parquet", ".txt"]
COLUMNS = ["user", "item", "rating", "ts", "weight", "", "User", "\ufeffuser", "x,y", 'q"']
ROLE_FLAGS = {"rating": "--rating-col", "ts": "--time-col", "weight": "--weight-col"}

# Text that looks like what files hold: ids, numbers (also nan/inf/huge), dates, quotes.
cells = st.one_of(
    st.sampled_from(["u1", "u2", "i1", "i2", "i3", "", " ", "1", "0", "-1", "3.5", "nan", "inf",
                     "-inf", "1e308", "1e999", "2024-01-02", "2024-13-45T99:00", "\"", "a,b",
                     "line\nbreak", "\x00", "\ufeff", "9" * 30]),
    st.text(max_size=12),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)  # fmt: skip
json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
    st.sampled_from(["u1", "u2", "i1", "i2", "2024-01-02"]),
)  # fmt: skip
json_values = st.recursive(
    json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4),
                                                                             inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def fresh(work: Path, suffix: str) -> Path:
    return work / f"{uuid.uuid4().hex}{suffix}"


def train_on(path: Path, roles: list[str], capsys, *extra: str) -> None:
    """Train most-popular on ``path`` (fast); the test fails on any exception main lets out."""
    argv = ["train", "--train", str(path), "--model", "most-popular", "--json", *extra]
    for role in roles:
        argv += [ROLE_FLAGS[role], role]
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if code != 0:
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    path.unlink(missing_ok=True)


optional_roles = st.lists(st.sampled_from(sorted(ROLE_FLAGS)), unique=True, max_size=3)


@given(data=st.binary(max_size=3000), suffix=st.sampled_from(SUFFIXES), roles=optional_roles)
def test_random_bytes(work, capsys, data, suffix, roles):
    path = fresh(work, suffix)
    path.write_bytes(data)
    train_on(path, roles, capsys)


@given(
    header=st.lists(st.sampled_from(COLUMNS), min_size=0, max_size=6),
    rows=st.lists(st.lists(cells, max_size=7), max_size=40),
    delimiter=st.sampled_from([",", "\t", ";"]),
    suffix=st.sampled_from([".csv", ".tsv"]),
    bom=st.booleans(),
    extra=st.sampled_from(["", 'u9,i9,"unclosed\n', "u9," + "x" * 140_000 + "\n", "\x00,\x00\n"]),
    roles=optional_roles,
)
def test_random_csv_shapes(work, capsys, header, rows, delimiter, suffix, bom, extra, roles):
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter)
    writer.writerow(header)
    writer.writerows(rows)
    buffer.write(extra)  # a last line no csv.writer would write: unclosed quote, huge field
    path = fresh(work, suffix)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + buffer.getvalue().encode("utf-8"))
    train_on(path, roles, capsys)


@given(
    rows=st.lists(
        st.one_of(
            st.fixed_dictionaries(
                {"user": json_values, "item": json_values},
                optional={"rating": json_values, "ts": json_values, "weight": json_values},
            ),  # fmt: skip
            json_values,
        ),
        max_size=30,
    ),
    extra=st.sampled_from(
        [
            "",
            "[" * 100_000 + "]" * 100_000,
            '{"user": 1' + "0" * 5000 + "}",
            '{"user": NaN, "item": Infinity}',
            "{nope",
        ]
    ),
    roles=optional_roles,
)
def test_random_json_lines(work, capsys, rows, extra, roles):
    path = fresh(work, ".jsonl")
    lines = [json.dumps(r) for r in rows] + [extra]  # a line json.dumps would not write
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    train_on(path, roles, capsys)


def arrow_columns():
    """(pyarrow type, strategy of one python value of that type, nulls included)."""
    pa = pytest.importorskip("pyarrow")
    kinds = [
        (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
        (pa.int8(), st.integers(-128, 127)),
        (pa.float64(), st.floats(allow_nan=True)),
        (pa.string(), cells),
        (pa.large_string(), cells),
        (pa.binary(), st.binary(max_size=6)),
        (pa.bool_(), st.booleans()),
        (pa.list_(pa.int64()), st.lists(st.integers(-5, 5), max_size=3)),
        (pa.struct([("a", pa.int64())]), st.fixed_dictionaries({"a": st.integers(-5, 5)})),
        (pa.null(), st.none()),
        (pa.dictionary(pa.int32(), pa.string()), st.sampled_from(["u1", "u2", "i1", "i3", ""])),
        (pa.timestamp("s"), st.integers(0, 2**33)),
        (pa.date32(), st.integers(-(10**5), 10**5)),
    ]
    return st.sampled_from(kinds).flatmap(
        lambda kv: st.tuples(st.just(kv[0]), st.just(st.one_of(st.none(), kv[1])))
    )


@given(data=st.data(), n=st.integers(0, 30), roles=optional_roles)
def test_random_parquet_schemas(work, capsys, data, n, roles):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    names = data.draw(st.lists(st.sampled_from(["user", "item", *ROLE_FLAGS, "other"]),
                               unique=True, max_size=6), label="columns")  # fmt: skip
    columns = {}
    for name in names:
        kind, values = data.draw(arrow_columns(), label=f"type of {name}")
        drawn = data.draw(st.lists(values, min_size=n, max_size=n), label=name)
        if pa.types.is_dictionary(kind):
            columns[name] = pa.array(drawn, type=pa.string()).dictionary_encode()
        else:
            columns[name] = pa.array(drawn, type=kind)
    path = fresh(work, ".parquet")
    pq.write_table(pa.table(columns) if columns else pa.table({}), path)
    train_on(path, roles, capsys)


@given(
    header=st.lists(st.sampled_from(["item", "genre", "year", "", "item"]), max_size=4),
    rows=st.lists(st.lists(cells, max_size=5), max_size=20),
    suffix=st.sampled_from([".csv", ".jsonl", ".parquet"]),
)
def test_random_item_feature_files(work, capsys, train_csv, header, rows, suffix):
    path = fresh(work, suffix)
    records = [dict(zip(header, row, strict=False)) for row in rows]
    if suffix == ".csv":
        buffer = io.StringIO()
        csv.writer(buffer).writerows([header, *rows])
        path.write_text(buffer.getvalue(), encoding="utf-8")
    elif suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        names = list(dict.fromkeys(header))
        pq.write_table(pa.table({n: [r.get(n) for r in records] for n in names}), path)
    argv = ["--item-features", str(path)]
    # a model that reads side features (most-popular refuses --item-features up front); one
    # tiny epoch of the ids-only seed ranker keeps each example fast
    code = main(["train", "--train", str(train_csv), "--model", "ranking", "--preset", "seed",
                 "--epochs", "1", "--dim", "2", "--json", *argv])  # fmt: skip
    err = capsys.readouterr().err
    if code != 0:
        assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
