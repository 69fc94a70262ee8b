"""Ordered interactions: each user's items as a sequence, oldest first.

The order of a user's rows is their timestamp, ties broken by row order (the order of the
file); without timestamps, row order alone. Two sources give sequences:

* any interaction file with a time column (``--time-col``), read as usual;
* the space-separated sequence format of the SASRec preprocessing (one line per user, the
  user's items in order): :func:`read_sequences`, whose rows carry their position in the line
  as timestamp, so order survives every split and subset.

Splits: :func:`leave_last_out` (each user's last item is the test, the one before it the
validation) and :func:`sasrec_protocol` (the shared ML-1M data's own protocol, see its README).
Letters: U users, S stored items of all sequences.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recfunnel.data.dataset import Dataset
from recfunnel.data.interactions import Interactions
from recfunnel.data.vocab import Vocabulary
from recfunnel.errors import DataError


def time_order(interactions: Interactions) -> np.ndarray:
    """Row positions sorted by user, then timestamp, then row order (a stable lexsort)."""
    rows = np.arange(len(interactions))
    if interactions.timestamps is None:
        return np.lexsort((rows, interactions.users))
    return np.lexsort((rows, interactions.timestamps, interactions.users))


def to_sequences(interactions: Interactions) -> tuple[np.ndarray, np.ndarray]:
    """``(indptr [U+1], items [S])``: user ``u``'s items in time order are
    ``items[indptr[u]:indptr[u+1]]`` (repeats kept: a re-watch is a step of the sequence)."""
    order = time_order(interactions)
    counts = np.bincount(interactions.users, minlength=interactions.num_users)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, interactions.items[order].astype(np.int64)


def leave_last_out(
    interactions: Interactions, *, validation: bool = True
) -> tuple[Interactions, Interactions | None, Interactions]:
    """``(train, validation, test)`` per user in time order: the last item is the test, the
    item before it the validation (``validation=False``: stays in train, and ``None`` is
    returned). A user keeps at least one training item: with two items there is no validation
    item, with one there is no test item either."""
    order = time_order(interactions)
    users = interactions.users[order]
    counts = np.bincount(users, minlength=interactions.num_users)
    from_end = np.cumsum(counts)[users] - np.arange(len(order)) - 1  # 0 = the user's last
    n = counts[users]
    test_sorted = (from_end == 0) & (n >= 2)
    valid_sorted = validation & (from_end == 1) & (n >= 3)
    role = np.zeros(len(interactions), dtype=np.int8)  # 0 train, 1 validation, 2 test
    role[order[valid_sorted]] = 1
    role[order[test_sorted]] = 2
    train = interactions.subset(role == 0)
    return (
        train,
        (interactions.subset(role == 1) if validation else None),
        interactions.subset(role == 2),
    )


def _read_lines(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"sequence file {path} does not exist; check the path") from None
    except UnicodeDecodeError:
        raise DataError(f"sequence file {path} is not UTF-8 text; give one line per user") from None
    lines = [line.split() for line in text.splitlines()]
    while lines and not lines[-1]:  # a trailing newline is not a user
        lines.pop()
    if not any(lines):
        raise DataError(f"sequence file {path} holds no item; give one line per user of item ids")
    return lines


def _interactions(lines: list[list[str]], users: np.ndarray, items: Vocabulary, num_users: int,
                  offsets: np.ndarray | None = None) -> Interactions:  # fmt: skip
    """Rows of ``lines`` (line ``j`` belongs to user ``users[j]``), timestamped by position
    (plus ``offsets[j]``), with unknown items refused."""
    lengths = np.array([len(line) for line in lines], dtype=np.int64)
    flat = [token for line in lines for token in line]
    encoded = items.encode(flat)
    if len(encoded) and encoded.max() == items.oov_index:
        bad = flat[int(np.flatnonzero(encoded == items.oov_index)[0])]
        raise DataError(f"item {bad!r} is not in the training sequences; give items seen in them")
    starts = np.repeat(np.cumsum(lengths) - lengths, lengths)
    position = np.arange(len(flat), dtype=np.int64) - starts
    if offsets is not None:
        position += np.repeat(offsets, lengths)
    return Interactions(np.repeat(users, lengths), encoded, num_users, len(items),
                        timestamps=position)  # fmt: skip


def read_sequences(path: str | Path) -> Dataset:
    """A dataset from a space-separated sequence file: line ``i`` (1-based, the user id
    ``"i"``) lists that user's items oldest first. Each row's timestamp is its position in its
    line. Item ids are kept as written, in first-seen order."""
    path = Path(path)
    lines = _read_lines(path)
    users = Vocabulary([str(i + 1) for i in range(len(lines))], name="user")
    items = Vocabulary.from_values((t for line in lines for t in line), name="item")
    inter = _interactions(lines, np.arange(len(lines)), items, len(users))
    return Dataset(interactions=inter, users=users, items=items, name=path.name,
                   source={"sequences": str(path.resolve())})  # fmt: skip


@dataclass
class Protocol:
    """The shared ML-1M data's protocol (its README): train on ``train/input.txt``; each
    validation user's query is their training line plus ``context`` (one item each), and the
    ``test`` item is the one they consumed next, ranked against the whole catalogue.

    Attributes:
        dataset: users are the lines of ``train/input.txt``; items its items.
        train: every training line.
        context: the items ``val/input.txt`` adds after each validation user's training line
            (timestamped after it), to append to their sequence before scoring, not trained on.
        test: each validation user's held-out next item (``val/output.txt``).
    """

    dataset: Dataset
    train: Interactions
    context: Interactions
    test: Interactions


def sasrec_protocol(folder: str | Path) -> Protocol:
    """Read the shared data's protocol from ``folder`` (``train/input.txt``, ``val/input.txt``,
    ``val/output.txt``). A validation line must be a training line plus items; it is matched
    to that training line (the files carry no user ids)."""
    folder = Path(folder)
    dataset = read_sequences(folder / "train" / "input.txt")
    lines = _read_lines(folder / "train" / "input.txt")
    val_in = _read_lines(folder / "val" / "input.txt")
    val_out = _read_lines(folder / "val" / "output.txt")
    if len(val_in) != len(val_out):
        raise DataError(
            f"{folder}: val/input.txt has {len(val_in)} lines but val/output.txt {len(val_out)}; "
            "give one answer per input line"
        )
    by_line: dict[tuple, list[int]] = {}
    for i, line in enumerate(lines):
        by_line.setdefault(tuple(line), []).append(i)
    users, extra, offsets = [], [], []
    for j, line in enumerate(val_in):
        for cut in range(len(line) - 1, -1, -1):  # the longest training line it extends
            match = by_line.get(tuple(line[:cut]))
            if match:
                break
        else:
            raise DataError(
                f"{folder}: line {j + 1} of val/input.txt extends no training line not matched "
                "yet; its users must be users of train/input.txt"
            )
        users.append(match.pop(0))  # identical training lines: the first one not taken yet
        extra.append(line[cut:])
        offsets.append(cut)
    users = np.asarray(users, dtype=np.int64)
    n = len(dataset.users)
    context = _interactions(extra, users, dataset.items, n, np.asarray(offsets, dtype=np.int64))
    answers = [line[:1] for line in val_out]
    test = _interactions(answers, users, dataset.items, n,
                         np.array([len(line) for line in val_in], dtype=np.int64))  # fmt: skip
    dataset.name = folder.name
    dataset.source = {"sequences": str(folder.resolve()), "protocol": "sasrec"}
    return Protocol(dataset=dataset, train=dataset.interactions, context=context, test=test)
