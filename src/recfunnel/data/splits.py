"""Train/test splits of :class:`Interactions`: seeded random, per-user temporal, by user."""

from __future__ import annotations

import numpy as np

from recfunnel.data.interactions import Interactions
from recfunnel.errors import DataError


def random_split(
    interactions: Interactions, test_fraction: float = 0.2, *, seed: int = 0
) -> tuple[Interactions, Interactions]:
    """Shuffle rows with ``seed`` and hold out ``test_fraction`` of them (the TFRS 80/20)."""
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test fraction must lie in (0, 1), not {test_fraction}")
    n = len(interactions)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(n * (1.0 - test_fraction)))
    if n_train == 0 or n_train == n:
        raise DataError(
            f"{n} rows are too few to split {1 - test_fraction:.0%}/{test_fraction:.0%}"
        )
    return interactions.subset(np.sort(order[:n_train])), interactions.subset(
        np.sort(order[n_train:])
    )


def temporal_split(
    interactions: Interactions, n_last: int = 1
) -> tuple[Interactions, Interactions]:
    """Per user, hold out the ``n_last`` latest interactions (leave-last-N).

    Users with ``n_last`` or fewer interactions stay wholly in train. Ties in time keep file order.
    """
    if interactions.timestamps is None:
        raise DataError(
            "a temporal split needs timestamps; give the interactions timestamps (time_col=) or "
            "use random_split",
            cli="a temporal split needs timestamps; pass --time-col or use --split random",
        )
    if n_last < 1:
        raise DataError(f"n_last must be >= 1, not {n_last}")
    order = np.lexsort((np.arange(len(interactions)), interactions.timestamps, interactions.users))
    users_sorted = interactions.users[order]
    counts = np.bincount(users_sorted, minlength=interactions.num_users)
    ends = np.cumsum(counts)
    # Position of each row within its user's timeline, counted from the end.
    from_end = ends[users_sorted] - np.arange(len(order)) - 1
    test_sorted = (from_end < n_last) & (counts[users_sorted] > n_last)
    test_mask = np.zeros(len(interactions), dtype=bool)
    test_mask[order[test_sorted]] = True
    return interactions.subset(~test_mask), interactions.subset(test_mask)


def holdout_users(
    interactions: Interactions, fraction: float = 0.1, *, seed: int = 0
) -> tuple[Interactions, Interactions]:
    """Split by user: all rows of a random ``fraction`` of users go to the second part."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"fraction must lie in (0, 1), not {fraction}")
    present = np.flatnonzero(interactions.user_counts())
    rng = np.random.default_rng(seed)
    chosen = rng.choice(present, size=max(1, int(round(len(present) * fraction))), replace=False)
    mask = np.isin(interactions.users, chosen)
    return interactions.subset(~mask), interactions.subset(mask)
