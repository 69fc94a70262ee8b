"""Id vocabularies: raw string ids <-> dense indices, with an out-of-vocabulary bucket.

This is the role Keras' ``StringLookup`` plays in the TFRS tutorial. Known ids get the indices
``0 .. n-1`` in the order given; every unknown id maps to the single OOV bucket ``n``
(:attr:`Vocabulary.oov_index`), so embedding tables that should absorb unknown ids have ``n + 1``
rows. Ids are always strings: ``9`` and ``"9"`` are the same user.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from recfunnel.errors import DataError, UnknownIdError


class Vocabulary:
    """An ordered set of raw ids.

    Args:
        ids: distinct raw ids; order defines the dense index.
        name: what the ids are (``"user"``, ``"item"``), used in error messages.
    """

    def __init__(self, ids: Iterable[object], name: str = "id") -> None:
        self.name = name
        self._distinct = None
        self._list: list[str] | None = [str(i) for i in ids]
        self._dict: dict[str, int] | None = None
        if len(self._index) != len(self._ids):  # some id twice: find the first for the message
            seen: set[str] = set()
            for raw in self._ids:
                if raw in seen:
                    raise DataError(
                        f"{name} vocabulary has the id {raw!r} twice; pass distinct ids"
                    )
                seen.add(raw)

    @classmethod
    def from_distinct(cls, values: np.ndarray | list[str], name: str = "id") -> Vocabulary:
        """From ids known to be distinct (a column's dictionary): a list of strings, or an
        integer NumPy array kept as it is until a string or a look-up is asked for, so building
        the vocabulary of a million ids costs nothing until the ids are read (a saved run, an
        encoded test file, a served request)."""
        vocabulary = cls.__new__(cls)
        vocabulary.name = name
        vocabulary._distinct = values
        vocabulary._list = vocabulary._dict = None
        return vocabulary

    @property
    def _ids(self) -> list[str]:
        if self._list is None:
            values = self._distinct
            self._list = list(map(str, values.tolist() if hasattr(values, "tolist") else values))
            self._distinct = None
        return self._list

    @property
    def _index(self) -> dict[str, int]:
        if self._dict is None:
            self._dict = dict(zip(self._ids, range(len(self._ids)), strict=True))
        return self._dict

    @classmethod
    def from_values(cls, values: Iterable[object], name: str = "id") -> Vocabulary:
        """Build from raw values in first-seen order, dropping repeats."""
        return cls(dict.fromkeys(str(v) for v in values), name=name)

    @property
    def oov_index(self) -> int:
        """Index of the out-of-vocabulary bucket (one past the last known id)."""
        return len(self)

    @property
    def ids(self) -> list[str]:
        return list(self._ids)

    def __len__(self) -> int:
        return len(self._distinct) if self._list is None else len(self._list)

    def __contains__(self, raw: object) -> bool:
        return str(raw) in self._index

    def __repr__(self) -> str:
        first = self._ids[:3] if self._list is not None else [str(i) for i in self._distinct[:3]]
        head = ", ".join(repr(i) for i in first)
        more = ", ..." if len(self) > 3 else ""
        return f"Vocabulary({self.name}, n={len(self)}: [{head}{more}])"

    def index(self, raw: object) -> int:
        """Dense index of one raw id; raises :class:`UnknownIdError` when unknown."""
        try:
            return self._index[str(raw)]
        except KeyError:
            raise UnknownIdError(
                f"unknown {self.name} {str(raw)!r}: it is not in the training data "
                f"({len(self)} known {self.name}s)"
            ) from None

    def encode(self, raws: Iterable[object], *, unknown: str = "oov") -> np.ndarray:
        """Dense indices of many raw ids.

        Args:
            raws: raw ids.
            unknown: ``"oov"`` maps unknown ids to :attr:`oov_index`; ``"raise"`` raises.
        """
        if unknown == "raise":
            return np.fromiter((self.index(r) for r in raws), dtype=np.int64)
        oov = self.oov_index
        get = self._index.get
        return np.fromiter((get(str(r), oov) for r in raws), dtype=np.int64)

    def decode(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        """Raw ids of dense indices (the OOV bucket decodes to ``"[UNK]"``)."""
        ids = self._ids
        n = len(ids)
        return [ids[i] if 0 <= i < n else "[UNK]"
                for i in np.asarray(indices, dtype=np.int64).reshape(-1).tolist()]  # fmt: skip

    def to_dict(self) -> dict:
        return {"name": self.name, "ids": self._ids}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        return cls(data["ids"], name=data.get("name", "id"))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._ids == other._ids
