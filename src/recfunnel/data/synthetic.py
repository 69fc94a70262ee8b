"""Synthetic interaction data: a checkerboard with a known answer, and power-law data at scale."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recfunnel.artifacts import atomic_path
from recfunnel.data.interactions import Interactions
from recfunnel.errors import DataError


def checkerboard(
    num_users: int = 20, num_items: int = 20, *, seed: int = 0, density: float = 0.5
) -> Interactions:
    """Even users like even items, odd users odd items.

    Each user interacts with a random ``density`` share of the items of their own parity, so a
    model that learns the structure ranks an unseen same-parity item first: precision@1 is 1.
    """
    rng = np.random.default_rng(seed)
    users, items = [], []
    for u in range(num_users):
        same = np.arange(u % 2, num_items, 2)
        liked = rng.choice(same, size=max(1, int(len(same) * density)), replace=False)
        users.extend([u] * len(liked))
        items.extend(liked.tolist())
    return Interactions(np.array(users), np.array(items), num_users, num_items)


def power_law(
    num_users: int,
    num_items: int,
    num_interactions: int,
    *,
    seed: int = 0,
    item_exponent: float = 1.0,
    user_exponent: float = 0.6,
    dim: int = 16,
    rounds: int = 4,
) -> Interactions:
    """Implicit feedback with Zipf-like item popularity and user activity.

    Item ``j`` is drawn with probability proportional to ``(j + 1) ** -item_exponent`` (ranks
    shuffled), half the draws from the whole catalogue and half from the item cluster that the
    user's cluster prefers (``dim`` clusters), so the data has both a popularity skew and
    personal structure a model can learn. Users' activity follows ``(rank + 1) ** -user_exponent``.
    Repeated (user, item) draws are dropped and each user's shortfall redrawn for ``rounds``
    rounds, so the result holds nearly the number of rows asked for, sorted by user, then item.

    Vectorised: every draw is an inverse-CDF lookup (``searchsorted``) and duplicates are found
    with one sort per round, so 20M rows take seconds, not minutes. Memory is O(num_interactions).
    """
    if min(num_users, num_items, num_interactions) <= 0:
        raise DataError("users, items and interactions must all be positive")
    if num_interactions > num_users * num_items // 2:
        raise DataError(
            "too many interactions for that many users and items; at most half the matrix"
        )
    rng = np.random.default_rng(seed)
    activity = (np.arange(num_users) + 1.0) ** -user_exponent
    activity = rng.permutation(activity / activity.sum())
    per_user = rng.multinomial(num_interactions, activity)
    per_user = np.minimum(np.maximum(per_user, 1), num_items // 2)
    popularity = (np.arange(num_items) + 1.0) ** -item_exponent
    popularity = rng.permutation(popularity / popularity.sum())
    cdf = np.cumsum(popularity)
    cdf /= cdf[-1]
    user_cluster = rng.integers(0, dim, num_users).astype(np.int32)
    item_cluster = rng.integers(0, dim, num_items)
    order = np.argsort(item_cluster, kind="stable")  # items grouped by cluster
    bounds = np.searchsorted(item_cluster[order], np.arange(dim + 1))
    cluster_cdf = np.concatenate([[0.0], np.cumsum(popularity[order])])
    lo_mass, hi_mass = cluster_cdf[bounds[:-1]], cluster_cdf[bounds[1:]]

    def draw(users: np.ndarray) -> np.ndarray:
        u = rng.random(len(users))
        items = np.searchsorted(cdf, u, side="right")
        from_cluster = rng.random(len(users)) < 0.5
        # a cluster with no items (more clusters than a small catalogue fills) has nothing
        # to draw from: its users' draw stays the catalogue-wide one
        from_cluster &= bounds[user_cluster[users] + 1] > bounds[user_cluster[users]]
        c = user_cluster[users[from_cluster]]
        target = lo_mass[c] + u[from_cluster] * (hi_mass[c] - lo_mass[c])
        pos = np.searchsorted(cluster_cdf, target, side="right") - 1
        pos = np.clip(pos, bounds[c], bounds[c + 1] - 1)
        items[from_cluster] = order[pos]
        return np.minimum(items, num_items - 1)

    def unique_sorted(keys: np.ndarray) -> np.ndarray:
        keys.sort(kind="stable")
        keep = np.ones(len(keys), dtype=bool)
        keep[1:] = keys[1:] != keys[:-1]
        return keys[keep]

    users = np.repeat(np.arange(num_users, dtype=np.int64), per_user)
    keys = unique_sorted(users * num_items + draw(users))
    for _ in range(rounds):
        short = per_user - np.bincount(keys // num_items, minlength=num_users)
        if not (short > 0).any():
            break
        again = np.repeat(np.arange(num_users, dtype=np.int64), np.maximum(short, 0))
        keys = unique_sorted(np.concatenate([keys, again * num_items + draw(again)]))
    users, items = keys // num_items, keys % num_items
    return Interactions(users, items, num_users, num_items)


def write_interactions(data: Interactions, path: Path) -> None:
    """Write ``user,item`` columns (dense indices) to ``.parquet``, ``.csv`` or ``.npz``.

    Writes a temporary file beside ``path`` and renames it, so a crash never leaves half a file.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".npz"):
        raise DataError(f"cannot write {path}: use a .parquet, .csv or .npz file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        if suffix == ".parquet":
            try:
                import pyarrow as pa
                import pyarrow.parquet as pq
            except ImportError:
                raise DataError(
                    "writing Parquet needs pyarrow; pip install 'recfunnel[parquet]' or use .npz"
                ) from None
            pq.write_table(pa.table({"user": data.users, "item": data.items}), tmp)
        elif suffix == ".npz":
            with open(tmp, "wb") as fh:  # a file object: numpy would append .npz to a name
                np.savez(fh, users=data.users, items=data.items, num_users=data.num_users,
                         num_items=data.num_items)  # fmt: skip
        else:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write("user,item\n")
                np.savetxt(fh, np.stack([data.users, data.items], 1), fmt="%d", delimiter=",")
