"""Saved runs: a folder holding everything needed to recommend and evaluate again.

Layout of ``RUN_DIR``::

    config.json        format, model kind and hyper-parameters, data spec, versions
    vocab.json         user and item ids (and item titles) in index order
    model.safetensors  learned tensors (no pickle anywhere)
    metrics.json       test metrics of the run
    curves.png         per-epoch loss and validation metrics (runs with a training history,
                       when matplotlib is installed: extra ``plot``)
    manifest.json      SHA-256 of every file above; checked on load

A run is written to a temporary sibling folder and renamed into place only when complete, so a
failed or interrupted command never leaves a half-written or corrupted run behind.

:class:`Run` maps raw ids to the model's indices: its ``recommend`` keeps the model contract
(``(ids, scores)``, best first) in raw ids, adds titles, and answers unknown users with the
most popular items, flagged as a cold-start answer.
"""

from __future__ import annotations

import json
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import recfunnel
from recfunnel.artifacts import (
    atomic_dir,
    check_replaceable,
    follow_umask,
    sha256_bytes,
    sha256_file,
    sha256_stream,
    write_json,
    write_manifest,
)
from recfunnel.data.interactions import Interactions
from recfunnel.data.vocab import Vocabulary
from recfunnel.errors import ArtifactError, RecfunnelError, UnknownIdError
from recfunnel.models import Recommender, model_class

FORMAT = "recfunnel-run"
#: 2: ``params`` is the model's typed config, nested (``trainer``, a two-stage's parts); runs of
#: version 1 (flat hyper-parameters) still load: :meth:`~recfunnel.config.Config.from_dict` routes
#: a flat name to its field, as ``--set`` does
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
FILES = ("config.json", "vocab.json", "model.safetensors", "metrics.json")


@dataclass
class Recommendations:
    """One user's answer: raw item ids and scores, best first, with titles.

    ``cold_start`` is true when the user was unknown and got the most popular items.
    """

    user: str
    items: list[str]
    scores: list[float]
    titles: list[str]
    cold_start: bool = False

    def to_records(self) -> list[dict]:
        return [
            {"item": i, "title": t, "score": s}
            for i, t, s in zip(self.items, self.titles, self.scores, strict=True)
        ]


_sha256 = sha256_file  # kept for callers of the old private name


def check_run_target(target: Path, *, overwrite: bool = False) -> None:
    """Refuse, before any work, an ``--out`` that a run may not replace (see
    :func:`recfunnel.artifacts.check_replaceable`)."""
    check_replaceable(target, overwrite=overwrite)


def _check_finite(tensors: dict, where: str) -> None:
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ArtifactError(
                f"{where}: tensor {name!r} holds NaN or infinite values; the model diverged, "
                "retrain it (lower the learning rate or raise regularization)"
            )


class Run:
    """A fitted model with its vocabularies, config and metrics."""

    def __init__(
        self,
        model: Recommender,
        users: Vocabulary,
        items: Vocabulary,
        *,
        item_titles: list[str] | None = None,
        config: dict | None = None,
        metrics: dict | None = None,
        popularity: np.ndarray | None = None,
    ) -> None:
        self.model = model
        self.users = users
        self.items = items
        self.item_titles = list(item_titles) if item_titles is not None else items.ids
        self.config = config or {}
        self.metrics = metrics or {}
        if popularity is None:
            popularity = np.asarray(model.seen_.sum(0)).reshape(-1)
        self.popularity = np.asarray(popularity, dtype=np.float32)
        # Titles shared by several item ids: over-fetch that many so no title repeats.
        self._title_extra = len(self.item_titles) - len(set(self.item_titles))

    # ------------------------------------------------------------ answering
    def _item_indices(self, raw_items, what: str) -> np.ndarray | None:
        if raw_items is None:
            return None
        indices = self.items.encode(raw_items)
        unknown = [list(raw_items)[i] for i in np.flatnonzero(indices == self.items.oov_index)[:1]]
        if unknown:
            raise UnknownIdError(
                f"unknown item {unknown[0]!r} in {what}; this run's items are keyed by "
                f"{self.item_key_kind}, e.g. {self.items.ids[0]!r}"
            )
        return indices

    @property
    def item_key_kind(self) -> str:
        """``"title"`` when the run's item ids are titles (MovieLens' default), else ``"id"``."""
        data = self.config.get("data", {}) if isinstance(self.config, dict) else {}
        if data.get("dataset") and data.get("item_key", "title") == "title":
            return "title"
        return "id"

    def _finish(self, user, ids, scores, k, cold_start=False) -> Recommendations:
        ids, scores = np.asarray(ids), np.asarray(scores)
        valid = ids >= 0  # -1: a slot left empty by filtering (allow/deny, seen items)
        ids, scores = ids[valid], scores[valid]
        if not self._title_extra:  # no title repeats: nothing to skip, take the first k
            keep_ids = ids[:k].tolist()
            return Recommendations(
                user=str(user),
                items=self.items.decode(keep_ids),
                scores=[float(s) for s in scores[:k].tolist()],
                titles=[self.item_titles[i] for i in keep_ids],
                cold_start=cold_start,
            )
        seen_titles: set[str] = set()
        keep_ids, keep_scores, titles = [], [], []
        for i, s in zip(ids.tolist(), scores.tolist(), strict=False):
            if self.item_titles[i] in seen_titles:
                continue
            title = self.item_titles[i]
            seen_titles.add(title)
            keep_ids.append(i)
            keep_scores.append(float(s))
            titles.append(title)
            if len(keep_ids) == k:
                break
        return Recommendations(
            user=str(user),
            items=self.items.decode(keep_ids),
            scores=keep_scores,
            titles=titles,
            cold_start=cold_start,
        )

    def _fetch(self, k: int) -> int:
        from recfunnel.index import check_k

        k = check_k(k, len(self.items))
        return min(len(self.items), k + self._title_extra)

    def recommend(
        self,
        user,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter_items=None,
        items=None,
        cold_start: bool = True,
    ) -> Recommendations:
        """Top-``k`` items for raw user id ``user``.

        Args:
            exclude_seen: drop the user's training items.
            filter_items: raw item ids never to return; items: raw ids to choose from.
            cold_start: answer an unknown user with the most popular items (flagged) instead of
                raising :class:`~recfunnel.errors.UnknownIdError`.
        """
        fetch = self._fetch(k)
        deny = self._item_indices(filter_items, "the deny list")
        allow = self._item_indices(items, "the allow list")
        if str(user) not in self.users:
            if not cold_start:
                self.users.index(user)  # raises UnknownIdError with the standard message
            return self._popular(user, k, fetch, allow, deny)
        ids, scores = self.model.recommend(
            self.users.index(user), fetch, exclude_seen=exclude_seen, filter_items=deny, items=allow
        )
        return self._finish(user, ids, scores, k)

    def recommend_many(
        self,
        users,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter_items=None,
        items=None,
        cold_start: bool = True,
    ) -> list[Recommendations]:
        """:meth:`recommend` for many raw user ids: the same answers, but the allow and deny
        lists are encoded once and the known users are scored in one batch."""
        users = [str(u) for u in users]
        fetch = self._fetch(k)
        deny = self._item_indices(filter_items, "the deny list")
        allow = self._item_indices(items, "the allow list")
        known = [u in self.users for u in users]
        if not cold_start and not all(known):
            self.users.index(users[known.index(False)])  # the standard UnknownIdError
        rows = [i for i, is_known in enumerate(known) if is_known]
        answers: list = [None] * len(users)
        if rows:
            indices = np.array([self.users.index(users[i]) for i in rows], dtype=np.int64)
            ids, scores = self.model.recommend(
                indices, fetch, exclude_seen=exclude_seen, filter_items=deny, items=allow
            )
            for row, i in enumerate(rows):
                answers[i] = self._finish(users[i], ids[row], scores[row], k)
        for i, is_known in enumerate(known):
            if not is_known:
                answers[i] = self._popular(users[i], k, fetch, allow, deny)
        return answers

    def recommend_history(
        self, history, k: int = 10, *, exclude_seen: bool = True, filter_items=None, items=None
    ) -> Recommendations:
        """Top-``k`` for an anonymous user given the raw ids of items they interacted with
        (folded in, no retraining). Unknown items in the history raise a one-line error."""
        fetch = self._fetch(k)
        indices = self._item_indices(list(history), "the history")
        ids, scores = self.model.recommend_history(
            indices,
            fetch,
            exclude_seen=exclude_seen,
            filter_items=self._item_indices(filter_items, "the deny list"),
            items=self._item_indices(items, "the allow list"),
        )
        return self._finish("(history)", ids, scores, k)

    def similar_items(self, item, k: int = 10) -> Recommendations:
        """The ``k`` items closest to raw item id ``item`` (the item itself excluded).

        Needs a model with ``similar_items`` (factorized models have it); the answer's ``user``
        field holds the query item.
        """
        if not hasattr(self.model, "similar_items"):
            raise RecfunnelError(f"a {self.model.kind} model cannot find similar items")
        from recfunnel.index import check_k

        index = self.items.index(item)  # raises UnknownIdError with the standard message
        k = check_k(k, len(self.items) - 1)
        fetch = min(len(self.items) - 1, k + self._title_extra + 1)
        ids, scores = self.model.similar_items(index, fetch)
        own = self.item_titles[index]
        keep = np.array([self.item_titles[i] != own for i in ids.tolist()], dtype=bool)
        return self._finish(item, np.asarray(ids)[keep], np.asarray(scores)[keep], k)

    def _popular(self, user, k, fetch, allow, deny) -> Recommendations:
        from recfunnel.index import item_mask

        scores = torch.as_tensor(self.popularity).clone()
        mask = item_mask(len(self.items), allow, deny)
        if mask is not None:
            scores[~mask] = float("-inf")
        top = torch.topk(scores, fetch)
        ids = top.indices.masked_fill(torch.isneginf(top.values), -1)
        return self._finish(user, ids.numpy(), top.values.numpy(), k, cold_start=True)

    def recommend_all(self, k: int = 10, *, batch_size: int = 1024):
        """Yield ``(user, rank, item, score)`` rows for every known user, seen items excluded."""
        fetch = self._fetch(k)
        for start in range(0, len(self.users), batch_size):
            users = np.arange(start, min(start + batch_size, len(self.users)))
            ids, scores = self.model.recommend(users, fetch)
            for row, u in enumerate(users):
                rec = self._finish(self.users.ids[u], ids[row], scores[row], k)
                for rank, (item, score) in enumerate(zip(rec.items, rec.scores, strict=False), 1):
                    yield rec.user, rank, item, score

    def recommend_frame(self, users, k: int = 10, *, exclude_seen: bool = True):
        """Top-``k`` of each raw user id as a pandas DataFrame: ``user, rank, item, score,
        title`` (needs pandas; unknown users get the most popular items)."""
        from recfunnel.data.frames import recommendations_frame

        return recommendations_frame(self, users, k, exclude_seen=exclude_seen)

    def train_interactions(self) -> Interactions:
        """The training interactions the model remembers (for excluding seen items)."""
        coo = self.model.seen_.tocoo()
        return Interactions(coo.row, coo.col, coo.shape[0], coo.shape[1])

    # ------------------------------------------------------------ save/load
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Write the run folder atomically (see the module docstring).

        An existing folder at ``path`` is replaced only when it is an intact run holding nothing
        else (``overwrite``: also a run whose files fail their checksums); see
        :func:`recfunnel.artifacts.check_replaceable`. Non-finite weights are refused.
        """
        path = Path(path)
        tensors = dict(self.model.state_tensors())
        tensors["run.popularity"] = torch.as_tensor(self.popularity)
        _check_finite(tensors, f"cannot save run {path}")
        with atomic_dir(path, overwrite=overwrite) as tmp:
            config = {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "recfunnel_version": recfunnel.__version__,
                "model": self.model.kind,
                **{k: v for k, v in self.config.items() if k not in ("format", "model")},
                "params": self.model.get_params(),
            }
            write_json(tmp / "config.json", config)
            write_json(
                tmp / "vocab.json",
                {"users": self.users.ids, "items": self.items.ids, "titles": self.item_titles},
            )
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / "model.safetensors")
            follow_umask(tmp / "model.safetensors")  # safetensors writes 0600
            write_json(tmp / "metrics.json", self.metrics)
            from recfunnel.plots import save_curves, training_records  # a chart, in the manifest

            save_curves(training_records(self.metrics), tmp / "curves.png")
            write_manifest(tmp)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """Load a run folder, checking its manifest and schema; never unpickles.

        Every run file must be a regular file inside the folder (no symlink, FIFO or device:
        checked with ``lstat`` before anything is opened, so a FIFO never blocks), no larger
        than :data:`MAX_FILE_BYTES` allows. The manifest's checksums are verified first, then
        each file is validated against the run schema, so an edited but consistent folder
        fails with one :class:`~recfunnel.errors.ArtifactError` line, never a ``KeyError`` or
        a huge allocation. The error's ``reason`` attribute says what is wrong without naming
        the folder (the HTTP service shows that to clients).
        """
        return _load_run(cls, Path(path))


# ------------------------------------------------------------ loading, validated
# Largest accepted size of each run file: enough for tens of millions of ids, small enough that
# a file edited into a bomb (or a symlink to /dev/zero) cannot exhaust memory.
MAX_FILE_BYTES = {
    "manifest.json": 1 << 20,
    "config.json": 16 << 20,
    "metrics.json": 64 << 20,
    "vocab.json": 4 << 30,
    "model.safetensors": 64 << 30,
}
_FIX = "retrain or restore the run"


def _broken(folder: Path, reason: str) -> ArtifactError:
    """An ``ArtifactError`` naming the folder, with the folder-free ``reason`` attached."""
    exc = ArtifactError(f"{folder}: {reason}")
    exc.reason = reason
    return exc


def _open_regular(folder: Path, name: str) -> int:
    """Open ``folder/name`` for reading only if it is a regular file (not a link, FIFO, ...)."""
    file = folder / name
    try:
        before = os.lstat(file)
    except FileNotFoundError:
        raise _broken(folder, f"{name} is missing; the run is incomplete, {_FIX}") from None
    except OSError as exc:
        raise _broken(folder, f"cannot read {name} ({exc.strerror}); {_FIX}") from None
    if not stat.S_ISREG(before.st_mode):
        raise _broken(
            folder,
            f"{name} is not a regular file (a symlink, FIFO, device or folder); run files must "
            f"be plain files inside the run folder, {_FIX}",
        )
    if before.st_size > MAX_FILE_BYTES[name]:
        raise _broken(folder, f"{name} is larger than {MAX_FILE_BYTES[name] >> 20} MiB; {_FIX}")
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(file, flags)
    except OSError as exc:
        raise _broken(folder, f"cannot read {name} ({exc.strerror}); {_FIX}") from None
    after = os.fstat(fd)
    if (after.st_ino, after.st_dev) != (before.st_ino, before.st_dev):
        os.close(fd)
        raise _broken(folder, f"{name} changed while it was being opened; try again")
    return fd


def _read_limited(folder: Path, name: str) -> bytes:
    fd = _open_regular(folder, name)
    limit = MAX_FILE_BYTES[name]
    with os.fdopen(fd, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise _broken(folder, f"{name} is larger than {limit >> 20} MiB; {_FIX}")
    return data


def _hash_file(folder: Path, name: str) -> str:
    limit = MAX_FILE_BYTES[name]
    with os.fdopen(_open_regular(folder, name), "rb") as fh:
        digest = sha256_stream(fh, limit)
    if digest is None:
        raise _broken(folder, f"{name} is larger than {limit >> 20} MiB; {_FIX}")
    return digest


def _parse_json(folder: Path, name: str, data: bytes):
    try:
        return json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise _broken(folder, f"{name} is not valid JSON; {_FIX}") from None


def _is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_schema(folder: Path, config, vocab, metrics) -> None:
    """Validate the parsed JSON files against the run schema (after the checksums matched)."""
    from recfunnel.models import MODELS

    def bad(what: str) -> ArtifactError:
        return _broken(folder, f"{what}; the run does not follow the run schema, {_FIX}")

    if not isinstance(config, dict):
        raise bad("config.json is not a JSON object")
    if config.get("format") != FORMAT or config.get("schema_version") not in READABLE_VERSIONS:
        fmt, version = config.get("format"), config.get("schema_version")
        raise _broken(
            folder,
            f"format {repr(fmt)[:40]} version {repr(version)[:20]}; this recfunnel reads "
            f"{FORMAT!r} version {SCHEMA_VERSION}",
        )
    if not isinstance(config.get("model"), str) or config["model"] not in MODELS:
        raise bad("config.json names no known model")
    if not isinstance(config.get("params"), dict):
        raise bad("config.json has no 'params' object")
    if not isinstance(vocab, dict) or not _is_str_list(vocab.get("users")):
        raise bad("vocab.json has no 'users' list of strings")
    if not _is_str_list(vocab.get("items")):
        raise bad("vocab.json has no 'items' list of strings")
    titles = vocab.get("titles")
    if titles is not None and (not _is_str_list(titles) or len(titles) != len(vocab["items"])):
        raise bad("vocab.json 'titles' is not one string per item")
    if not isinstance(metrics, dict):
        raise bad("metrics.json is not a JSON object")


def _check_tensors(folder: Path, tensors: dict, num_users: int, num_items: int) -> None:
    """The tensors every run has agree with the vocabularies (before any model is built)."""

    def bad(what: str) -> ArtifactError:
        return _broken(folder, f"model.safetensors: {what}; {_FIX}")

    need = ("run.popularity", "seen.shape", "seen.indptr", "seen.indices")
    missing = [name for name in need if name not in tensors]
    if missing:
        raise bad(f"tensor {missing[0]!r} is missing")
    popularity = tensors["run.popularity"]
    if popularity.dtype.is_complex or tuple(popularity.shape) != (num_items,):
        raise bad("the popularity vector does not have one value per item")
    shape, indptr, indices = (tensors[n] for n in need[1:])
    if tuple(shape.shape) != (2,) or shape.tolist() != [num_users, num_items]:
        raise bad("the seen-items matrix and the vocabularies disagree on the number of ids")
    if indptr.dtype != torch.int64 or indices.dtype != torch.int64:
        raise bad("the seen-items matrix is not stored as int64")
    if indptr.dim() != 1 or indices.dim() != 1 or len(indptr) != num_users + 1:
        raise bad("the seen-items matrix has the wrong shape")
    if (
        indptr[0] != 0
        or indptr[-1] != len(indices)
        or bool((indptr[1:] < indptr[:-1]).any())
        or (len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= num_items))
    ):
        raise bad("the seen-items matrix is inconsistent")


def _build_model(folder: Path, kind: str, params: dict, tensors: dict) -> Recommender:
    """``from_state``, first on the meta device (allocates nothing): a size edited into the
    config then fails on the stored tensors' shapes instead of allocating terabytes."""
    cls = model_class(kind)
    errors = (KeyError, IndexError, TypeError, ValueError, AttributeError, RuntimeError,
              RecursionError, OverflowError, MemoryError, NotImplementedError)  # fmt: skip
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # load_state_dict into meta tensors is a no-op
            cls.from_state(dict(params), dict(tensors))
    except RecfunnelError as exc:
        raise _broken(folder, f"the model's settings are invalid ({exc}); {_FIX}") from None
    except errors as exc:
        if _size_problem(exc):
            raise _broken(
                folder, f"the model's settings and stored tensors disagree; {_FIX}"
            ) from None
        # other failures on the meta device are for the real build below to report
    try:
        return cls.from_state(dict(params), dict(tensors))
    except RecfunnelError as exc:
        raise _broken(folder, f"the model's settings are invalid ({exc}); {_FIX}") from None
    except errors as exc:
        raise _broken(
            folder,
            f"the model cannot be rebuilt from its settings and tensors "
            f"({type(exc).__name__}); {_FIX}",
        ) from None


def _size_problem(exc: BaseException) -> bool:
    text = str(exc)
    return isinstance(exc, KeyError) or any(
        word in text for word in ("size mismatch", "shape", "Missing key", "Unexpected key")
    )


def _load_run(cls, path: Path) -> Run:
    try:
        is_dir = path.is_dir()
    except (OSError, ValueError) as exc:  # e.g. a name too long, or a NUL byte
        problem = f"cannot look into {str(path)[:80]!r}: {getattr(exc, 'strerror', None) or exc}"
        raise ArtifactError(
            f"{problem}; pass a run folder written by Run.save",
            cli=f"{problem}; pass the folder given to train --out",
        ) from None
    if not is_dir or not os.path.lexists(path / "config.json"):
        problem = f"{path} is not a recfunnel run folder (no config.json)"
        exc = ArtifactError(
            f"{problem}; pass a run folder written by Run.save",
            cli=f"{problem}; pass the folder given to train --out",
        )
        exc.reason = "not a recfunnel run folder; pass a run folder written by train --out"
        raise exc
    try:
        manifest = json.loads(_read_limited(path, "manifest.json").decode("utf-8"))
    except ArtifactError:
        raise
    except (ValueError, RecursionError):
        raise _broken(path, f"manifest.json is unreadable; {_FIX}") from None
    if not isinstance(manifest, dict):
        raise _broken(path, f"manifest.json is not a JSON object; {_FIX}")
    raw = {}
    for name in FILES:
        if name == "model.safetensors":
            digest = _hash_file(path, name)
        else:
            raw[name] = _read_limited(path, name)
            digest = sha256_bytes(raw[name])
        if digest != manifest.get(name):
            raise _broken(
                path,
                f"{name} does not match its checksum in manifest.json (truncated or modified); "
                f"refusing to load it, {_FIX}",
            )
    config = _parse_json(path, "config.json", raw["config.json"])
    vocab = _parse_json(path, "vocab.json", raw["vocab.json"])
    metrics = _parse_json(path, "metrics.json", raw["metrics.json"])
    del raw
    _check_schema(path, config, vocab, metrics)
    os.close(_open_regular(path, "model.safetensors"))  # still a plain file, not a link
    try:
        tensors = load_file(path / "model.safetensors")
    except (SafetensorError, ValueError, OSError, RuntimeError) as exc:
        raise _broken(
            path, f"model.safetensors cannot be read ({type(exc).__name__}); {_FIX}"
        ) from None
    _check_tensors(path, tensors, len(vocab["users"]), len(vocab["items"]))
    try:
        _check_finite(tensors, "model.safetensors")
    except ArtifactError as exc:
        raise _broken(path, str(exc)) from None
    try:
        users = Vocabulary(vocab["users"], name="user")
        items = Vocabulary(vocab["items"], name="item")
    except RecfunnelError as exc:
        raise _broken(path, f"vocab.json: {exc}") from None
    popularity = tensors.pop("run.popularity").float().numpy()
    model = _build_model(path, config["model"], config["params"], tensors)
    seen = getattr(model, "seen_", None)
    if seen is None or seen.shape != (len(users), len(items)):
        raise _broken(path, f"model and vocabulary sizes disagree; {_FIX}")
    return cls(
        model, users, items, item_titles=vocab.get("titles"), config=config,
        metrics=metrics, popularity=popularity,
    )  # fmt: skip
