"""Parquet ingest that scales: a file or a folder of files, read and encoded column-wise.

Nothing here makes a Python object per row. Each id column is reduced by Arrow to its distinct
values (first-seen order, the order :class:`~recfunnel.data.vocab.Vocabulary` gives ids) and one
integer code per row; only the distinct ids become Python strings. Numeric columns go to NumPy
in one conversion. Where a column holds something the fast path cannot take as it is (a null id,
a rating that is text, an ISO date), the row-by-row readers of :mod:`recfunnel.data.io` take
over for that column, so errors name the same row and say the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from recfunnel.data.vocab import Vocabulary
from recfunnel.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")


class IdColumn(Sequence[str]):
    """The raw ids of N rows, column-wise: distinct ids and a code per row.

    Attributes:
        uniques: the distinct raw ids as strings, in first-seen order.
        codes: int64 [N] position of each row's id in ``uniques``.
    """

    def __init__(self, uniques: list[str], codes: np.ndarray) -> None:
        self.uniques = uniques
        self.codes = np.asarray(codes, dtype=np.int64)

    @classmethod
    def from_arrow(cls, column) -> IdColumn:
        """From a pyarrow (chunked) array without nulls."""
        import pyarrow.compute as pc

        uniques = pc.unique(column)
        codes = pc.index_in(column, value_set=uniques)
        codes = codes.to_numpy() if hasattr(codes, "to_numpy") else np.asarray(codes)
        return cls([str(v) for v in uniques.to_pylist()], codes)

    def vocabulary(self, name: str) -> Vocabulary:
        """A vocabulary of these ids in first-seen order (then :meth:`encode` is the codes)."""
        self._vocabulary = Vocabulary(self.uniques, name=name)
        return self._vocabulary

    def encode(self, vocabulary: Vocabulary) -> np.ndarray:
        """int64 [N] indices in ``vocabulary`` (its OOV index for unknown ids): one lookup per
        distinct id, then a gather."""
        if vocabulary is getattr(self, "_vocabulary", None):
            return self.codes
        return vocabulary.encode(self.uniques)[self.codes]

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, position):
        if isinstance(position, slice):
            return [self.uniques[c] for c in self.codes[position]]
        return self.uniques[self.codes[position]]

    def __iter__(self) -> Iterator[str]:
        uniques = self.uniques
        return (uniques[c] for c in self.codes)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, IdColumn):
            other = list(other)
        return isinstance(other, list) and len(other) == len(self) and list(self) == other

    def __repr__(self) -> str:
        return f"IdColumn({len(self)} rows, {len(self.uniques)} distinct)"


def parquet_files(path: Path) -> list[Path]:
    """The Parquet files of ``path``: itself, or every ``*.parquet`` / ``*.pq`` below a folder
    (sorted, hidden and ``_``-prefixed files skipped)."""
    if path.is_file():
        return [path]
    files = sorted(
        p
        for p in path.rglob("*")
        if p.suffix.lower() in PARQUET_SUFFIXES
        and p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    if not files:
        raise DataError(
            f"{path} is a folder without .parquet files; give a file or a folder of Parquet files"
        )
    return files


def read_parquet_table(path: Path, wanted: dict[str, str]):
    """The ``wanted`` columns (role -> column name) of a Parquet file or folder as one table."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "reading Parquet needs pyarrow; install it with: pip install 'recfunnel[parquet]'"
        ) from None
    tables = []
    for file in parquet_files(path):
        try:
            names = pq.read_schema(file).names
            for role, column in wanted.items():
                if column not in names:
                    raise DataError(
                        f"column {column!r} ({role}) is not in {file} (columns: "
                        f"{', '.join(names)}); pass --{role}-col with one of them"
                    )
            tables.append(pq.read_table(file, columns=list(dict.fromkeys(wanted.values()))))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"cannot read {file} as Parquet: {str(exc).splitlines()[0]}") from None
    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables)
    except pa.ArrowException:
        raise DataError(
            f"the Parquet files in {path} do not share one schema; write them with the same "
            "column names and types"
        ) from None


def _is_plain_number(column) -> bool:
    import pyarrow as pa

    kind = column.type
    return column.null_count == 0 and (
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    )


def read_parquet_interactions(path: Path, columns):
    """:class:`~recfunnel.data.io.RawInteractions` of a Parquet file or folder, column-wise."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from recfunnel.data import io

    table = read_parquet_table(path, columns.wanted())
    if table.num_rows == 0:
        raise DataError(f"{path} has no rows; give a file with at least one interaction")
    ids = {}
    for role in ("user", "item"):
        name = getattr(columns, role)
        column = io.arrow_id_column(table.column(name), name, role, path)  # str/int ids only
        missing = pc.is_null(column)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            missing = pc.or_(missing, pc.fill_null(pc.equal(column, ""), False))
        if pc.any(missing).as_py():
            first = int(np.flatnonzero(missing.to_numpy(zero_copy_only=False))[0])
            raise DataError(f"row {first + 1} of {path} has no {role} id; fill or drop such rows")
        ids[role] = IdColumn.from_arrow(column)

    def numbers(role: str) -> np.ndarray | None:
        name = getattr(columns, role)
        if not name:
            return None
        column = table.column(name)
        if _is_plain_number(column):
            values = column.to_numpy().astype(np.float64)
            if not np.isnan(values).any():
                return values
        return io._numbers(column.to_pylist(), role, name, path)  # names the bad row

    ratings, weights = numbers("rating"), numbers("weight")
    if weights is not None and (weights < 0).any():
        bad = int(np.flatnonzero(weights < 0)[0])
        raise DataError(f"weight in row {bad + 1} of {path} is negative; confidences must be >= 0")
    timestamps = None
    if columns.time:
        column = table.column(columns.time)
        if _is_plain_number(column) and not pa.types.is_boolean(column.type):
            timestamps = column.to_numpy()
            if np.issubdtype(timestamps.dtype, np.floating) and not np.isfinite(timestamps).all():
                timestamps = None
            elif timestamps is not None:
                timestamps = timestamps.astype(np.int64)  # truncates as int(float(x)) does
        if timestamps is None:
            timestamps = io._timestamps(column.to_pylist(), columns.time, path)
    return io.RawInteractions(
        users=ids["user"],
        items=ids["item"],
        ratings=ratings,
        timestamps=timestamps,
        weights=weights,
        path=str(path),
    )
