"""Synthetic interaction data: a checkerboard with a known answer, and power-law data at scale."""

from __future__ import annotations

import numpy as np

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
) -> Interactions:
    """Implicit feedback with Zipf-like item popularity and user activity.

    Item ``j`` is drawn with probability proportional to ``(j + 1) ** -item_exponent`` times a
    user-specific taste term (a low-rank ``dim``-factor model), so the data has both a popularity
    skew and personal structure a model can learn. Users' activity follows
    ``(rank + 1) ** -user_exponent``. Repeated (user, item) draws are redrawn, so the result
    holds (nearly) the number of rows asked for, sorted by user. Memory stays O(num_interactions).
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
    # Taste: each user belongs to one of `dim` clusters that prefers its own item cluster.
    user_cluster = rng.integers(0, dim, num_users)
    item_cluster = rng.integers(0, dim, num_items)
    order = np.argsort(item_cluster, kind="stable")
    bounds = np.searchsorted(item_cluster[order], np.arange(dim + 1))
    cluster_pop = np.cumsum(popularity[order])

    def draw(users: np.ndarray) -> np.ndarray:
        # Half the draws follow global popularity, half popularity within the user's cluster.
        items = rng.choice(num_items, size=len(users), p=popularity)
        from_cluster = rng.random(len(users)) < 0.5
        cu = user_cluster[users[from_cluster]]
        lo, hi = bounds[cu], bounds[cu + 1]
        start = np.where(lo > 0, cluster_pop[np.maximum(lo - 1, 0)], 0.0)
        end = np.where(hi > 0, cluster_pop[np.maximum(hi - 1, 0)], 0.0)
        pos = np.searchsorted(cluster_pop, start + rng.random(len(cu)) * (end - start))
        items[from_cluster] = order[np.clip(pos, lo, np.maximum(hi - 1, lo))]
        return items

    # Draw, drop repeated pairs, and redraw each user's shortfall (a few rounds suffice).
    users = np.repeat(np.arange(num_users), per_user)
    keys = np.unique(users * num_items + draw(users))
    for _ in range(8):
        short = per_user - np.bincount(keys // num_items, minlength=num_users)
        if not short.any():
            break
        again = np.repeat(np.arange(num_users), np.maximum(short, 0))
        keys = np.unique(np.concatenate([keys, again * num_items + draw(again)]))
    users, items = keys // num_items, keys % num_items
    return Interactions(users, items, num_users, num_items)
