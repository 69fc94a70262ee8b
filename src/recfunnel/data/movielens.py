"""MovieLens 100k (GroupLens): ratings, the movie table and the user table.

The files are found in a local folder (``data_dir``, or ``$RECFUNNEL_DATA_DIR`` holding
``ml-100k/``), else downloaded once from GroupLens into the cache folder
(``$RECFUNNEL_CACHE_DIR``, default ``~/.cache/recfunnel``) and checked against known SHA-256
sums. The licence forbids redistributing the files, so they are never bundled.

Movies can be keyed by id (1682 movies) or by title (1664 distinct titles) as the TFRS tutorial
does; keyed by title, ratings of two ids that share a title become one item.
"""

from __future__ import annotations

import os
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np

from recfunnel.artifacts import sha256_file
from recfunnel.data.dataset import Dataset
from recfunnel.data.interactions import Interactions
from recfunnel.data.vocab import Vocabulary
from recfunnel.errors import DataError

URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
SHA256 = {
    "u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490",
    "u.item": "553841ebc7de3a0fd0d6b62a204ea30c1e651aacfb2814c7a6584ac52f2c5701",
    "u.user": "f120e114da2e8cf314fd28f99417c94ae9ddf1cb6db8ce0e4b5995d40e90e62c",
}
GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")
NAME = "movielens-100k"


def cache_dir() -> Path:
    return Path(os.environ.get("RECFUNNEL_CACHE_DIR", Path.home() / ".cache" / "recfunnel"))


def _looks_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in SHA256)


_sha256 = sha256_file


def download(target: Path) -> Path:
    """Download and unpack ml-100k into ``target/ml-100k``, verifying checksums."""
    from tqdm.auto import tqdm

    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target, prefix=".download-") as tmp:
        archive = Path(tmp) / "ml-100k.zip"
        try:
            with urllib.request.urlopen(URL, timeout=60) as response, archive.open("wb") as out:
                total = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc="ml-100k.zip") as bar:
                    for block in iter(lambda: response.read(1 << 16), b""):
                        out.write(block)
                        bar.update(len(block))
        except OSError as exc:
            problem = f"could not download MovieLens 100k from {URL} ({exc}); download it by hand"
            env = "(or set RECFUNNEL_DATA_DIR to the folder holding ml-100k/)"
            raise DataError(
                f"{problem} and pass data_dir=FOLDER {env}",
                cli=f"{problem} and pass --data-dir FOLDER {env}",
            ) from None
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        unpacked = Path(tmp) / "ml-100k"
        for name, expected in SHA256.items():
            if _sha256(unpacked / name) != expected:
                raise DataError(
                    f"checksum mismatch for downloaded {name}; delete {target} and retry"
                )
        final = target / "ml-100k"
        if not final.exists():
            os.replace(unpacked, final)
    return target / "ml-100k"


def find(data_dir: str | Path | None = None, *, allow_download: bool = True) -> Path:
    """The folder holding the ml-100k files, downloading them if nowhere to be found."""
    candidates: list[Path] = []
    if data_dir is not None:
        candidates += [Path(data_dir), Path(data_dir) / "ml-100k"]
    elif os.environ.get("RECFUNNEL_DATA_DIR"):
        env = Path(os.environ["RECFUNNEL_DATA_DIR"])
        candidates += [env / "ml-100k", env]
    candidates.append(cache_dir() / "ml-100k")
    for folder in candidates:
        if _looks_complete(folder):
            return folder
    if data_dir is not None:
        problem = (
            f"no MovieLens 100k files (u.data, u.item, u.user) in {data_dir} or {data_dir}/ml-100k"
        )
        raise DataError(
            f"{problem}; point data_dir= at the unpacked ml-100k folder",
            cli=f"{problem}; point --data-dir at the unpacked ml-100k folder",
        )
    if not allow_download:
        raise DataError(
            "MovieLens 100k not found; set RECFUNNEL_DATA_DIR or pass data_dir=",
            cli="MovieLens 100k not found; set RECFUNNEL_DATA_DIR or pass --data-dir",
        )
    return download(cache_dir())


def _read_table(path: Path, sep: str, encoding: str = "latin-1") -> list[list[str]]:
    with path.open(encoding=encoding) as fh:
        return [line.rstrip("\n").split(sep) for line in fh if line.strip()]


def _read_ratings(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"file not found: {path}; is the ml-100k folder complete?")
    data = np.loadtxt(path, dtype=np.int64, delimiter="\t", ndmin=2)
    if data.shape[1] != 4:
        raise DataError(f"{path} should have 4 tab-separated columns (user item rating time)")
    return data


def load(data_dir: str | Path | None = None, *, item_key: str = "title") -> Dataset:
    """MovieLens 100k as a :class:`Dataset`.

    Args:
        data_dir: folder with the ml-100k files (see the module docstring for the search order).
        item_key: ``"title"`` (as in the TFRS tutorial) or ``"id"``.

    Vocabularies cover the whole user and movie tables (metadata, not interactions), so every
    split of this dataset shares them. ``item_table`` holds ``genres`` (float [N, 19]),
    ``year`` (int, 0 when unknown) and ``movie_id``; ``user_table`` holds ``age``, ``gender``,
    ``occupation`` and ``zip``.
    """
    if item_key not in ("title", "id"):
        raise DataError(f"item_key must be 'title' or 'id', not {item_key!r}")
    folder = find(data_dir)
    movies = _read_table(folder / "u.item", "|")
    users_rows = _read_table(folder / "u.user", "|")
    ratings = _read_ratings(folder / "u.data")

    movie_ids = [row[0] for row in movies]
    titles_by_id = {row[0]: row[1] for row in movies}
    key_of_id = titles_by_id if item_key == "title" else {m: m for m in movie_ids}
    items = Vocabulary.from_values((key_of_id[m] for m in movie_ids), name="item")
    first_row = {}
    for row in movies:
        first_row.setdefault(key_of_id[row[0]], row)
    table_rows = [first_row[key] for key in items.ids]
    years = [int(row[2][-4:]) if row[2][-4:].isdigit() else 0 for row in table_rows]
    item_table = {
        "movie_id": np.array([int(row[0]) for row in table_rows], dtype=np.int64),
        "year": np.array(years, dtype=np.int64),
        "genres": np.array([[float(g) for g in row[5:24]] for row in table_rows], np.float32),
    }
    users = Vocabulary((row[0] for row in users_rows), name="user")
    user_table = {
        "age": np.array([int(row[1]) for row in users_rows], dtype=np.int64),
        "gender": np.array([row[2] for row in users_rows]),
        "occupation": np.array([row[3] for row in users_rows]),
        "zip": np.array([row[4] for row in users_rows]),
    }
    interactions = _encode(ratings, users, items, key_of_id)
    return Dataset(
        interactions=interactions,
        users=users,
        items=items,
        item_titles=[row[1] for row in table_rows],
        user_table=user_table,
        item_table=item_table,
        name=NAME,
        source={"dataset": NAME, "path": str(folder), "item_key": item_key},
    )


def _encode(rows: np.ndarray, users: Vocabulary, items: Vocabulary, key_of_id) -> Interactions:
    u = users.encode(rows[:, 0].astype(str), unknown="raise")
    i = items.encode((key_of_id[str(m)] for m in rows[:, 1]), unknown="raise")
    inter = Interactions(
        users=u,
        items=i,
        num_users=len(users),
        num_items=len(items),
        ratings=rows[:, 2].astype(np.float32),
        timestamps=rows[:, 3],
    )
    # Keyed by title, a user may have rated two ids of one title: keep their latest rating.
    return inter.deduplicate("last") if inter.duplicate_pairs() else inter


def fold(dataset: Dataset, name: str) -> tuple[Interactions, Interactions]:
    """The predefined GroupLens split ``name`` (``u1``..``u5``, ``ua``, ``ub``) as (train, test)."""
    if name not in FOLDS:
        raise DataError(f"unknown MovieLens fold {name!r}; use one of {', '.join(FOLDS)}")
    folder = Path(dataset.source["path"])
    by_id = dataset.source.get("item_key") == "id"
    key_of_id = {row[0]: row[0] if by_id else row[1] for row in _read_table(folder / "u.item", "|")}
    train = _encode(_read_ratings(folder / f"{name}.base"), dataset.users, dataset.items, key_of_id)
    test = _encode(_read_ratings(folder / f"{name}.test"), dataset.users, dataset.items, key_of_id)
    return train, test
