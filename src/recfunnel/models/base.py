"""The contract every recfunnel model keeps.

Models work in dense indices (the :class:`~recfunnel.data.Interactions` they were fitted on);
raw ids are mapped by :class:`~recfunnel.runs.Run`. Hyper-parameters live in one frozen config
(:mod:`recfunnel.config`, checked when it is built): ``Model(config)`` or, as sugar,
``Model(dim=64, epochs=3)``. ``fit`` learns and returns ``self``; learned state ends in ``_``.

The base class owns ``fit``: check the data -> remember the training items -> seed -> build
the network (:meth:`Recommender._build_network`, the one method a gradient model must write)
-> the validation closure -> :class:`~recfunnel.training.Trainer` -> move to the CPU. Saving
exports the network's state (``net.*``) and rebuilds it on load. A model with no network (the
most-popular baseline) or made of other models (two-stage) overrides :meth:`Recommender._train`.

``recommend(users, k=10, *, exclude_seen=True, filter_items=None, items=None)`` returns
``(ids, scores)``, best first: 1-D arrays for one user (an int), 2-D ``[B, k]`` for a batch.

* ``exclude_seen`` drops the items each user interacted with in training.
* ``filter_items`` are never returned (a deny list).
* ``items`` restricts the answer to these items (an allow list).

Where fewer than ``k`` items remain after exclusions, a single user's answer is shorter and a
batch's rows are padded with id ``-1`` and score ``-inf``.
"""

from __future__ import annotations

import dataclasses
import os
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from recfunnel.config import Config
from recfunnel.data.interactions import Interactions
from recfunnel.errors import NotFittedError, RecfunnelError
from recfunnel.index import BruteForceIndex, TopKIndex, check_k, item_mask, top_k_chunked

#: bytes per parameter while training, by optimiser: weights, gradients and optimiser state
_TRAINING_BYTES = {"adam": 16, "adamw": 16, "adagrad": 12, "sgd": 8}


class Recommender(ABC):
    """Base class: see the module docstring for the ``recommend`` contract."""

    #: registry name used by the CLI and saved runs (``--model NAME``)
    kind: ClassVar[str] = ""
    #: whether the model predicts ratings (then ``predict`` and rmse/mae apply)
    predicts_ratings: ClassVar[bool] = False
    #: whether ``fit`` takes ``dataset=`` (side features); the experiment passes it then
    needs_dataset: ClassVar[bool] = False
    #: hyper-parameters ``recfunnel tune`` searches (``recfunnel.search_space`` specs)
    search_space: ClassVar[dict] = {}
    #: how ``--duplicates auto`` merges repeated (user, item) rows of a file for this model
    #: (see :meth:`default_duplicates`): ``keep`` (every row is a training example) or ``sum``
    duplicates: ClassVar[str] = "keep"
    #: whether :meth:`fold_in` reads a history in its order (most recent last, repeats kept);
    #: otherwise it gets the history's distinct items
    ordered_history: ClassVar[bool] = False

    #: the model's config class (:mod:`recfunnel.config`)
    config_class: ClassVar[type[Config]]

    seen_: sp.csr_matrix

    def __init__(self, config: Config | dict | None = None, /, **overrides) -> None:
        self.config = self.config_class.create(config, **overrides)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    # ----------------------------------------------------------- the contract
    @abstractmethod
    def score(self, users: np.ndarray) -> torch.Tensor:
        """Scores [B, N] of every item for each user index in ``users`` [B]."""

    def default_duplicates(self) -> str:
        """What ``--duplicates auto`` does with repeated (user, item) rows for this model.

        ``mean`` for a model that predicts ratings (a re-rated item is one rating, at its
        average: ``last`` would depend on file order when there are no timestamps), else the
        class's :attr:`duplicates`: ``keep`` for models trained row by row (each event a
        training example, as TFRS trains two towers; popularity counts every event), ``sum``
        for models of the user x item matrix (WALS, EASE, BPR: the number of repeats, or the
        summed weights, is the confidence of the cell).
        """
        return "mean" if self.predicts_ratings else self.duplicates

    def get_params(self) -> dict:
        """The config as a nested plain dict (JSON-serialisable; saved with a run)."""
        return self.config.to_dict()

    def fit(self, train: Interactions, *, validation: Interactions | None = None,
            progress: bool = False, **context):  # fmt: skip
        """Learn from ``train``; returns ``self``.

        ``validation`` (held-out interactions carved from training data) gives per-epoch
        metrics in ``training_log_`` and, with ``trainer.patience``, early stopping that
        restores the best epoch. ``context`` carries what some models need besides the
        interactions (``dataset=`` for side features, ``shortlists=`` for a ranker).
        """
        train = self._check_data(train, **context)
        self.fit_config_ = self._resolve(train)
        trainer = getattr(self.fit_config_, "trainer", None)
        if trainer is not None:
            from recfunnel.training import resolve_device, seed_everything

            resolve_device(trainer.device)  # no GPU for "cuda": refuse before any work
            self._check_memory(train.num_users, train.num_items)
        self._remember(train)
        if trainer is not None:
            seed_everything(trainer.seed)
        self._train(train, validation, progress=progress, **context)
        return self

    # ------------------------------------------------------------ fit's hooks
    def _resolve(self, train: Interactions) -> Config:
        """The config this fit uses (default: :attr:`config`; a model may settle choices that
        depend on the data, e.g. two-tower ``softmax="auto"``). Kept as ``fit_config_``."""
        return self.config

    def _check_data(self, train: Interactions, **context) -> Interactions:
        """Refuse data this config cannot train on (one line); may return a cleaned copy."""
        return train

    def _build_network(self, train: Interactions, **context):
        """Set ``self.net_`` and return what the trainer trains: a module with
        ``compute_loss(batch)`` (often ``self.net_`` itself) or one with ``fit_epoch()``."""
        raise NotImplementedError(f"{type(self).__name__} must build a network or override _train")

    def _training_rows(self, train: Interactions):
        """What the trainer iterates over (default: the training interactions)."""
        return train

    def _rates(self) -> bool:
        """Whether this fitted config predicts ratings (then validation monitors rmse)."""
        return self.predicts_ratings

    def _train(self, train: Interactions, validation: Interactions | None, *, progress: bool,
               **context) -> None:  # fmt: skip
        """Default: build the network, train it with the one Trainer, move it to the CPU."""
        from recfunnel.training import Trainer

        trained = self._build_network(train, **context)
        config = self.fit_config_.trainer
        if config.monitor == "auto":
            rates = self._rates() and validation is not None and validation.ratings is not None
            config = dataclasses.replace(config, monitor="rmse" if rates else "recall@10")
        validate = self._validator(train, validation, config.monitor)
        self.training_log_ = Trainer(config, progress=progress).fit(
            trained, self._training_rows(train), validate=validate
        )
        self._finish_training()

    def _validator(self, train: Interactions, validation: Interactions | None, monitor: str):
        """The per-epoch validation closure: rating metrics or top-10 ranking metrics."""
        if validation is None or not len(validation):
            return None
        from recfunnel.metrics import evaluate_scores, rating_metrics

        def validate() -> dict[str, float]:
            self._refresh()
            if monitor in ("rmse", "mae"):
                predicted = self.predict(validation.users, validation.items)
                return rating_metrics(predicted, validation.ratings)
            return evaluate_scores(self.score, train, validation, factorized_ks=(),
                                   ranking_ks=(10,))  # fmt: skip

        return validate

    def _refresh(self) -> None:
        """Drop what was derived from the learned state (caches, an index): it changed."""
        self._index = None

    def _finish_training(self) -> None:
        """After training: the network on the CPU, in eval mode, caches dropped."""
        net = getattr(self, "net_", None)
        if isinstance(net, nn.Module):
            net.to("cpu").eval()
        self._refresh()

    def _parameter_count(self, num_users: int, num_items: int) -> int:
        """About how many parameters the network will have (for the memory check)."""
        dim = getattr(self.config, "dim", 0)
        return (num_users + num_items + 2) * (dim + 1)

    def _check_memory(self, num_users: int, num_items: int) -> None:
        """Refuse, before allocating, a network whose training state cannot fit in memory."""
        trainer = self.fit_config_.trainer
        per_parameter = _TRAINING_BYTES.get(trainer.optimizer, 16)
        needed = self._parameter_count(num_users, num_items) * per_parameter
        available = available_memory()
        if available and needed > available:
            raise RecfunnelError(
                f"this {self.kind} model needs about {needed / 2**30:,.1f} GiB for its "
                f"parameters and optimiser state ({num_users:,} users, {num_items:,} items), "
                f"more than the {available / 2**30:,.1f} GiB available; lower --dim"
            )

    def _check_fitted(self) -> None:
        if not hasattr(self, "seen_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit() first")

    @property
    def num_users(self) -> int:
        self._check_fitted()
        return self.seen_.shape[0]

    @property
    def num_items(self) -> int:
        self._check_fitted()
        return self.seen_.shape[1]

    def _remember(self, train: Interactions) -> None:
        if len(train) == 0:
            raise RecfunnelError("the training data is empty; give at least one interaction")
        self.seen_ = train.to_csr().astype(np.float32, copy=False)  # shared, not copied

    def recommend(
        self,
        users,
        k: int = 10,
        *,
        exclude_seen: bool = True,
        filter_items=None,
        items=None,
        seen: sp.csr_matrix | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` items per user; see the module docstring.

        ``seen`` overrides the items to exclude (a CSR row per user in ``users``), e.g. for a
        folded-in user whose history is not in training.
        """
        self._check_fitted()
        single = np.ndim(users) == 0
        users = np.atleast_1d(np.asarray(users, dtype=np.int64))
        if len(users) and (users.min() < 0 or users.max() >= self.num_users):
            raise RecfunnelError(f"user index out of range [0, {self.num_users})")
        k = check_k(k, self.num_items)
        exclude = None
        if exclude_seen:
            exclude = seen if seen is not None else self._seen_rows(users)
        ids, scores = self._top_k(users, k, exclude=exclude, allow=items, deny=filter_items)
        ids, scores = ids.numpy(), scores.numpy()
        if single:
            valid = ids[0] >= 0
            return ids[0][valid], scores[0][valid]
        return ids, scores

    def recommend_history(self, history, k: int = 10, **kwargs):
        """Top-``k`` for a user known only by their items; only some models can fold in."""
        raise RecfunnelError(
            f"{type(self).__name__} cannot recommend from a history alone; "
            "use a two-tower or wals run"
        )

    def _seen_rows(self, users: np.ndarray) -> sp.csr_matrix:
        """CSR rows of ``seen_`` for ``users``; one user is sliced without scipy's indexing
        machinery, which costs more than the whole search on small catalogues."""
        if len(users) != 1:
            return self.seen_[users]
        seen = self.seen_
        start, end = seen.indptr[users[0]], seen.indptr[users[0] + 1]
        indptr = np.array([0, end - start], dtype=seen.indptr.dtype)
        return sp.csr_matrix(
            (seen.data[start:end], seen.indices[start:end], indptr), shape=(1, seen.shape[1])
        )

    def _top_k(self, users, k, *, exclude, allow, deny):
        """Default: score every item, then an exact top-k."""
        scores = self.score(users)
        return top_k_chunked(
            lambda a, b: scores[:, a:b].clone(),
            len(users),
            self.num_items,
            k,
            exclude=exclude,
            mask=item_mask(self.num_items, allow, deny),
        )

    # ------------------------------------------------------- saving/loading
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Learned state as named tensors (saved with safetensors)."""
        self._check_fitted()
        return {
            "seen.indptr": torch.as_tensor(self.seen_.indptr.astype(np.int64)),
            "seen.indices": torch.as_tensor(self.seen_.indices.astype(np.int64)),
            "seen.shape": torch.tensor(self.seen_.shape, dtype=torch.int64),
            **self._learned_tensors(),
        }

    @classmethod
    def from_state(cls, params: dict, tensors: dict[str, torch.Tensor]) -> Recommender:
        """Rebuild a fitted model from :meth:`get_params` and :meth:`state_tensors`."""
        model = cls(cls.config_class.from_dict(params))
        shape = tuple(int(x) for x in tensors["seen.shape"])
        indptr = tensors["seen.indptr"].numpy()
        indices = tensors["seen.indices"].numpy()
        model.seen_ = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=shape
        )
        model._load_learned({k: v for k, v in tensors.items() if not k.startswith("seen.")})
        return model

    def _learned_tensors(self) -> dict[str, torch.Tensor]:
        """Default: the network's state, as ``net.<name>`` tensors."""
        return {
            f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()
        }

    def _load_learned(self, tensors: dict[str, torch.Tensor]) -> None:
        """Default: rebuild an empty network (:meth:`_new_network`) and load ``net.*``."""
        state = {k.removeprefix("net."): v for k, v in tensors.items() if k.startswith("net.")}
        self.net_ = self._new_network(state)
        self.net_.load_state_dict(state)
        self.net_.eval()
        self._refresh()

    def _new_network(self, state: dict[str, torch.Tensor]) -> nn.Module:
        """An untrained network of the fitted shape, to load a saved ``state`` into."""
        raise NotImplementedError(f"{type(self).__name__} must rebuild its network")


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``), else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class FactorizedRecommender(Recommender):
    """A model whose score is a dot product of a user vector and an item vector.

    Recommending goes through a top-k index over the item vectors: exact brute force by default,
    or any :class:`~recfunnel.index.TopKIndex` set with :meth:`set_index` (e.g. FAISS).
    """

    @abstractmethod
    def user_vectors(self, users: np.ndarray) -> torch.Tensor:
        """[B, D] query vectors of user indices."""

    @abstractmethod
    def item_vectors(self) -> torch.Tensor:
        """[N, D] vectors of the whole catalogue."""

    def score(self, users):
        return self.user_vectors(np.asarray(users, dtype=np.int64)) @ self.item_vectors().T

    @property
    def index(self) -> TopKIndex:
        if getattr(self, "_index", None) is None:
            self._index = BruteForceIndex(self.item_vectors())
        return self._index

    def set_index(self, index: TopKIndex | None) -> None:
        """Serve recommendations from ``index`` (``None`` returns to brute force)."""
        self._index = index

    def _top_k(self, users, k, *, exclude, allow, deny):
        with torch.no_grad():
            queries = self.user_vectors(users)
        return self.index.search(queries, k, exclude=exclude, allow=allow, deny=deny)

    def fold_in(self, items: np.ndarray) -> torch.Tensor:
        """[1, D] query vector of a user known only by the item indices they interacted with."""
        raise RecfunnelError(f"{type(self).__name__} cannot fold in a user from their history")

    def recommend_history(
        self, history, k: int = 10, *, exclude_seen: bool = True, filter_items=None, items=None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` for a user who is not in training, from their items (no retraining).

        Same return contract as :meth:`recommend` for one user; ``exclude_seen`` drops the
        history items themselves.
        """
        self._check_fitted()
        history = np.asarray(history, dtype=np.int64).reshape(-1)
        if len(history) == 0:
            raise RecfunnelError("the history is empty; give at least one item")
        if history.min() < 0 or history.max() >= self.num_items:
            raise RecfunnelError(f"item index out of range [0, {self.num_items})")
        k = check_k(k, self.num_items)
        distinct = np.unique(history)
        exclude = None
        if exclude_seen:
            indptr = np.array([0, len(distinct)])
            ones = np.ones(len(distinct), np.float32)
            exclude = sp.csr_matrix((ones, distinct, indptr), shape=(1, self.num_items))
        with torch.no_grad():
            query = self.fold_in(history if self.ordered_history else distinct)
        ids, scores = self.index.search(query, k, exclude=exclude, allow=items, deny=filter_items)
        valid = ids[0] >= 0
        return ids[0][valid].numpy(), scores[0][valid].numpy()

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Items whose vectors are closest (cosine) to ``item``'s, the item itself excluded."""
        self._check_fitted()
        if not 0 <= item < self.num_items:
            raise RecfunnelError(f"item index out of range [0, {self.num_items})")
        k = check_k(k, self.num_items - 1)
        vectors = torch.nn.functional.normalize(self.item_vectors().float(), dim=1)
        scores = vectors @ vectors[item]
        scores[item] = float("-inf")
        top = torch.topk(scores, k)
        return top.indices.numpy(), top.values.numpy()
