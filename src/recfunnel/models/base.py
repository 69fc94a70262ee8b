"""The contract every recfunnel model keeps.

Models work in dense indices (the :class:`~recfunnel.data.Interactions` they were fitted on);
raw ids are mapped by :class:`~recfunnel.runs.Run`. Hyper-parameters are keyword arguments stored
unchanged; ``fit`` validates them, learns, and returns ``self``; learned state ends in ``_``.

``recommend(users, k=10, *, exclude_seen=True, filter_items=None, items=None)`` returns
``(ids, scores)``, best first: 1-D arrays for one user (an int), 2-D ``[B, k]`` for a batch.

* ``exclude_seen`` drops the items each user interacted with in training.
* ``filter_items`` are never returned (a deny list).
* ``items`` restricts the answer to these items (an allow list).

Where fewer than ``k`` items remain after exclusions, a single user's answer is shorter and a
batch's rows are padded with id ``-1`` and score ``-inf``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel.data.interactions import Interactions
from recfunnel.errors import NotFittedError, RecfunnelError
from recfunnel.index import BruteForceIndex, TopKIndex, check_k, item_mask, top_k_chunked


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

    seen_: sp.csr_matrix

    # ----------------------------------------------------------- the contract
    @abstractmethod
    def fit(self, train: Interactions, *, validation: Interactions | None = None):
        """Learn from ``train``; returns ``self``."""

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
        """Hyper-parameters as given to the constructor (JSON-serialisable)."""
        return dict(self._params)

    def _set_params(self, params: dict) -> None:
        self._params = dict(params)
        for name, value in params.items():
            setattr(self, name, value)

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
        model = cls(**params)
        shape = tuple(int(x) for x in tensors["seen.shape"])
        indptr = tensors["seen.indptr"].numpy()
        indices = tensors["seen.indices"].numpy()
        model.seen_ = sp.csr_matrix(
            (np.ones(len(indices), dtype=np.float32), indices, indptr), shape=shape
        )
        model._load_learned({k: v for k, v in tensors.items() if not k.startswith("seen.")})
        return model

    @abstractmethod
    def _learned_tensors(self) -> dict[str, torch.Tensor]: ...

    @abstractmethod
    def _load_learned(self, tensors: dict[str, torch.Tensor]) -> None: ...


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
        history = np.unique(np.asarray(history, dtype=np.int64))
        if len(history) == 0:
            raise RecfunnelError("the history is empty; give at least one item")
        if history.min() < 0 or history.max() >= self.num_items:
            raise RecfunnelError(f"item index out of range [0, {self.num_items})")
        k = check_k(k, self.num_items)
        exclude = None
        if exclude_seen:
            indptr = np.array([0, len(history)])
            ones = np.ones(len(history), np.float32)
            exclude = sp.csr_matrix((ones, history, indptr), shape=(1, self.num_items))
        with torch.no_grad():
            query = self.fold_in(history)
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
