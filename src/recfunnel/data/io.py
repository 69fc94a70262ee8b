"""Reading generic interaction files: CSV, TSV, JSON Lines and Parquet with named columns."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from recfunnel.data.dataset import Dataset
from recfunnel.data.interactions import Interactions
from recfunnel.data.vocab import Vocabulary
from recfunnel.errors import DataError

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".txt": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}


@dataclass
class Columns:
    """Which column holds what. ``rating``, ``time`` and ``weight`` are optional."""

    user: str = "user"
    item: str = "item"
    rating: str | None = None
    time: str | None = None
    weight: str | None = None

    def wanted(self) -> dict[str, str]:
        roles = {"user": self.user, "item": self.item}
        roles.update(
            {
                r: c
                for r, c in (("rating", self.rating), ("time", self.time), ("weight", self.weight))
                if c
            }
        )
        return roles


@dataclass
class RawInteractions:
    """Rows as read from a file, ids still raw strings."""

    users: list[str]
    items: list[str]
    ratings: np.ndarray | None
    timestamps: np.ndarray | None
    weights: np.ndarray | None
    path: str

    def __len__(self) -> int:
        return len(self.users)


def _read_rows(path: Path, fmt: str) -> tuple[list[str], list[dict]]:
    if fmt in ("csv", "tsv"):
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh, delimiter="," if fmt == "csv" else "\t")
            rows = list(reader)
            return list(reader.fieldnames or []), rows
    if fmt == "jsonl":
        rows, names = [], {}
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}:{lineno} is not valid JSON ({exc.msg}); fix it"
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno} is not a JSON object; write one per line")
                names.update(dict.fromkeys(row))
                rows.append(row)
        return list(names), rows
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "reading Parquet needs pyarrow; install it with: pip install 'recfunnel[parquet]'"
        ) from None
    table = pq.read_table(path)
    return table.column_names, table  # a table, handled column-wise below


def _column(rows, name: str, path: Path):
    if hasattr(rows, "column"):  # pyarrow table
        return rows.column(name).to_pylist()
    return [row.get(name) for row in rows]


def _numbers(values: list, role: str, column: str, path: Path) -> np.ndarray:
    out = np.empty(len(values), dtype=np.float64)
    for i, value in enumerate(values):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if math.isnan(number):
            raise DataError(
                f"{role} {value!r} in row {i + 1} of {path} (column {column!r}) is not a number; "
                "fix or drop that row"
            )
        out[i] = number
    return out


def _timestamps(values: list, column: str, path: Path) -> np.ndarray:
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        try:
            out[i] = int(float(value))
            continue
        except (TypeError, ValueError):
            pass
        try:
            out[i] = int(datetime.fromisoformat(str(value)).timestamp())
        except ValueError:
            raise DataError(
                f"time {value!r} in row {i + 1} of {path} (column {column!r}) is neither epoch "
                "seconds nor an ISO date; fix that row"
            ) from None
    return out


def read_table(path: Path, missing: str) -> tuple[list[str], object]:
    """Column names and rows of a CSV/TSV/JSONL/Parquet file (format from the extension).

    ``missing`` is the error message when the file does not exist. Raises :class:`DataError`
    for an unknown extension, text that is not UTF-8, or an unreadable file.
    """
    if not path.is_file():
        raise DataError(missing)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataError(
            f"cannot tell the format of {path}: use a .csv, .tsv, .jsonl or .parquet file"
        )
    try:
        return _read_rows(path, fmt)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; re-encode it as UTF-8") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_interactions(path: str | Path, columns: Columns) -> RawInteractions:
    """Read one interaction file, or a folder of Parquet files.

    The format follows the extension (``.csv``, ``.tsv``, ``.jsonl``, ``.parquet``). Parquet is
    read column-wise (:mod:`recfunnel.data.columnar`): ids come back as an ``IdColumn``. Raises
    :class:`DataError` for a missing file, unknown columns, non-numeric ratings, or no rows.
    """
    path = Path(path)
    if path.is_dir() or (path.is_file() and FORMATS.get(path.suffix.lower()) == "parquet"):
        from recfunnel.data.columnar import read_parquet_interactions

        return read_parquet_interactions(path, columns)  # column-wise, ids as an IdColumn
    names, rows = read_table(path, f"file not found: {path}; check the path")
    for role, column in columns.wanted().items():
        if column not in names:
            raise DataError(
                f"column {column!r} ({role}) is not in {path} (columns: {', '.join(names)}); "
                f"pass --{role}-col with one of them"
            )
    n = rows.num_rows if hasattr(rows, "num_rows") else len(rows)
    if n == 0:
        raise DataError(f"{path} has no rows; give a file with at least one interaction")
    users = _column(rows, columns.user, path)
    items = _column(rows, columns.item, path)
    for role, values in (("user", users), ("item", items)):
        missing = [i for i, v in enumerate(values) if v is None or str(v) == ""]
        if missing:
            raise DataError(
                f"row {missing[0] + 1} of {path} has no {role} id; fill or drop such rows"
            )
    ratings = timestamps = weights = None
    if columns.rating:
        ratings = _numbers(_column(rows, columns.rating, path), "rating", columns.rating, path)
    if columns.weight:
        weights = _numbers(_column(rows, columns.weight, path), "weight", columns.weight, path)
        if (weights < 0).any():
            bad = int(np.flatnonzero(weights < 0)[0])
            raise DataError(
                f"weight in row {bad + 1} of {path} is negative; confidences must be >= 0"
            )
    if columns.time:
        timestamps = _timestamps(_column(rows, columns.time, path), columns.time, path)
    return RawInteractions(
        users=[str(u) for u in users],
        items=[str(i) for i in items],
        ratings=ratings,
        timestamps=timestamps,
        weights=weights,
        path=str(path),
    )


def encode(
    raw: RawInteractions, users: Vocabulary, items: Vocabulary, *, duplicates: str = "error"
) -> tuple[Interactions, int]:
    """Encode raw rows against vocabularies, dropping rows with unknown ids.

    Returns the interactions and the number of rows dropped as out-of-vocabulary.
    """
    u, i = (  # an IdColumn (Parquet) encodes each distinct id once
        ids.encode(vocabulary) if hasattr(ids, "uniques") else vocabulary.encode(ids)
        for ids, vocabulary in ((raw.users, users), (raw.items, items))
    )
    known = (u != users.oov_index) & (i != items.oov_index)

    def keep(a):
        return None if a is None else a[known]

    inter = Interactions(
        users=u[known],
        items=i[known],
        num_users=len(users),
        num_items=len(items),
        ratings=keep(raw.ratings),
        timestamps=keep(raw.timestamps),
        weights=keep(raw.weights),
    )
    dup = inter.duplicate_pairs()
    if dup:
        if duplicates == "error":
            raise DataError(
                f"{raw.path} has {dup} duplicate (user, item) rows; remove them or pass "
                "--duplicates first|last|mean"
            )
        inter = inter.deduplicate(duplicates)
    return inter, int((~known).sum())


def dataset_from_files(
    train_path: str | Path,
    columns: Columns,
    *,
    duplicates: str = "error",
) -> tuple[Dataset, RawInteractions]:
    """Build a dataset whose vocabularies come from the training file."""
    raw = read_interactions(train_path, columns)
    users, items = (  # an IdColumn (Parquet) knows its distinct ids
        ids.vocabulary(name) if hasattr(ids, "uniques") else Vocabulary.from_values(ids, name=name)
        for ids, name in ((raw.users, "user"), (raw.items, "item"))
    )
    inter, _ = encode(raw, users, items, duplicates=duplicates)
    dataset = Dataset(
        interactions=inter,
        users=users,
        items=items,
        name=Path(train_path).name,
        source={"train": str(Path(train_path).resolve()), "columns": columns.__dict__},
    )
    return dataset, raw
