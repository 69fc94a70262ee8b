"""Parquet ingest that scales: a file or a folder of files, read and encoded column-wise.

Nothing here makes a Python object per row. Columns are read one at a time (only the named
ones), and each id column is dictionary-encoded by Arrow in one hashing pass: its distinct
values in first-seen order (the order :class:`~recfunnel.data.vocab.Vocabulary` gives ids) and
one integer code per row, written straight into one int32 array (Arrow's own index type; the
interactions keep it as it is). The distinct ids stay an array
(NumPy for integer ids): the vocabulary turns them into Python strings only when a string is
asked for (saving a run, looking up a raw id). Numeric columns go to NumPy in one conversion.
Where a column holds something the fast path cannot take as it is (a null id, a rating that is
text, an ISO date), the row-by-row readers of :mod:`recfunnel.data.io` take over for that
column, so errors name the same row and say the same thing.
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
        uniques: the U distinct raw ids in first-seen order: a list of strings, or an int64
            NumPy array [U] for integer ids (each reads as its decimal text).
        codes: int32 [N] (int64 past 2**31 distinct ids) position of each row's id in
            ``uniques``.
    """

    def __init__(self, uniques, codes: np.ndarray) -> None:
        self.uniques = uniques
        wide = len(uniques) > np.iinfo(np.int32).max
        self.codes = np.asarray(codes, dtype=np.int64 if wide else np.int32)

    @classmethod
    def from_arrow(cls, column) -> IdColumn:
        """From a pyarrow (chunked) array of strings or integers without nulls: one
        ``dictionary_encode`` pass (its memo table is shared by the chunks)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(column, pa.Array):
            column = pa.chunked_array([column])
        encoded = pc.dictionary_encode(column)
        codes = np.empty(len(column), dtype=np.int32)  # Arrow's dictionary indices are int32
        start, dictionary = 0, None
        for chunk in encoded.chunks:
            codes[start : start + len(chunk)] = chunk.indices.to_numpy()
            start += len(chunk)
            dictionary = chunk.dictionary
        del encoded
        if dictionary is None:
            uniques = []
        elif pa.types.is_integer(dictionary.type):
            uniques = dictionary.to_numpy().astype(np.int64, copy=False)
        else:
            uniques = dictionary.to_pylist()
        return cls(uniques, codes)

    def vocabulary(self, name: str) -> Vocabulary:
        """A vocabulary of these ids in first-seen order (then :meth:`encode` is the codes)."""
        self._vocabulary = Vocabulary.from_distinct(self.uniques, name=name)
        return self._vocabulary

    def encodes_to(self, vocabulary: Vocabulary) -> bool:
        """Whether ``vocabulary`` is the one :meth:`vocabulary` made (every id known)."""
        return vocabulary is getattr(self, "_vocabulary", None)

    def encode(self, vocabulary: Vocabulary) -> np.ndarray:
        """[N] indices in ``vocabulary`` (its OOV index for unknown ids): one lookup per
        distinct id, then a gather; the codes themselves for the vocabulary made from them."""
        if self.encodes_to(vocabulary):
            return self.codes
        return vocabulary.encode(self._texts())[self.codes]

    def _texts(self) -> list[str]:
        uniques = self.uniques
        return list(map(str, uniques.tolist())) if isinstance(uniques, np.ndarray) else uniques

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, position):
        if isinstance(position, slice):
            return [str(self.uniques[c]) for c in self.codes[position]]
        return str(self.uniques[self.codes[position]])

    def __iter__(self) -> Iterator[str]:
        texts = self._texts()
        return (texts[c] for c in self.codes)

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


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(
            "reading Parquet needs pyarrow; install it with: pip install 'recfunnel[parquet]'"
        ) from None
    return pa, pq


class ParquetColumns:
    """The ``wanted`` columns (role -> column name) of a Parquet file or folder, read one
    column at a time (``pq.ParquetFile``: no dataset layer, no pandas import), so only the
    column being encoded is in memory. The files' schemas are checked on opening."""

    def __init__(self, path: Path, wanted: dict[str, str]) -> None:
        pa, pq = _pyarrow()
        self.path, self.files, self.num_rows = path, parquet_files(path), 0
        types = None
        for file in self.files:
            try:
                schema = pq.read_schema(file)
                rows = pq.read_metadata(file).num_rows
            except (OSError, pa.ArrowException) as exc:
                raise self._unreadable(file, exc) from None
            for role, column in wanted.items():
                if column not in schema.names:
                    raise DataError(
                        f"column {column!r} ({role}) is not in {file} (columns: "
                        f"{', '.join(schema.names)}); pass --{role}-col with one of them"
                    )
            these = [schema.field(column).type for column in wanted.values()]
            if types is not None and these != types:
                raise DataError(
                    f"the Parquet files in {path} do not share one schema; write them with the "
                    "same column names and types"
                )
            types, self.num_rows = these, self.num_rows + rows

    @staticmethod
    def _unreadable(file: Path, exc: Exception) -> DataError:
        return DataError(f"cannot read {file} as Parquet: {str(exc).splitlines()[0]}")

    def column(self, name: str):
        """One column of every file, as a pyarrow ChunkedArray."""
        pa, pq = _pyarrow()
        chunks = []
        for file in self.files:
            try:
                chunks.extend(pq.ParquetFile(file).read(columns=[name]).column(0).chunks)
            except (OSError, pa.ArrowException) as exc:
                raise self._unreadable(file, exc) from None
        first = chunks[0].type if chunks else pa.null()
        return pa.chunked_array(chunks, type=first)


def _is_plain_number(column) -> bool:
    import pyarrow as pa

    kind = column.type
    return column.null_count == 0 and (
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    )


def _id_column(column, name: str, role: str, path: Path) -> IdColumn:
    """Check an id column (strings or integers, none missing) and encode it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from recfunnel.data import io

    column = io.arrow_id_column(column, name, role, path)  # str/int ids only
    missing = None
    if column.null_count:
        missing = pc.is_null(column)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        empty = pc.fill_null(pc.equal(column, ""), False)
        missing = empty if missing is None else pc.or_(missing, empty)
    if missing is not None and pc.any(missing).as_py():
        first = int(np.flatnonzero(missing.to_numpy(zero_copy_only=False))[0])
        raise DataError(f"row {first + 1} of {path} has no {role} id; fill or drop such rows")
    return IdColumn.from_arrow(column)


def read_parquet_interactions(path: Path, columns):
    """:class:`~recfunnel.data.io.RawInteractions` of a Parquet file or folder, column-wise."""
    import pyarrow as pa

    from recfunnel.data import io

    source = ParquetColumns(path, columns.wanted())
    if source.num_rows == 0:
        raise DataError(f"{path} has no rows; give a file with at least one interaction")
    ids = {}
    for role in ("user", "item"):  # one column in memory at a time
        name = getattr(columns, role)
        ids[role] = _id_column(source.column(name), name, role, path)

    def numbers(role: str) -> np.ndarray | None:
        name = getattr(columns, role)
        if not name:
            return None
        column = source.column(name)
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
        column = source.column(columns.time)
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
