"""Side features, declared once and shared by every model that uses them.

A :class:`FeatureSpec` turns the side columns of a :class:`~recfunnel.data.Dataset` (its
``user_table`` / ``item_table``, and for MovieLens the titles) into *feature ids*: every entity
(a user or an item) becomes a short, weighted bag of ids into one feature vocabulary per side,
``["age=25-34", "gender=F", "occupation=writer", "zip=94", ...]``. A model embeds the bag
(a weighted sum of feature embeddings, as in a factorization machine) so that an entity unseen in
training but with features still gets its own representation.

Column kinds, chosen from the data:

* ``categorical`` - string values; a vocabulary of the values seen plus ``<oov>``.
* ``bucket`` - numbers cut at boundaries (given, or training quantiles); values outside any
  known range fall in the end buckets, missing values (NaN) in ``<oov>``.
* ``multi_hot`` - a [n, K] 0/1 matrix (MovieLens genres); weights ``1/sqrt(#on)``.
* ``tokens`` - whitespace-separated words (MovieLens titles, year removed); words seen fewer
  than twice are dropped, weights ``1/sqrt(#tokens)``.

Context (the time of an interaction) is bucketed by :class:`TimeBuckets`.

The spec is plain JSON (:meth:`FeatureSpec.to_json`), so a saved model re-encodes new users and
items exactly as at training time.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import numpy as np
import torch

from recfunnel.errors import DataError

OOV = "<oov>"
AGE_BOUNDARIES = [18, 25, 35, 45, 50, 56]  # MovieLens 1M age groups, also used for 100k
_YEAR_RE = re.compile(r"\(\d{4}\)")
_WORD_RE = re.compile(r"[a-z0-9']+")


def title_tokens(title: str) -> list[str]:
    """Lower-case words of a title with the ``(1995)`` year removed."""
    return _WORD_RE.findall(_YEAR_RE.sub(" ", str(title)).lower())


def _bucket_names(boundaries: list[float]) -> list[str]:
    edges = [f"{b:g}" for b in boundaries]
    names = [f"<{edges[0]}"] if edges else ["all"]
    names += [f"{a}-{b}" for a, b in zip(edges, edges[1:], strict=False)]
    if edges:
        names.append(f">={edges[-1]}")
    return names


@dataclass
class Column:
    """How one side column becomes feature ids (see the module docstring for the kinds)."""

    name: str
    kind: str
    values: list[str] = field(default_factory=list)  # categorical/tokens vocab, multi_hot labels
    boundaries: list[float] = field(default_factory=list)  # bucket
    transform: str | None = None  # "zip2": first two characters; "title": title tokens

    def labels(self) -> list[str]:
        """Feature names this column contributes, in id order."""
        if self.kind == "bucket":
            return [f"{self.name}={b}" for b in _bucket_names(self.boundaries)] + [
                f"{self.name}={OOV}"
            ]
        if self.kind in ("categorical", "tokens"):
            return [f"{self.name}={v}" for v in self.values] + [f"{self.name}={OOV}"]
        return [f"{self.name}={v}" for v in self.values]  # multi_hot

    def _prepare(self, raw):
        if self.transform == "zip2":
            return [str(v)[:2] for v in raw]
        return raw

    def encode(self, raw) -> list[list[tuple[int, float]]]:
        """Per entity, (local feature id, weight) pairs."""
        raw = self._prepare(raw)
        if self.kind == "bucket":
            values = np.asarray(raw, dtype=np.float64)
            ids = np.searchsorted(np.asarray(self.boundaries), values, side="right")
            oov = len(self.boundaries) + 1
            return [
                [(oov if np.isnan(v) else int(i), 1.0)] for v, i in zip(values, ids, strict=True)
            ]
        if self.kind == "categorical":
            index = {v: i for i, v in enumerate(self.values)}
            return [[(index.get(str(v), len(self.values)), 1.0)] for v in raw]
        if self.kind == "tokens":
            index = {v: i for i, v in enumerate(self.values)}
            out = []
            for text in raw:
                ids = sorted({index.get(t, len(self.values)) for t in title_tokens(text)})
                ids = ids or [len(self.values)]
                out.append([(i, 1.0 / np.sqrt(len(ids))) for i in ids])
            return out
        if self.kind == "multi_hot":
            matrix = np.asarray(raw, dtype=np.float32).reshape(len(raw), -1)
            if matrix.shape[1] != len(self.values):
                raise DataError(
                    f"feature {self.name!r} has {matrix.shape[1]} columns, expected "
                    f"{len(self.values)}; give the same columns as at training"
                )
            out = []
            for row in matrix:
                on = np.flatnonzero(row)
                out.append([(int(i), 1.0 / np.sqrt(len(on))) for i in on])
            return out
        raise DataError(f"unknown feature kind {self.kind!r}")


def infer_column(name: str, values, *, transform: str | None = None) -> Column:
    """A :class:`Column` for ``values`` (an array of one side column over all entities)."""
    arr = np.asarray(values)
    if transform == "title":
        counts: dict[str, int] = {}
        for text in arr:
            for token in set(title_tokens(text)):
                counts[token] = counts.get(token, 0) + 1
        vocab = sorted(t for t, c in counts.items() if c >= 2)
        return Column(name, "tokens", values=vocab, transform=None)
    if arr.ndim == 2:
        return Column(name, "multi_hot", values=[str(j) for j in range(arr.shape[1])])
    if name == "age" and np.issubdtype(arr.dtype, np.number):
        return Column(name, "bucket", boundaries=list(AGE_BOUNDARIES))
    if np.issubdtype(arr.dtype, np.number):
        finite = arr[np.isfinite(arr.astype(np.float64))].astype(np.float64)
        if len(finite) == 0:
            raise DataError(f"feature column {name!r} has no numeric values; drop it or fill it")
        qs = np.unique(np.quantile(finite, np.linspace(0, 1, 11)[1:-1]))
        return Column(name, "bucket", boundaries=[float(q) for q in qs])
    column = Column(name, "categorical", transform=transform)
    prepared = column._prepare(arr)
    column.values = sorted({str(v) for v in prepared if str(v) != ""})
    return column


class FeatureMatrix:
    """Encoded bags of feature ids, padded: ``ids`` [n, L] int64 and ``weights`` [n, L] float32
    (padding has weight 0). ``num_features`` is the size of the side's feature vocabulary."""

    def __init__(self, ids: torch.Tensor, weights: torch.Tensor, num_features: int) -> None:
        self.ids = ids
        self.weights = weights
        self.num_features = num_features

    def __len__(self) -> int:
        return self.ids.shape[0]


@dataclass
class SideSpec:
    """The feature columns of one side (users or items)."""

    columns: list[Column] = field(default_factory=list)

    def labels(self) -> list[str]:
        return [label for c in self.columns for label in c.labels()]

    @property
    def num_features(self) -> int:
        return len(self.labels())

    def encode(self, table: dict, n: int) -> FeatureMatrix:
        """Encode ``n`` entities whose side columns are ``table`` (name -> [n] or [n, K]).

        A column missing from ``table`` puts every entity in that column's OOV bucket
        (multi-hot columns contribute nothing).
        """
        bags: list[list[tuple[int, float]]] = [[] for _ in range(n)]
        offset = 0
        for column in self.columns:
            if column.name in table:
                values = table[column.name]
                if len(values) != n:
                    raise DataError(
                        f"feature {column.name!r} has {len(values)} values for {n} entities"
                    )
                encoded = column.encode(values)
            elif column.kind == "multi_hot":
                encoded = [[] for _ in range(n)]
            else:
                encoded = [[(len(column.labels()) - 1, 1.0)] for _ in range(n)]
            for bag, pairs in zip(bags, encoded, strict=True):
                bag.extend((offset + i, w) for i, w in pairs)
            offset += len(column.labels())
        width = max(1, max((len(b) for b in bags), default=1))
        ids = np.zeros((n, width), dtype=np.int64)
        weights = np.zeros((n, width), dtype=np.float32)
        for row, bag in enumerate(bags):
            for j, (i, w) in enumerate(bag):
                ids[row, j], weights[row, j] = i, w
        return FeatureMatrix(torch.as_tensor(ids), torch.as_tensor(weights), self.num_features)

    def to_dict(self) -> dict:
        return {"columns": [c.__dict__ for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict) -> SideSpec:
        return cls([Column(**c) for c in data.get("columns", [])])


@dataclass
class TimeBuckets:
    """Context: interaction timestamps cut at training quantiles into ``len(boundaries) + 1``
    buckets. At recommendation time the context is "now", the last bucket."""

    boundaries: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, timestamps: np.ndarray | None, buckets: int = 10) -> TimeBuckets:
        if timestamps is None or len(timestamps) == 0:
            return cls([])
        qs = np.quantile(np.asarray(timestamps, dtype=np.float64), np.linspace(0, 1, buckets + 1))
        return cls([float(q) for q in np.unique(qs[1:-1])])

    @property
    def num_buckets(self) -> int:
        return len(self.boundaries) + 1

    def encode(self, timestamps: torch.Tensor) -> torch.Tensor:
        edges = torch.as_tensor(self.boundaries, dtype=torch.float64, device=timestamps.device)
        return torch.bucketize(timestamps.double(), edges, right=True)


@dataclass
class FeatureSpec:
    """User, item and context features of a dataset; JSON round-trips exactly."""

    user: SideSpec = field(default_factory=SideSpec)
    item: SideSpec = field(default_factory=SideSpec)
    context: TimeBuckets = field(default_factory=TimeBuckets)

    @classmethod
    def from_dataset(cls, dataset, timestamps: np.ndarray | None = None) -> FeatureSpec:
        """Infer the spec from ``dataset``'s side tables (and its titles, as tokens).

        MovieLens gets: user age bucket, gender, occupation, zip prefix (2 characters); movie
        genres, release-year bucket, title tokens; context: timestamp buckets of ``timestamps``
        (the training rows).
        """
        user_cols = []
        for name, values in dataset.user_table.items():
            user_cols.append(
                infer_column(name, values, transform="zip2" if name == "zip" else None)
            )
        item_cols = []
        for name, values in dataset.item_table.items():
            if name == "movie_id":  # an id, not a feature
                continue
            item_cols.append(infer_column(name, values))
        if dataset.item_titles is not None and "title" not in dataset.item_table:
            item_cols.append(infer_column("title", dataset.item_titles, transform="title"))
        return cls(SideSpec(user_cols), SideSpec(item_cols), TimeBuckets.fit(timestamps))

    def item_table(self, dataset) -> dict:
        """``dataset.item_table`` plus the titles when the spec tokenizes them."""
        table = dict(dataset.item_table)
        if any(c.name == "title" and c.kind == "tokens" for c in self.item.columns):
            table.setdefault("title", np.asarray(dataset.titles()))
        return table

    def to_json(self) -> str:
        return json.dumps(
            {
                "user": self.user.to_dict(),
                "item": self.item.to_dict(),
                "context": {"boundaries": self.context.boundaries},
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        data = json.loads(text)
        return cls(
            SideSpec.from_dict(data["user"]),
            SideSpec.from_dict(data["item"]),
            TimeBuckets(data["context"]["boundaries"]),
        )


def json_tensor(text: str) -> torch.Tensor:
    """UTF-8 bytes of a JSON text as a uint8 tensor (to keep it inside a safetensors file)."""
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()


def tensor_json(tensor: torch.Tensor) -> str:
    return bytes(tensor.numpy().tobytes()).decode("utf-8")


def read_feature_file(path: str, id_column: str, vocabulary, what: str) -> dict[str, np.ndarray]:
    """A side table from a CSV/TSV/JSONL/Parquet file aligned to ``vocabulary``.

    The file has one row per entity: ``id_column`` holds the raw id, every other column a
    feature. Columns whose every non-empty value parses as a number are numeric (NaN where
    empty); the rest are categorical strings. Entities absent from the file get missing values
    (OOV buckets); ids unknown to the vocabulary are ignored.
    """
    from pathlib import Path

    from recfunnel.data.io import read_table

    file = Path(path)
    names, rows = read_table(
        file, f"{what} feature file not found: {path}; check --{what}-features"
    )
    if hasattr(rows, "to_pylist"):  # a Parquet table: rows as dicts, like the text formats
        rows = rows.to_pylist()
    if id_column not in names:
        raise DataError(
            f"{what} feature file {path} has no {id_column!r} column (has {', '.join(names)}); "
            f"name the id column {id_column!r}"
        )
    feature_names = [n for n in names if n != id_column]
    if not feature_names:
        raise DataError(f"{what} feature file {path} has no feature columns besides {id_column!r}")
    if not rows:
        raise DataError(f"{what} feature file {path} has no rows")
    n = len(vocabulary)
    table: dict[str, np.ndarray] = {}
    positions = []
    for number, row in enumerate(rows, 1):
        raw = row.get(id_column)
        if raw is None or raw == "" or isinstance(raw, bool) or not isinstance(raw, (str, int)):
            problem = "has no" if raw is None or raw == "" else "has a non-text"
            raise DataError(
                f"row {number} of {what} feature file {path} {problem} {id_column!r} id; ids "
                "must be strings or integers, fill or drop such rows"
            )
        raw = str(raw)
        positions.append(vocabulary.index(raw) if raw in vocabulary else -1)
    for name in feature_names:
        raw = ["" if r.get(name) is None else str(r.get(name)).strip() for r in rows]
        try:
            numbers = [float(v) if v != "" else np.nan for v in raw]
            column = np.full(n, np.nan)
            for pos, v in zip(positions, numbers, strict=True):
                if pos >= 0:
                    column[pos] = v
        except ValueError:
            column = np.full(n, "", dtype=object)
            for pos, v in zip(positions, raw, strict=True):
                if pos >= 0:
                    column[pos] = v
            column = column.astype(str)
        table[name] = column
    return table
