"""Interactions from pandas DataFrames and Arrow tables, and recommendations back as a frame.

    ds = Dataset.from_pandas(df, user_col="user_id", item_col="movie_id", rating_col="rating")
    model = TwoTower().fit(ds.interactions)
    train = Interactions.from_pandas(df, user_col="u", item_col="i")   # dense integer indices
    run.recommend_frame(["9", "10"], k=10)   # DataFrame: user, rank, item, score, title

pandas and pyarrow stay optional: they are imported inside these functions, and a missing one is
a one-line error saying which extra to install.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from recfunnel.data.dataset import Dataset
from recfunnel.data.interactions import Interactions
from recfunnel.data.vocab import Vocabulary
from recfunnel.errors import DataError, RecfunnelError


def require_pandas():
    try:
        import pandas
    except ImportError:
        raise RecfunnelError("pandas is not installed; pip install pandas") from None
    return pandas


def _columns_of(frame, what: str):
    """Column names and a getter returning one column as a NumPy array."""
    if hasattr(frame, "column_names") and hasattr(frame, "column"):  # pyarrow Table/RecordBatch

        def get(name):
            column = frame.column(name)
            try:
                return column.to_numpy(zero_copy_only=False)
            except TypeError:  # a ChunkedArray's to_numpy takes no arguments
                return column.to_numpy()

        return list(frame.column_names), get
    if hasattr(frame, "columns") and hasattr(frame, "__getitem__"):  # pandas DataFrame

        def get(name):
            return frame[name].to_numpy()

        return [str(c) for c in frame.columns], get
    raise DataError(f"{what} expects a pandas DataFrame or a pyarrow Table, not {type(frame)}")


def _read(frame, what, user_col, item_col, rating_col, time_col, weight_col) -> dict:
    names, get = _columns_of(frame, what)
    wanted = {"user": user_col, "item": item_col, "rating": rating_col, "time": time_col,
              "weight": weight_col}  # fmt: skip
    out = {}
    for role, column in wanted.items():
        if column is None:
            continue
        if column not in names:
            raise DataError(
                f"column {column!r} ({role}) is not in the frame (columns: {', '.join(names)}); "
                f"pass {role}_col= with one of them"
            )
        values = get(column)
        missing = _missing(values)
        if missing is not None:
            raise DataError(
                f"row {missing + 1} of the frame has no {role} (column {column!r}); fill or drop "
                "such rows"
            )
        out[role] = values
    if len(out["user"]) == 0:
        raise DataError("the frame has no rows; give at least one interaction")
    return out


def _missing(values: np.ndarray) -> int | None:
    if values.dtype.kind == "f":
        bad = np.flatnonzero(np.isnan(values))
    elif values.dtype.kind == "O":
        bad = [i for i, v in enumerate(values) if v is None or v != v or v == ""]  # v != v: NaN
    else:
        return None
    return int(bad[0]) if len(bad) else None


def _ids(values: np.ndarray) -> list[str]:
    """Raw ids as strings; whole floats (an int column that held a NaN once) lose their '.0'."""
    if values.dtype.kind == "f" and np.all(values == np.round(values)):
        values = values.astype(np.int64)
    return [str(v) for v in values.tolist()]


def _numbers(values: np.ndarray, role: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"the {role} column holds values that are not numbers; fix them") from None


def _times(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "M":  # datetime64: seconds since the epoch
        return values.astype("datetime64[s]").astype(np.int64)
    if values.dtype.kind in "iuf":
        return values.astype(np.int64)
    out = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values.tolist()):
        if isinstance(value, datetime):
            out[i] = int(value.timestamp())
            continue
        try:
            out[i] = int(float(value))
        except (TypeError, ValueError):
            try:
                out[i] = int(datetime.fromisoformat(str(value)).timestamp())
            except ValueError:
                raise DataError(
                    f"time {value!r} in row {i + 1} of the frame is neither epoch seconds nor an "
                    "ISO date; fix that row"
                ) from None
    return out


def dataset_from_frame(
    frame,
    *,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = None,
    time_col: str | None = None,
    weight_col: str | None = None,
    title_col: str | None = None,
    duplicates: str = "error",
    what: str = "Dataset.from_pandas",
) -> Dataset:
    """A :class:`Dataset` (interactions + raw-id vocabularies in first-seen order) from a pandas
    DataFrame or a pyarrow Table with one row per interaction.

    ``title_col``: a column with each item's display name (its first value per item is kept).
    ``duplicates``: repeated (user, item) rows: ``"error"``, ``"first"``, ``"last"`` or ``"mean"``.
    """
    cols = _read(frame, what, user_col, item_col, rating_col, time_col, weight_col)
    raw_users, raw_items = _ids(cols["user"]), _ids(cols["item"])
    weights = _numbers(cols["weight"], "weight") if "weight" in cols else None
    if weights is not None and (weights < 0).any():
        raise DataError("the weight column has negative values; confidences must be >= 0")
    if duplicates not in ("error", "first", "last", "mean"):
        raise DataError(
            f"duplicates must be 'error', 'first', 'last' or 'mean', not {duplicates!r}"
        )
    users = Vocabulary.from_values(raw_users, name="user")
    items = Vocabulary.from_values(raw_items, name="item")
    interactions = Interactions(
        users=users.encode(raw_users),
        items=items.encode(raw_items),
        num_users=len(users),
        num_items=len(items),
        ratings=_numbers(cols["rating"], "rating") if "rating" in cols else None,
        timestamps=_times(cols["time"]) if "time" in cols else None,
        weights=weights,
    )
    repeated = interactions.duplicate_pairs()
    if repeated:
        if duplicates == "error":
            raise DataError(
                f"the frame has {repeated} duplicate (user, item) rows; drop them or pass "
                "duplicates='first', 'last' or 'mean'"
            )
        interactions = interactions.deduplicate(duplicates)
    titles = None
    if title_col is not None:
        names, get = _columns_of(frame, what)
        if title_col not in names:
            raise DataError(f"column {title_col!r} (title) is not in the frame; pass title_col=")
        first = {}
        for item, title in zip(raw_items, get(title_col).tolist(), strict=True):
            first.setdefault(item, str(title))
        titles = [first[i] for i in items.ids]
    return Dataset(interactions=interactions, users=users, items=items, item_titles=titles,
                   name="frame", source={"frame": type(frame).__name__})  # fmt: skip


def interactions_from_frame(
    frame,
    *,
    user_col: str = "user",
    item_col: str = "item",
    rating_col: str | None = None,
    time_col: str | None = None,
    weight_col: str | None = None,
    num_users: int | None = None,
    num_items: int | None = None,
    what: str = "Interactions.from_pandas",
) -> Interactions:
    """:class:`Interactions` from a frame whose user and item columns already hold dense
    integer indices (``0 .. num_users - 1``); sizes default to the largest index + 1. For raw
    ids (strings, sparse numbers) use :func:`dataset_from_frame`, which builds vocabularies."""
    cols = _read(frame, what, user_col, item_col, rating_col, time_col, weight_col)
    for role in ("user", "item"):
        if cols[role].dtype.kind not in "iu":
            raise DataError(
                f"the {role} column holds {cols[role].dtype} values, not integer indices; use "
                f"Dataset.from_pandas(df, user_col=..., item_col=...), which maps raw ids"
            )
    users, items = cols["user"].astype(np.int64), cols["item"].astype(np.int64)
    return Interactions(
        users=users,
        items=items,
        num_users=int(users.max()) + 1 if num_users is None else num_users,
        num_items=int(items.max()) + 1 if num_items is None else num_items,
        ratings=_numbers(cols["rating"], "rating") if "rating" in cols else None,
        timestamps=_times(cols["time"]) if "time" in cols else None,
        weights=_numbers(cols["weight"], "weight") if "weight" in cols else None,
    )


def recommendations_frame(run, users, k: int = 10, *, exclude_seen: bool = True):
    """Top-``k`` of every raw user id in ``users`` as a pandas DataFrame with the columns
    ``user, rank, item, score, title`` (unknown users get the most popular items)."""
    pandas = require_pandas()
    if isinstance(users, str | bytes):
        users = [users]
    rows = {"user": [], "rank": [], "item": [], "score": [], "title": []}
    for user in users:
        rec = run.recommend(user, k, exclude_seen=exclude_seen)
        for rank, (item, score, title) in enumerate(
            zip(rec.items, rec.scores, rec.titles, strict=True), 1
        ):
            rows["user"].append(str(user))
            rows["rank"].append(rank)
            rows["item"].append(item)
            rows["score"].append(score)
            rows["title"].append(title)
    return pandas.DataFrame(rows)
