"""The one data type that flows through recfunnel: a batch of (user, item) interactions.

Parallel NumPy arrays of dense user and item indices with optional ratings, timestamps and
weights, plus the sizes of the user and item vocabularies. Every loader returns it, every
splitter and model takes it, and it is validated once, on construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from recfunnel.errors import DataError

#: what to do with repeated (user, item) rows: see :meth:`Interactions.deduplicate`
DUPLICATES = ("keep", "sum", "mean", "first", "last")


def index_dtype(num_users: int, num_items: int) -> type:
    """The integer type of the user and item indices: int32 while both vocabularies fit in it
    (half the memory of int64: 8 bytes a row instead of 16), int64 beyond."""
    return np.int32 if max(num_users, num_items) <= np.iinfo(np.int32).max else np.int64


def pair_keys(users: np.ndarray, items: np.ndarray, num_items: int) -> np.ndarray:
    """int64 ``user * num_items + item`` per row, one key per (user, item) pair.

    Widened before the product: NumPy keeps ``int32 * int`` in int32, which wraps around
    silently once ``num_users * num_items`` passes 2**31 (a million users by 2,148 items)."""
    return np.asarray(users, dtype=np.int64) * np.int64(max(1, num_items)) + items


def _indices(values, index: type) -> np.ndarray:
    """``values`` as a flat contiguous array of ``index`` (no copy where it already is one);
    refuses indices that the type cannot hold instead of wrapping them around."""
    arr = np.asarray(values)
    if arr.dtype != index and arr.size and np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(index)
        if arr.min() < info.min or arr.max() > info.max:  # out of range: refused below
            arr = arr.astype(np.int64)
            index = np.int64
    return np.ascontiguousarray(arr, dtype=index).reshape(-1)


def _optional(values, dtype, name: str, n: int) -> np.ndarray | None:
    if values is None:
        return None
    arr = np.ascontiguousarray(values, dtype=dtype).reshape(-1)
    if arr.shape[0] != n:
        raise DataError(f"{name} has {arr.shape[0]} values for {n} interactions; give one each")
    return arr


@dataclass(frozen=True, eq=False)
class Interactions:
    """Interactions between ``num_users`` users and ``num_items`` items.

    Attributes:
        users: [N] dense user indices in ``[0, num_users)``.
        items: [N] dense item indices in ``[0, num_items)``; both int32 while the vocabularies
            fit in it, else int64 (:func:`index_dtype`). Widen before combining them into one
            number (:func:`pair_keys`): int32 arithmetic wraps around silently.
        ratings: float32 [N] explicit feedback, or ``None``.
        timestamps: int64 [N] seconds, or ``None``.
        weights: float32 [N] non-negative confidence / sample weights, or ``None``.
        num_users: size of the user vocabulary (known users).
        num_items: size of the item vocabulary (the catalogue).
    """

    users: np.ndarray
    items: np.ndarray
    num_users: int
    num_items: int
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    weights: np.ndarray | None = None
    _csr: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = index_dtype(int(self.num_users), int(self.num_items))
        users, items = (_indices(values, index) for values in (self.users, self.items))
        n = users.shape[0]
        if items.shape[0] != n:
            raise DataError(f"{n} user ids but {items.shape[0]} item ids; give one of each per row")
        if self.num_users < 0 or self.num_items < 0:
            raise DataError("num_users and num_items must be non-negative")
        if n and (users.min() < 0 or users.max() >= self.num_users):
            raise DataError(f"user indices must lie in [0, {self.num_users}); re-encode the ids")
        if n and (items.min() < 0 or items.max() >= self.num_items):
            raise DataError(f"item indices must lie in [0, {self.num_items}); re-encode the ids")
        ratings = _optional(self.ratings, np.float32, "ratings", n)
        if ratings is not None and not np.isfinite(ratings).all():
            bad = int(np.flatnonzero(~np.isfinite(ratings))[0])
            raise DataError(f"rating in row {bad} is NaN or infinite; drop or fix that row")
        weights = _optional(self.weights, np.float32, "weights", n)
        if weights is not None and (not np.isfinite(weights).all() or (weights < 0).any()):
            bad = int(np.flatnonzero(~(np.isfinite(weights) & (weights >= 0)))[0])
            raise DataError(
                f"weight in row {bad} is negative, NaN or infinite; confidences must be >= 0"
            )
        timestamps = _optional(self.timestamps, np.int64, "timestamps", n)
        object.__setattr__(self, "users", users)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "ratings", ratings)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "timestamps", timestamps)
        object.__setattr__(self, "num_users", int(self.num_users))
        object.__setattr__(self, "num_items", int(self.num_items))

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def __repr__(self) -> str:
        extras = [
            name for name in ("ratings", "timestamps", "weights") if getattr(self, name) is not None
        ]
        density = len(self) / max(1, self.num_users * self.num_items)
        return (
            f"<Interactions: {len(self)} rows, {self.num_users} users x {self.num_items} items "
            f"(density {density:.4%}){', with ' + ', '.join(extras) if extras else ''}>"
        )

    # ----------------------------------------------------------------- views
    @classmethod
    def from_pandas(cls, df, **columns) -> Interactions:
        """From a pandas DataFrame whose ``user_col`` / ``item_col`` hold dense integer indices;
        optional ``rating_col``, ``time_col``, ``weight_col``, ``num_users``, ``num_items``.
        Raw ids (strings, sparse numbers): use :meth:`recfunnel.data.Dataset.from_pandas`."""
        from recfunnel.data.frames import interactions_from_frame

        return interactions_from_frame(df, what="Interactions.from_pandas", **columns)

    @classmethod
    def from_arrow(cls, table, **columns) -> Interactions:
        """From a pyarrow Table; the same keywords as :meth:`from_pandas`."""
        from recfunnel.data.frames import interactions_from_frame

        return interactions_from_frame(table, what="Interactions.from_arrow", **columns)

    def subset(self, rows: np.ndarray) -> Interactions:
        """The interactions at ``rows`` (a boolean mask or integer positions), same vocabularies."""

        def take(a):
            return None if a is None else a[rows]

        return Interactions(
            users=self.users[rows],
            items=self.items[rows],
            num_users=self.num_users,
            num_items=self.num_items,
            ratings=take(self.ratings),
            timestamps=take(self.timestamps),
            weights=take(self.weights),
        )

    def concat(self, other: Interactions) -> Interactions:
        """Rows of ``self`` followed by rows of ``other`` (same vocabularies)."""
        if (self.num_users, self.num_items) != (other.num_users, other.num_items):
            raise DataError("cannot concatenate interactions over different vocabularies")

        def cat(a, b):
            return None if a is None or b is None else np.concatenate([a, b])

        return Interactions(
            users=np.concatenate([self.users, other.users]),
            items=np.concatenate([self.items, other.items]),
            num_users=self.num_users,
            num_items=self.num_items,
            ratings=cat(self.ratings, other.ratings),
            timestamps=cat(self.timestamps, other.timestamps),
            weights=cat(self.weights, other.weights),
        )

    def duplicate_pairs(self) -> int:
        """Number of rows whose (user, item) pair appeared in an earlier row."""
        keys = pair_keys(self.users, self.items, self.num_items)
        if not (keys[1:] >= keys[:-1]).all():  # data sorted by (user, item) needs no sort
            keys.sort()  # in place; a sort, not np.unique: NumPy 2.4's hashed unique takes
            # ~14 s per million such keys
        return int(np.count_nonzero(keys[1:] == keys[:-1]))

    def deduplicate(self, keep: str = "last") -> Interactions:
        """One row per (user, item) pair (``"keep"``: every row, unchanged).

        Args:
            keep: ``"last"`` keeps the latest row (by timestamp when present, else by position),
                ``"first"`` the earliest, ``"mean"`` averages ratings and sums weights, ``"sum"``
                keeps the latest row with the summed weights (each row counting 1 when there is
                no weight column: the implicit-feedback confidence of an event log) and the
                mean rating; ``"keep"`` returns ``self``.
        """
        if keep not in DUPLICATES:
            raise DataError(f"keep must be one of {', '.join(DUPLICATES)}, not {keep!r}")
        if keep == "keep":
            return self
        order = (
            np.argsort(self.timestamps, kind="stable")
            if self.timestamps is not None
            else np.arange(len(self))
        )
        if keep in ("last", "sum"):
            order = order[::-1]
        keys = pair_keys(self.users[order], self.items[order], self.num_items)
        _, first_pos, inverse = np.unique(keys, return_index=True, return_inverse=True)
        rows = order[first_pos]
        out = self.subset(np.sort(rows))
        if keep in ("first", "last") or (
            keep == "mean" and self.ratings is None and self.weights is None
        ):
            return out
        # Aggregate each (user, item) group, then align the sums with the kept rows.
        group = np.empty(len(self), dtype=np.int64)
        group[order] = inverse
        kept_group = group[np.sort(rows)]
        counts = np.bincount(group, minlength=len(first_pos)).astype(np.float64)
        ratings, weights = out.ratings, out.weights
        if self.ratings is not None:
            sums = np.bincount(group, weights=self.ratings, minlength=len(first_pos))
            ratings = (sums / counts)[kept_group]
        if self.weights is not None:
            weights = np.bincount(group, weights=self.weights, minlength=len(first_pos))[kept_group]
        elif keep == "sum":
            weights = counts[kept_group]
        return Interactions(
            users=out.users,
            items=out.items,
            num_users=self.num_users,
            num_items=self.num_items,
            ratings=ratings,
            timestamps=out.timestamps,
            weights=weights,
        )

    # ------------------------------------------------------------- matrices
    def to_csr(self, values: str = "ones") -> sp.csr_matrix:
        """The user x item matrix in CSR form.

        Args:
            values: ``"ones"`` (binary; repeated pairs count once), ``"ratings"`` or ``"weights"``.
        """
        if values not in self._csr:
            if values == "ones":
                data = np.ones(len(self), dtype=np.float32)
            elif values in ("ratings", "weights"):
                data = getattr(self, values)
                if data is None:
                    raise DataError(f"these interactions have no {values}")
            else:
                raise DataError(f"values must be 'ones', 'ratings' or 'weights', not {values!r}")
            matrix = self._sorted_csr(data, copy=values != "ones")
            if matrix is None:
                matrix = sp.csr_matrix(
                    (data, (self.users, self.items)),
                    shape=(self.num_users, self.num_items),
                    dtype=np.float32,
                )
                matrix.sum_duplicates()
                if values == "ones":
                    matrix.data[:] = 1.0
                matrix.sort_indices()
            self._csr[values] = matrix
        return self._csr[values]

    def _sorted_csr(self, data: np.ndarray, copy: bool) -> sp.csr_matrix | None:
        """The CSR straight from rows sorted by (user, item) with no repeated pair (what
        ``recfunnel synth`` writes and a random split keeps): the row pointers from a count
        per user, the items as the column indices. None for other rows (scipy's COO route,
        which copies both index arrays, then sums and sorts)."""
        users, items = self.users, self.items
        for lo in range(0, len(users) - 1, 1 << 20):  # bounded temporaries: 1M rows at a time
            hi = min(len(users), lo + (1 << 20) + 1)
            u, i = users[lo:hi], items[lo:hi]
            step = u[1:] - u[:-1]
            if (step < 0).any() or (i[1:][step == 0] <= i[:-1][step == 0]).any():
                return None  # not sorted by (user, item), or a pair repeated
        index = np.int32 if max(self.num_users, self.num_items, len(users)) < 2**31 else np.int64
        counts = np.zeros(self.num_users, dtype=np.int64)
        for lo in range(0, len(users), 1 << 20):  # no [N] int64 copy of int32 indices
            counts += np.bincount(users[lo : lo + (1 << 20)], minlength=self.num_users)
        indptr = np.zeros(self.num_users + 1, dtype=index)
        np.cumsum(counts, out=indptr[1:])
        # the column indices are the items array itself where the types agree (no copy)
        cols = items.astype(index, copy=False)
        matrix = sp.csr_matrix(
            (np.array(data, dtype=np.float32, copy=copy or None), cols, indptr),
            shape=(self.num_users, self.num_items),
            copy=False,
        )
        matrix.has_sorted_indices = True
        matrix.has_canonical_format = True
        return matrix

    def item_counts(self) -> np.ndarray:
        """int64 [num_items]: rows per item."""
        return np.bincount(self.items, minlength=self.num_items)

    def user_counts(self) -> np.ndarray:
        """int64 [num_users]: rows per user."""
        return np.bincount(self.users, minlength=self.num_users)
