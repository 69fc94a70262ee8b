"""Datasets of the quality benchmark (#12): MovieLens 100k, ML-1M sequences, synthetic data.

Each loader returns train/test :class:`~recfunnel.data.Interactions`; :func:`tuning_split` carves
the validation split that tuning and preset derivation look at (never the test rows).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.data import Interactions
from recfunnel.data.splits import random_split, temporal_split
from recfunnel.data.synthetic import power_law

DATA = Path(os.environ.get("RECFUNNEL_DATA_DIR", "/work/shared/data"))


@dataclass
class Sequences:
    """ML-1M as the SASRec preprocessing ships it (see ``ml-1m-sasrec/README.md``).

    ``train``: every user's training line (timestamps = position in the line). The 512
    validation users are scored from ``histories`` (CSR [512, N], their ``val/input.txt`` line)
    against ``targets`` [512]; ``val_users`` are their rows in ``train``.
    """

    train: Interactions
    val_users: np.ndarray
    histories: sp.csr_matrix
    targets: np.ndarray


def _lines(path: Path) -> list[list[int]]:
    return [[int(x) - 1 for x in line.split()] for line in path.read_text().splitlines()]


def ml1m_sequences(folder: Path | None = None) -> Sequences:
    folder = Path(folder or DATA / "ml-1m-sasrec")
    train_lines = _lines(folder / "train" / "input.txt")
    val_lines = _lines(folder / "val" / "input.txt")
    targets = np.array([int(x) - 1 for x in (folder / "val" / "output.txt").read_text().split()])
    num_items = 1 + max(max(max(line) for line in train_lines), max(max(v) for v in val_lines),
                        int(targets.max()))  # fmt: skip
    users = np.repeat(np.arange(len(train_lines)), [len(line) for line in train_lines])
    items = np.concatenate([np.array(line) for line in train_lines])
    position = np.concatenate([np.arange(len(line)) for line in train_lines])
    train = Interactions(users, items, len(train_lines), num_items, timestamps=position)
    by_line = {tuple(line): u for u, line in enumerate(train_lines)}
    val_users = np.array([by_line.get(tuple(v[:-1]), -1) for v in val_lines])
    indptr = np.cumsum([0] + [len(v) for v in val_lines])
    ones = np.ones(indptr[-1], dtype=np.float32)
    histories = sp.csr_matrix(
        (ones, np.concatenate([np.array(v) for v in val_lines]), indptr),
        shape=(len(val_lines), num_items),
    )
    histories.sum_duplicates()
    histories.data[:] = 1.0
    return Sequences(train, val_users, histories, targets)


def ml100k_seed():
    """(train, test) of the TFRS seeded 80/20 split, titles as item keys."""
    from recfunnel.data.sources import DataSpec, load

    _, train, test = load(DataSpec(data_dir=str(DATA / "ml-100k")))
    return train, test


def ml100k_fold(fold: str):
    from recfunnel.data.sources import DataSpec, load

    _, train, test = load(DataSpec(data_dir=str(DATA / "ml-100k"), item_key="id", split=fold))
    return train, test


def synthetic(seed: int = 0, users: int = 3000, items: int = 2000, rows: int = 90_000):
    """Power-law data with cluster structure (known answer: the user's cluster), split 80/20."""
    data = power_law(users, items, rows, seed=seed)
    return random_split(data, 0.2, seed=seed + 42)


def compact(data: Interactions) -> Interactions:
    """The same rows with the catalogue cut down to the items that occur (ids renumbered)."""
    touched, items = np.unique(data.items, return_inverse=True)
    return Interactions(data.users, items, data.num_users, len(touched),
                        timestamps=data.timestamps)  # fmt: skip


def ml1m_small(users: int = 600, seed: int = 0):
    """A look-alike of #12's held-back set from real data: ``users`` seeded random ML-1M users
    (their ``train/input.txt`` lines, positions as timestamps), the catalogue the items they
    touched, every row an interaction; split 80/20 at random (seeded)."""
    train = ml1m_sequences().train
    chosen = np.sort(np.random.default_rng(seed).choice(train.num_users, users, replace=False))
    rows = np.isin(train.users, chosen)
    data = Interactions(np.searchsorted(chosen, train.users[rows]), train.items[rows], users,
                        train.num_items, timestamps=train.timestamps[rows])  # fmt: skip
    return random_split(compact(data), 0.2, seed=seed + 42)


def synthetic_small(seed: int = 0, users: int = 600, items: int = 10_000, rows: int = 105_000):
    """The held-back set's shape from synthetic data: few users, a catalogue several times
    ML-100k's where half the items have three rows or fewer (Zipf exponent 1.1), cluster
    structure as :func:`synthetic`; the catalogue is the items drawn; split 80/20 (seeded)."""
    data = compact(power_law(users, items, rows, seed=seed, item_exponent=1.1))
    return random_split(data, 0.2, seed=seed + 42)


def tuning_split(train: Interactions, *, sequential: bool = False, seed: int = 43):
    """(fit, validation) carved from ``train``: the last item per user for sequences, else a
    seeded random 10% of the rows."""
    if sequential:
        return temporal_split(train, 1)
    return random_split(train, 0.1, seed=seed)


def history_scores(model, histories: sp.csr_matrix, users: np.ndarray) -> torch.Tensor:
    """Scores [B, N] of users known by ``histories``: exact fold-in where the model has one
    (EASE: the row times B; WALS: a least-squares solve), else the trained user's vector."""
    if hasattr(model, "score_history"):
        return model.score_history(histories)
    if model.kind == "wals" and model.config.feedback == "implicit":
        rows = [model.fold_in(histories.indices[a:b]) for a, b in
                zip(histories.indptr[:-1], histories.indptr[1:], strict=True)]  # fmt: skip
        return torch.cat(rows) @ model.item_vectors().T
    return model.score(users)


def sequence_metrics(scores: torch.Tensor, histories: sp.csr_matrix, targets: np.ndarray):
    """NDCG@10 and Recall@10 (= HR@10) of one held-out item per row, history items removed."""
    scores = scores.clone().float()
    coo = histories.tocoo()
    scores[torch.as_tensor(coo.row), torch.as_tensor(coo.col)] = float("-inf")
    target = torch.as_tensor(targets)
    pos = scores[torch.arange(len(target)), target]
    rank = (scores > pos[:, None]).sum(1).numpy()
    hit = rank < 10
    return {"ndcg@10": float(np.mean(np.where(hit, 1 / np.log2(rank + 2), 0.0))),
            "recall@10": float(hit.mean())}  # fmt: skip
