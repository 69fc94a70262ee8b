"""The served model and its atomic swap (no web framework here).

:class:`ModelHolder` keeps one :class:`ServedModel` in a single attribute. A request reads that
attribute once and works on the object it got, so a reload — which builds the new model
completely, then rebinds the attribute in one step — never changes a model under a request in
flight: those finish on the old one, later requests see the new one, and none waits.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recfunnel.runs import Recommendations, Run

log = logging.getLogger("recfunnel.serving")

try:
    import orjson

    def dumps(data) -> bytes:
        return orjson.dumps(data)

except ImportError:  # pragma: no cover - orjson is in the serve extra

    def dumps(data) -> bytes:
        return json.dumps(data, allow_nan=False).encode()


class ItemsJSON:
    """The ``items`` array of an answer, as JSON, without a Python dict per item.

    A batch answers up to 256 x 1000 items; one dict each was 256 000 tracked objects a request,
    enough to set off the cyclic garbage collector's full passes, which stop every thread, the
    event loop's included (one took 227 ms of CPU under the heavy load test). Here each item's
    ``{"item": ..., "title": ..., "score":`` prefix is encoded once per served run and kept; an
    answer joins the prefixes with its scores, all bytes (which the collector does not track).
    The bytes are exactly what encoding :meth:`Recommendations.to_records` gives.
    """

    def __init__(self) -> None:
        self._prefix: dict[str, bytes] = {}  # raw item id -> its prefix (a run's titles are fixed)
        self._lock = threading.Lock()

    def __call__(self, rec: Recommendations) -> bytes:
        prefix = self._prefix
        # orjson writes a float list as numbers joined by commas; a number holds no comma
        scores = dumps(rec.scores)[1:-1].split(b",") if rec.scores else []
        parts = []
        for item, title, score in zip(rec.items, rec.titles, scores, strict=True):
            head = prefix.get(item)
            if head is None:
                head = dumps({"item": item, "title": title})[:-1] + b',"score":'
                with self._lock:  # bounded by the catalogue: one entry per item
                    prefix[item] = head
            parts.append(head + score + b"}")
        return b"[" + b",".join(parts) + b"]"


@dataclass
class ServedModel:
    """A loaded run plus what the service reports about it."""

    run: Run
    run_dir: str
    generation: int
    loaded_at: float = field(default_factory=time.time)
    index: dict = field(default_factory=dict)
    items_json: ItemsJSON = field(default_factory=ItemsJSON)  # this run's answer encoder

    def describe(self) -> dict:
        run = self.run
        metrics = {k: v for k, v in run.metrics.items() if k not in ("history", "config")}
        params = run.config.get("params")
        return {  # the folder's name only: a client is never shown a server path
            "run": Path(self.run_dir).name,
            "generation": self.generation,
            "loaded_at": self.loaded_at,
            "model": run.model.kind,
            "num_users": len(run.users),
            "num_items": len(run.items),
            "index": self.index,
            "params": params if isinstance(params, dict) else {},
            "metrics": metrics,
        }


def choose_index(run: Run, index: str = "auto") -> dict:
    """Give a factorized model a top-k index suited to its catalogue; returns a description.

    ``index``: ``"auto"`` (exact below :data:`recfunnel.index_faiss.EXACT_BELOW` items, else
    FAISS IVF checked for recall), ``"exact"``, ``"hnsw"`` or ``"ivf"``.
    """
    from recfunnel.models.base import FactorizedRecommender

    model = run.model
    if not isinstance(model, FactorizedRecommender):
        return {"kind": "model's own", "exact": True}
    from recfunnel.index_faiss import build_index

    sample = np.arange(min(len(run.users), 256))
    queries = model.user_vectors(sample) if len(sample) else None
    built = build_index(model.item_vectors(), kind=index, queries=queries)
    model.set_index(built)
    return built.describe() if hasattr(built, "describe") else {"kind": "exact", "exact": True}


def load_served(run_dir, generation: int = 0, index: str = "auto") -> ServedModel:
    """Load, index and warm up a run (raises ``ArtifactError`` for a broken folder)."""
    run = Run.load(run_dir)
    described = choose_index(run, index)
    if len(run.users):  # warm up: the first request should not pay for lazy set-up
        run.recommend(run.users.ids[0], 1)
    return ServedModel(run=run, run_dir=str(Path(run_dir)), generation=generation, index=described)


class ModelHolder:
    """Holds the current :class:`ServedModel`; :meth:`reload` swaps it atomically."""

    def __init__(self, run_dir, index: str = "auto") -> None:
        self._index = index
        self._lock = threading.Lock()  # one reload at a time; requests never take it
        self.current = load_served(run_dir, 0, index)

    def reload(self, run_dir=None) -> ServedModel:
        """Load ``run_dir`` (default: the served folder again) and swap it in.

        On any error the current model stays and the error propagates.
        """
        with self._lock:
            old = self.current
            new = load_served(run_dir or old.run_dir, old.generation + 1, self._index)
            self.current = new  # one attribute store: atomic for readers
            log.warning("reloaded %s (generation %d)", new.run_dir, new.generation)
            return new

    def reload_logged(self, run_dir=None) -> None:
        """:meth:`reload` for signal handlers: log failures instead of raising."""
        try:
            self.reload(run_dir)
        except Exception as exc:  # keep serving the old model whatever went wrong
            log.error("reload failed, still serving the previous model: %s", exc)
