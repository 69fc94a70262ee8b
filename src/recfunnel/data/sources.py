"""Where a run's data comes from: a named dataset or files, and how it is split.

A :class:`DataSpec` is recorded in every run's config, so ``recfunnel evaluate`` can rebuild the
exact test split later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from recfunnel.data import movielens
from recfunnel.data.dataset import Dataset
from recfunnel.data.interactions import Interactions
from recfunnel.data.io import Columns, dataset_from_files, encode, read_interactions
from recfunnel.data.splits import random_split, temporal_split
from recfunnel.errors import DataError

DATASETS = (movielens.NAME,)
#: ``last``: each user's last item is the test (see :func:`recfunnel.data.sequences.
#: leave_last_out`); ``sasrec``: the protocol of a SASRec sequence folder (``sequences=DIR``)
SPLITS = ("random", "temporal", "last", "sasrec", *movielens.FOLDS)


@dataclass
class DataSpec:
    """A dataset (or files) and a split.

    Attributes:
        dataset: ``"movielens-100k"``, or ``None`` when ``train`` names a file.
        data_dir: folder with the dataset files (else ``$RECFUNNEL_DATA_DIR``, the cache, or a
            download).
        item_key: MovieLens only: key movies by ``"title"`` (TFRS) or ``"id"``.
        split: ``"random"``, ``"temporal"`` (per-user leave-last-N) or a MovieLens fold
            (``u1``..``u5``, ``ua``, ``ub``); ignored when ``test`` names a file.
        test_fraction, seed: the random split.
        n_last: the temporal split.
        train, test: interaction files (CSV/TSV/JSONL/Parquet).
        sequences: a space-separated sequence file (one line per user, items oldest first), or
            a folder of the SASRec preprocessing (``train/input.txt``, ``val/...``: split
            ``sasrec``); see :mod:`recfunnel.data.sequences`.
        columns: column names in those files.
        duplicates: what to do with repeated (user, item) rows in files: ``auto`` (the model's
            :meth:`~recfunnel.models.Recommender.default_duplicates`, resolved when training
            starts), ``keep``, ``sum``, ``mean``, ``first``, ``last`` or ``error`` (see
            :meth:`~recfunnel.data.Interactions.deduplicate`).
        user_features, item_features: side-feature files, one row per user/item: the id column
            (named as ``columns["user"]`` / ``columns["item"]``) and named feature columns (see
            :func:`recfunnel.features.read_feature_file`).
    """

    dataset: str | None = movielens.NAME
    data_dir: str | None = None
    item_key: str = "title"
    split: str = "random"
    test_fraction: float = 0.2
    seed: int = 42
    n_last: int = 1
    train: str | None = None
    test: str | None = None
    columns: dict = field(default_factory=lambda: asdict(Columns()))
    duplicates: str = "auto"
    user_features: str | None = None
    item_features: str | None = None
    sequences: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def load_dataset(spec: DataSpec) -> Dataset:
    """The dataset named by ``spec`` (vocabularies from the training file for files), with the
    side-feature files' columns added to its user and item tables."""
    dataset = _load_interactions(spec)
    from recfunnel.features import read_feature_file

    for side, path in (("user", spec.user_features), ("item", spec.item_features)):
        if path:
            vocabulary = dataset.users if side == "user" else dataset.items
            id_column = spec.columns.get(side) or side
            table = dataset.user_table if side == "user" else dataset.item_table
            table.update(read_feature_file(path, id_column, vocabulary, side))
    return dataset


def _load_interactions(spec: DataSpec) -> Dataset:
    if spec.sequences:
        from recfunnel.data import sequences

        if _is_folder(spec.sequences):
            return _protocol(spec).dataset
        if spec.split == "sasrec":
            raise DataError(f"split 'sasrec' needs a folder of the SASRec preprocessing "
                            f"(train/input.txt, val/input.txt, val/output.txt), not the file "
                            f"{spec.sequences}")  # fmt: skip
        return sequences.read_sequences(spec.sequences)
    if spec.train:
        dataset, _ = dataset_from_files(
            spec.train, Columns(**spec.columns), duplicates=spec.duplicates
        )
        return dataset
    if spec.dataset == movielens.NAME:
        return movielens.load(spec.data_dir, item_key=spec.item_key)
    names = " or ".join(repr(d) for d in DATASETS)
    raise DataError(
        f"unknown dataset {spec.dataset!r}; use dataset={names}, or train=FILE",
        cli=f"unknown dataset {spec.dataset!r}; use --dataset {' or '.join(DATASETS)}, or "
        "--train FILE",
    )


def encode_file(
    path: str, dataset: Dataset, spec: DataSpec, *, report: dict | None = None
) -> tuple[Interactions, int]:
    """Rows of an interaction file in ``dataset``'s vocabularies, and how many were unknown
    (``report`` receives the counts, see :func:`recfunnel.data.io.encode`)."""
    raw = read_interactions(path, Columns(**spec.columns))
    return encode(raw, dataset.users, dataset.items, duplicates=spec.duplicates, report=report)


def split(
    dataset: Dataset, spec: DataSpec, *, report: dict | None = None
) -> tuple[Interactions, Interactions]:
    """(train, test) per ``spec``. With a test file, ``report`` receives how many of its rows
    were dropped for ids unseen in training (:func:`recfunnel.data.io.encode`)."""
    if spec.test:
        test, _ = encode_file(spec.test, dataset, spec, report=report)
        if len(test) == 0:
            raise DataError(f"no row of {spec.test} has a user and item known from the train file")
        return dataset.interactions, test
    if spec.split == "sasrec" or _is_folder(spec.sequences):
        protocol = _protocol(spec)
        if protocol.dataset.users != dataset.users or protocol.dataset.items != dataset.items:
            raise DataError(
                "split 'sasrec' needs the dataset of its own folder; pass sequences=DIR",
                cli="--split sasrec needs --sequences DIR (the SASRec folder)",
            )
        return protocol.train, protocol.test
    if spec.split == "random":
        return random_split(dataset.interactions, spec.test_fraction, seed=spec.seed)
    if spec.split == "temporal":
        return temporal_split(dataset.interactions, spec.n_last)
    if spec.split == "last":
        from recfunnel.data.sequences import leave_last_out

        train, _, test = leave_last_out(dataset.interactions, validation=False)
        return train, test
    if spec.split in movielens.FOLDS:
        if dataset.name != movielens.NAME:
            raise DataError(f"split {spec.split!r} exists only for {movielens.NAME}")
        return movielens.fold(dataset, spec.split)
    raise DataError(f"unknown split {spec.split!r}; use one of {', '.join(SPLITS)}")


def _is_folder(path: str | None) -> bool:
    return bool(path) and Path(path).is_dir()


def _protocol(spec: DataSpec):
    from recfunnel.data.sequences import sasrec_protocol

    if not _is_folder(spec.sequences):
        raise DataError("split 'sasrec' needs sequences=DIR, a folder of the SASRec preprocessing",
                        cli="--split sasrec needs --sequences DIR (a folder holding "
                        "train/input.txt, val/input.txt and val/output.txt)")  # fmt: skip
    if spec.split not in ("random", "sasrec"):
        raise DataError(f"a SASRec folder is split by its own protocol, not {spec.split!r}; pass "
                        "split='sasrec'", cli=f"a SASRec folder is split by its own protocol, "
                        f"not {spec.split!r}; pass --split sasrec")  # fmt: skip
    folder = Path(spec.sequences).resolve()
    stamp = tuple(
        (folder / part / name).stat().st_mtime_ns if (folder / part / name).exists() else 0
        for part, name in (("train", "input.txt"), ("val", "input.txt"), ("val", "output.txt"))
    )
    if _PROTOCOLS.get("key") != (folder, stamp):  # read once per command, not per use
        _PROTOCOLS.update(key=(folder, stamp), protocol=sasrec_protocol(folder))
    return _PROTOCOLS["protocol"]


_PROTOCOLS: dict = {}


def context(spec: DataSpec) -> Interactions | None:
    """Rows that continue users' histories after the training rows without being trained on
    (the SASRec protocol's query items, see :class:`recfunnel.data.sequences.Protocol`), or
    ``None`` for every other split."""
    if not _is_folder(spec.sequences):
        return None
    return _protocol(spec).context


def load(
    spec: DataSpec, *, report: dict | None = None
) -> tuple[Dataset, Interactions, Interactions]:
    """Dataset, train and test per ``spec`` (``report``: see :func:`split`)."""
    dataset = load_dataset(spec)
    train, test = split(dataset, spec, report=report)
    return dataset, train, test
