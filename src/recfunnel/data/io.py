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
        # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column name
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh, delimiter="," if fmt == "csv" else "\t")
            try:
                rows = list(reader)
            except csv.Error as exc:
                raise DataError(
                    f"cannot read line {reader.line_num} of {path} as {fmt.upper()} ({exc}); close "
                    "every opened quote and keep each field under 128 KiB"
                ) from None
            return list(reader.fieldnames or []), rows
    if fmt == "jsonl":
        rows, names = [], {}
        with path.open(encoding="utf-8-sig") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"{path}:{lineno} is not valid JSON ({exc.msg}); fix it"
                    ) from None
                except (ValueError, RecursionError) as exc:  # 100k-deep nesting, huge numbers
                    what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
                    raise DataError(
                        f"{path}:{lineno} cannot be read as JSON ({what}); write one flat "
                        "object per line"
                    ) from None
                if not isinstance(row, dict):
                    raise DataError(f"{path}:{lineno} is not a JSON object; write one per line")
                names.update(dict.fromkeys(row))
                rows.append(row)
        return list(names), rows
    return _read_parquet(path)


def _read_parquet(path: Path):
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "reading Parquet needs pyarrow; install it with: pip install 'recfunnel[parquet]'"
        ) from None
    try:
        table = pq.read_table(path)
    except pa.ArrowException as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"cannot read {path} as Parquet ({first}); give a Parquet file, or name a CSV file .csv"
        ) from None
    names = table.column_names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{path} has several columns named {twice[0]!r}; rename them")
    return names, table  # a table, handled column-wise below


def arrow_id_column(column, name: str, role: str, path: Path):
    """A pyarrow id column checked to hold strings or integers (dictionary-encoded ones
    decoded): a float, list, struct or binary column would become texts like "0.0" that match
    nothing, so it is refused with one line."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):
        column = column.cast(kind.value_type)
        kind = kind.value_type
    if pa.types.is_integer(kind) or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return column
    if pa.types.is_null(kind):
        return column  # every value missing: reported as a missing id
    raise DataError(
        f"column {name!r} ({role} ids) of {path} has type {kind}; ids must be strings or "
        "integers, cast the column (a float id 1.0 would become the text '1.0')"
    )


def _check_id_type(rows, column: str, role: str, path: Path) -> None:
    """Ids must be text or whole numbers (see :func:`arrow_id_column`)."""
    if hasattr(rows, "schema"):  # a pyarrow table
        arrow_id_column(rows.column(column), column, role, path)
        return
    for i, value in enumerate(_column(rows, column, path)):
        if value is None or isinstance(value, str):
            continue
        if isinstance(value, int) and not isinstance(value, bool):
            continue
        raise DataError(
            f"{role} id {json.dumps(value)[:40]} in row {i + 1} of {path} (column {column!r}) is "
            f"a {type(value).__name__}; ids must be strings or integers"
        )


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
        except (TypeError, ValueError, OverflowError):
            pass
        try:
            out[i] = int(datetime.fromisoformat(str(value)).timestamp())
        except (ValueError, OverflowError, OSError):
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
    fmt = FORMATS.get(path.suffix.lower())
    if path.is_dir() and fmt != "parquet":
        raise DataError(f"{path} is a folder, not a file; give the data file inside it")
    if not path.is_file():
        raise DataError(missing)
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
            problem = f"column {column!r} ({role}) is not in {path} (columns: {', '.join(names)})"
            raise DataError(
                f"{problem}; name one of them in Columns({role}=...)",
                cli=f"{problem}; pass --{role}-col with one of them",
            )
    n = rows.num_rows if hasattr(rows, "num_rows") else len(rows)
    if n == 0:
        raise DataError(f"{path} has no rows; give a file with at least one interaction")
    if FORMATS[path.suffix.lower()] not in ("csv", "tsv"):  # CSV values are always text
        for role in ("user", "item"):
            _check_id_type(rows, getattr(columns, role), role, path)
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
    raw: RawInteractions,
    users: Vocabulary,
    items: Vocabulary,
    *,
    duplicates: str = "auto",
    report: dict | None = None,
) -> tuple[Interactions, int]:
    """Encode raw rows against vocabularies, dropping rows with unknown ids.

    Returns the interactions and the number of rows dropped as out-of-vocabulary. ``report``,
    when given, receives the counts: ``rows_read``, ``rows_dropped``,
    ``rows_dropped_unknown_user`` and ``rows_dropped_unknown_item`` (a row with both unknown
    counts once, as an unknown user).
    """
    u, i = (  # an IdColumn (Parquet) encodes each distinct id once
        ids.encode(vocabulary) if hasattr(ids, "uniques") else vocabulary.encode(ids)
        for ids, vocabulary in ((raw.users, users), (raw.items, items))
    )
    every = all(  # vocabularies made from these very columns know every row: no masks
        hasattr(ids, "encodes_to") and ids.encodes_to(vocabulary)
        for ids, vocabulary in ((raw.users, users), (raw.items, items))
    )
    if every:
        known = unknown_user = None
        dropped = dropped_users = 0
    else:
        unknown_user = u == users.oov_index
        known = ~unknown_user & (i != items.oov_index)
        dropped, dropped_users = int((~known).sum()), int(unknown_user.sum())
    if report is not None:
        report.update(
            rows_read=len(raw),
            rows_dropped=dropped,
            rows_dropped_unknown_user=dropped_users,
            rows_dropped_unknown_item=dropped - dropped_users,
        )

    def keep(a):
        return a if a is None or known is None else a[known]

    inter = Interactions(
        users=u if known is None else u[known],
        items=i if known is None else i[known],
        num_users=len(users),
        num_items=len(items),
        ratings=keep(raw.ratings),
        timestamps=keep(raw.timestamps),
        weights=keep(raw.weights),
    )
    dup = inter.duplicate_pairs() if duplicates not in ("auto", "keep") else 0
    if dup:  # "auto" here (no model to ask) keeps every row, like "keep"
        if duplicates == "error":
            problem = f"{raw.path} has {dup} repeated (user, item) rows"
            raise DataError(
                f"{problem}; pass duplicates='keep', 'sum', 'mean', 'first' or 'last'",
                cli=f"{problem}; pass --duplicates keep|sum|mean|first|last (or auto: the "
                "model's choice)",
            )
        inter = inter.deduplicate(duplicates)
    return inter, dropped


def describe_dropped(report: dict, path) -> str | None:
    """One line saying how many rows of ``path`` :func:`encode` dropped and why, or ``None``."""
    dropped = report.get("rows_dropped", 0)
    if not dropped:
        return None
    read = report["rows_read"]
    line = (
        f"dropped {dropped} of {read} rows of {path}: {report['rows_dropped_unknown_user']} "
        f"with a user and {report['rows_dropped_unknown_item']} with an item unseen in training "
        "(a model cannot score them)"
    )
    if dropped * 2 > read:
        line += "; check that its ids and --user-col/--item-col match the training file's"
    return line


def dataset_from_files(
    train_path: str | Path,
    columns: Columns,
    *,
    duplicates: str = "auto",
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
