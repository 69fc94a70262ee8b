"""A dataset: interactions plus the vocabularies and metadata that give them meaning."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from recfunnel.data.interactions import Interactions
from recfunnel.data.vocab import Vocabulary


@dataclass
class Dataset:
    """Interactions with their id vocabularies and optional side tables.

    Attributes:
        interactions: all rows (before any split), in dense indices.
        users, items: raw id <-> dense index maps.
        item_titles: display name per item index (e.g. movie titles), or ``None``.
        user_table, item_table: side columns aligned with the vocabularies (name -> array
            of length ``len(users)`` / ``len(items)``), e.g. age or genres.
        name: short name used in run configs (``"movielens-100k"``, a file name).
        source: how the data was loaded, recorded in run configs.
    """

    interactions: Interactions
    users: Vocabulary
    items: Vocabulary
    item_titles: list[str] | None = None
    user_table: dict[str, np.ndarray] = field(default_factory=dict)
    item_table: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = "interactions"
    source: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return (
            f"<Dataset {self.name}: {len(self.interactions)} interactions, "
            f"{len(self.users)} users, {len(self.items)} items>"
        )

    @classmethod
    def from_pandas(cls, df, **columns) -> Dataset:
        """From a pandas DataFrame, one row per interaction, raw ids mapped to vocabularies:
        ``user_col``, ``item_col``, optional ``rating_col``, ``time_col``, ``weight_col``,
        ``title_col``, ``duplicates`` (see :func:`recfunnel.data.frames.dataset_from_frame`)."""
        from recfunnel.data.frames import dataset_from_frame

        return dataset_from_frame(df, what="Dataset.from_pandas", **columns)

    @classmethod
    def from_arrow(cls, table, **columns) -> Dataset:
        """From a pyarrow Table; the same keywords as :meth:`from_pandas`."""
        from recfunnel.data.frames import dataset_from_frame

        return dataset_from_frame(table, what="Dataset.from_arrow", **columns)

    def titles(self) -> list[str]:
        """Display name of every item (its raw id where no title is known)."""
        return list(self.item_titles) if self.item_titles is not None else self.items.ids
