"""Saved runs: a folder holding everything needed to recommend and evaluate again.

Layout of ``RUN_DIR``::

    config.json        format, model kind and hyper-parameters, data spec, versions
    vocab.json         user and item ids (and item titles) in index order
    model.safetensors  learned tensors (no pickle anywhere)
    metrics.json       test metrics of the run
    manifest.json      SHA-256 of every file above; checked on load

A run is written to a temporary sibling folder and renamed into place only when complete, so a
failed or interrupted command never leaves a half-written or corrupted run behind.

:class:`Run` maps raw ids to the model's indices: its ``recommend`` keeps the model contract
(``(ids, scores)``, best first) in raw ids, adds titles, and answers unknown users with the
most popular items, flagged as a cold-start answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import recfunnel
from recfunnel.data.interactions import Interactions
from recfunnel.data.vocab import Vocabulary
from recfunnel.errors import ArtifactError, RecfunnelError, UnknownIdError
from recfunnel.models import Recommender, model_class

FORMAT = "recfunnel-run"
SCHEMA_VERSION = 1
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def check_run_target(target: Path) -> None:
    """Refuse to replace anything but an empty folder or an earlier run."""
    target = Path(target)
    is_run = (target / "config.json").is_file()
    if target.exists() and not is_run and (not target.is_dir() or any(target.iterdir())):
        raise RecfunnelError(f"{target} exists and is not a recfunnel run; choose another --out")


def atomic_dir(target: Path):
    """Context manager: yields a temporary folder that replaces ``target`` on success."""
    return _AtomicDir(Path(target))


class _AtomicDir:
    def __init__(self, target: Path) -> None:
        self.target = target

    def __enter__(self) -> Path:
        check_run_target(self.target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(
            tempfile.mkdtemp(prefix=f".{self.target.name}.tmp-", dir=self.target.parent)
        )
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.target.exists():
            old = self.target.parent / f".{self.target.name}.old-{os.getpid()}"
            os.replace(self.target, old)
        os.replace(self.tmp, self.target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


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
        unknown = [r for r, i in zip(raw_items, indices, strict=False) if i == self.items.oov_index]
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
        seen_titles: set[str] = set()
        keep_ids, keep_scores, titles = [], [], []
        for i, s in zip(ids.tolist(), scores.tolist(), strict=False):
            if i < 0 or self.item_titles[i] in seen_titles:
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

    def train_interactions(self) -> Interactions:
        """The training interactions the model remembers (for excluding seen items)."""
        coo = self.model.seen_.tocoo()
        return Interactions(coo.row, coo.col, coo.shape[0], coo.shape[1])

    # ------------------------------------------------------------ save/load
    def save(self, path: str | Path) -> Path:
        """Write the run folder atomically (see the module docstring)."""
        path = Path(path)
        with atomic_dir(path) as tmp:
            config = {
                "format": FORMAT,
                "schema_version": SCHEMA_VERSION,
                "recfunnel_version": recfunnel.__version__,
                "model": self.model.kind,
                **{k: v for k, v in self.config.items() if k not in ("format", "model")},
                "params": self.model.get_params(),
            }
            _write_json(tmp / "config.json", config)
            _write_json(
                tmp / "vocab.json",
                {"users": self.users.ids, "items": self.items.ids, "titles": self.item_titles},
            )
            tensors = dict(self.model.state_tensors())
            tensors["run.popularity"] = torch.as_tensor(self.popularity)
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / "model.safetensors")
            _write_json(tmp / "metrics.json", self.metrics)
            _write_json(tmp / "manifest.json", {name: _sha256(tmp / name) for name in FILES})
        return path

    @classmethod
    def load(cls, path: str | Path) -> Run:
        """Load a run folder, checking its manifest and schema; never unpickles."""
        path = Path(path)
        try:
            is_run = (path / "config.json").is_file()
        except OSError as exc:  # e.g. a name too long for the file system
            raise ArtifactError(
                f"cannot look into {str(path)[:80]!r}: {exc.strerror}; pass the folder given to "
                "train --out"
            ) from None
        if not is_run:
            raise ArtifactError(
                f"{path} is not a recfunnel run folder (no config.json); "
                "pass the folder given to train --out"
            )
        try:
            manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ArtifactError(
                f"{path}/manifest.json is missing or unreadable; retrain the run"
            ) from None
        for name in FILES:
            file = path / name
            if not file.is_file():
                raise ArtifactError(f"{file} is missing; the run is incomplete, retrain it")
            if _sha256(file) != manifest.get(name):
                raise ArtifactError(
                    f"{file} does not match its checksum in manifest.json (truncated or "
                    "modified); refusing to load it, retrain or restore the run"
                )
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
            vocab = json.loads((path / "vocab.json").read_text(encoding="utf-8"))
            metrics = json.loads((path / "metrics.json").read_text(encoding="utf-8"))
            tensors = load_file(path / "model.safetensors")
        except (ValueError, SafetensorError) as exc:
            raise ArtifactError(f"cannot read run {path}: {exc}") from None
        if config.get("format") != FORMAT or config.get("schema_version") != SCHEMA_VERSION:
            raise ArtifactError(
                f"{path} has format {config.get('format')!r} version "
                f"{config.get('schema_version')!r}; this recfunnel reads {FORMAT!r} version "
                f"{SCHEMA_VERSION}"
            )
        popularity = tensors.pop("run.popularity").numpy()
        model = model_class(config["model"]).from_state(config["params"], tensors)
        users = Vocabulary(vocab["users"], name="user")
        items = Vocabulary(vocab["items"], name="item")
        if model.seen_.shape != (len(users), len(items)):
            raise ArtifactError(f"{path}: model and vocabulary sizes disagree; retrain the run")
        return cls(
            model, users, items, item_titles=vocab.get("titles"), config=config,
            metrics=metrics, popularity=popularity,
        )  # fmt: skip
