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
    sha256_file,
    write_json,
    write_manifest,
)
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
        """Load a run folder, checking its manifest and schema; never unpickles."""
        path = Path(path)
        try:
            is_run = (path / "config.json").is_file()
        except OSError as exc:  # e.g. a name too long for the file system
            problem = f"cannot look into {str(path)[:80]!r}: {exc.strerror}"
            raise ArtifactError(
                f"{problem}; pass a run folder written by Run.save",
                cli=f"{problem}; pass the folder given to train --out",
            ) from None
        if not is_run:
            problem = f"{path} is not a recfunnel run folder (no config.json)"
            raise ArtifactError(
                f"{problem}; pass a run folder written by Run.save",
                cli=f"{problem}; pass the folder given to train --out",
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
        _check_finite(tensors, f"cannot load run {path}")
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
