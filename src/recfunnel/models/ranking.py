"""Ranking: predict how much a user will like an item from ids, side features and context.

One network, :class:`RankingNet`, with interchangeable heads over the user and item
representations (letters: B batch, D dim, F features, L bag length, M candidates per row):

* ``user(u) = e_u [+ sum_f w_f v_f over u's features] [+ |H(u)|^-1/2 sum_{j in H(u)} y_j]``
  and ``item(i) = e_i [+ sum_f w_f v_f over i's features]`` - ids plus a factorization-machine
  bag of feature embeddings (Rendle 2010) and, optionally, SVD++'s implicit feedback over the
  user's *training* items (Koren 2008).
* heads: ``dot`` - biased factorization ``mu + b_u + b_i + <user, item>``; ``mlp`` - TFRS's
  basic ranking model, an MLP (256-64-1) over ``[user, item]``; ``dcn`` - DCN-v2 cross layers
  (Wang et al. 2021, full or low-rank) then the MLP; ``dot+mlp`` / ``dot+dcn`` add both.
* objectives: ``rating`` (MSE on ratings), ``watch`` (binary cross-entropy: observed rows are
  positives, ``negatives`` uniformly sampled items per row are negatives) and ``listwise``
  (softmax cross-entropy over a candidate list of the positive and ``negatives`` sampled
  items; negatives are drawn by popularity^0.75 so the list looks like a retrieved shortlist).
  Given per-user ``shortlists`` (the two-stage model passes its retrieval stage's), negatives
  are drawn from the user's own shortlist instead: the hard negatives the ranker must order.

A user or item unseen in training keeps its own features: its id row is the OOV row, but its
feature bag is its own (:meth:`RankingModel.score_new_user`, :meth:`RankingModel.score_new_item`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.config import SPARSE_RANKING_ABOVE, RankingConfig, sparse_updates_for
from recfunnel.errors import RecfunnelError
from recfunnel.features import FeatureMatrix, FeatureSpec, json_tensor, tensor_json
from recfunnel.losses import mse_loss
from recfunnel.models.autoencoder import ItemAutoencoder
from recfunnel.models.base import Recommender, available_memory
from recfunnel.models.towers import pool_history, pooled, pooling_matrices


def bce_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean"):
    """Binary cross-entropy on logits, [B] -> scalar."""
    return F.binary_cross_entropy_with_logits(logits, labels, reduction=reduction)


def listwise_softmax_loss(logits: torch.Tensor, reduction: str = "mean"):
    """Softmax cross-entropy over candidate lists whose column 0 is the positive: [B, M] ->
    scalar. E.g. logits ``[[2, 0]]`` give ``log(1 + e^-2) = 0.1269``."""
    return F.cross_entropy(
        logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device),
        reduction=reduction,
    )  # fmt: skip


class CrossLayer(nn.Module):
    """DCN-v2 cross layer: ``x_{l+1} = x0 * (W x_l + b) + x_l``, with ``W = U V^T`` of rank
    ``rank`` when given (low-rank DCN-Mix without experts). Shapes: [B, D'] -> [B, D']."""

    def __init__(self, width: int, rank: int | None = None) -> None:
        super().__init__()
        if rank:
            self.project = nn.Sequential(nn.Linear(width, rank, bias=False), nn.Linear(rank, width))
        else:
            self.project = nn.Linear(width, width)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.project(x) + x


def _widen(x: torch.Tensor, width: int) -> torch.Tensor:
    """Pad [n, L] with zeros on the right to [n, width]."""
    return F.pad(x, (0, width - x.shape[1]))


def _bag(table: nn.Embedding, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted sum of embeddings: ids, weights [B, L] -> [B, D]."""
    return (table(ids) * weights.unsqueeze(-1)).sum(1)


class RankingNet(nn.Module):
    """The ranking network (see the module docstring). Predicts a score per (user, item)."""

    def __init__(
        self,
        num_users: int,
        num_items: int,
        *,
        dim: int,
        head: str,
        hidden: tuple[int, ...],
        cross_layers: int,
        cross_rank: int | None,
        user_features: FeatureMatrix | None,
        item_features: FeatureMatrix | None,
        history: sp.csr_matrix | None,
        context_buckets: int,
        objective: str,
        negatives: int,
        l2: float,
        item_sampling: torch.Tensor | None,
        init_scale: float,
        rating_mean: float,
        shortlists: torch.Tensor | None = None,
        sparse: bool = False,
    ) -> None:
        super().__init__()
        self.head, self.objective, self.negatives, self.l2 = head, objective, negatives, l2
        self.num_users, self.num_items = num_users, num_items
        # sparse: every table gives sparse gradients (a lazy Adam moves the rows a step
        # touches) and the SVD++ term pools the batch's users only (see _implicit)
        self.sparse = sparse
        self.user_emb = nn.Embedding(num_users + 1, dim, sparse=sparse)
        self.item_emb = nn.Embedding(num_items + 1, dim, sparse=sparse)
        self.user_bias = nn.Embedding(num_users + 1, 1, sparse=sparse)
        self.item_bias = nn.Embedding(num_items + 1, 1, sparse=sparse)
        self.global_bias = nn.Parameter(torch.tensor([float(rating_mean)]))
        for table in (self.user_emb, self.item_emb):
            nn.init.normal_(table.weight, 0.0, init_scale)
        for table in (self.user_bias, self.item_bias):
            nn.init.zeros_(table.weight)
        self.has_user_features = user_features is not None
        self.has_item_features = item_features is not None
        for side, features in (("user", user_features), ("item", item_features)):
            if features is None:
                continue
            self.register_buffer(f"{side}_feat_ids", features.ids)
            self.register_buffer(f"{side}_feat_w", features.weights)
            table = nn.Embedding(features.num_features, dim, sparse=sparse)
            bias = nn.Embedding(features.num_features, 1, sparse=sparse)
            nn.init.normal_(table.weight, 0.0, init_scale)
            nn.init.zeros_(bias.weight)
            setattr(self, f"{side}_feat", table)
            setattr(self, f"{side}_feat_bias", bias)
        self.has_history = history is not None
        if history is not None:
            if sparse:  # the history in CSR form, to pool a batch's rows
                history = history.tocsr()
                counts = np.diff(history.indptr).astype(np.float32)
                for name, values in (("indptr", history.indptr.astype(np.int64)),
                                     ("indices", history.indices.astype(np.int64)),
                                     ("counts", counts)):  # fmt: skip
                    self.register_buffer(f"hist_{name}", torch.as_tensor(values), persistent=False)
            else:
                pool, pool_t, _ = pooling_matrices(history)
                self.register_buffer("hist_pool", pool, persistent=False)
                self.register_buffer("hist_pool_t", pool_t, persistent=False)
            self.implicit = nn.Embedding(num_items, dim, sparse=sparse)
            nn.init.normal_(self.implicit.weight, 0.0, init_scale)
        self.context_buckets = context_buckets
        if context_buckets:
            self.context_bias = nn.Embedding(context_buckets, 1, sparse=sparse)
            nn.init.zeros_(self.context_bias.weight)
        if item_sampling is not None:
            self.register_buffer("item_sampling", item_sampling)
        # per-user lists [U, M] (-1 = padding) to draw negatives from; training only
        self.register_buffer("shortlists", shortlists, persistent=False)
        self.dot = head.startswith("dot")
        deep = head.split("+")[-1] if head != "dot" else None
        self.cross = nn.ModuleList()
        self.mlp = None
        if deep is not None:
            width = 2 * dim
            if deep == "dcn":
                self.cross = nn.ModuleList(
                    CrossLayer(width, cross_rank) for _ in range(cross_layers)
                )
            layers: list[nn.Module] = []
            for size in hidden:
                layers += [nn.Linear(width, size), nn.ReLU()]
                width = size
            layers.append(nn.Linear(width, 1))
            self.mlp = nn.Sequential(*layers)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The embedding tables when ``sparse`` (their gradients are sparse), else none."""
        if not self.sparse:
            return []
        return [m.weight for m in self.modules() if isinstance(m, nn.Embedding)]

    # ------------------------------------------------------------ representations
    def _implicit(self, users: torch.Tensor) -> torch.Tensor:
        """[B, D] SVD++ implicit-feedback vectors of known ``users``: the batch's own rows
        (:func:`~recfunnel.models.towers.pool_history`) when ``sparse``, else rows of
        :meth:`_implicit_all`."""
        if self.sparse:
            return pool_history(self.implicit.weight, users, self.hist_indptr, self.hist_indices,
                                self.hist_counts, sparse=True)[0]  # fmt: skip
        return self._implicit_all()[users]

    def _implicit_all(self) -> torch.Tensor:
        """[U, D] SVD++ implicit-feedback vectors of every known user: the history matrix
        (rows scaled by ``|H(u)|^-1/2``) times the item table, as one sparse product (its
        backward is another, several times faster than an embedding bag's)."""
        return pooled(self.hist_pool, self.hist_pool_t, self.implicit.weight)

    def user_vectors(self, users, feat_ids=None, feat_w=None, implicit=None):
        """[B] user indices (OOV = ``num_users``) -> (vectors [B, D], biases [B])."""
        vec = self.user_emb(users)
        bias = self.user_bias(users).squeeze(-1)
        if self.has_user_features:
            if feat_ids is None:
                feat_ids, feat_w = self.user_feat_ids[users], self.user_feat_w[users]
            vec = vec + _bag(self.user_feat, feat_ids, feat_w)
            bias = bias + _bag(self.user_feat_bias, feat_ids, feat_w).squeeze(-1)
        if self.has_history:
            if implicit is None:
                known = users < self.num_users
                implicit = torch.zeros_like(vec)
                if known.any():
                    implicit[known] = self._implicit(users[known])
            vec = vec + implicit
        return vec, bias

    def item_vectors(self, items, feat_ids=None, feat_w=None):
        """[B] item indices (OOV = ``num_items``) -> (vectors [B, D], biases [B])."""
        vec = self.item_emb(items)
        bias = self.item_bias(items).squeeze(-1)
        if self.has_item_features:
            if feat_ids is None:
                feat_ids, feat_w = self.item_feat_ids[items], self.item_feat_w[items]
            vec = vec + _bag(self.item_feat, feat_ids, feat_w)
            bias = bias + _bag(self.item_feat_bias, feat_ids, feat_w).squeeze(-1)
        return vec, bias

    def combine(self, u_vec, u_bias, i_vec, i_bias, context=None) -> torch.Tensor:
        """Scores of aligned rows: [..., D] x [..., D] -> [...] (broadcasting over M)."""
        out = self.global_bias + u_bias + i_bias
        if self.dot:
            out = out + (u_vec * i_vec).sum(-1)
        if self.mlp is not None:
            u_vec, i_vec = torch.broadcast_tensors(u_vec, i_vec)
            x0 = torch.cat([u_vec, i_vec], -1)
            x = x0
            for layer in self.cross:
                x = layer(x0, x)
            out = out + self.mlp(x).squeeze(-1)
        if context is not None and self.context_buckets:
            out = out + self.context_bias(context).squeeze(-1)
        return out

    def context_of(self, batch) -> torch.Tensor | None:
        if not self.context_buckets or "context" not in batch:
            return None
        return batch["context"]

    # ------------------------------------------------------------------ the loss
    def draw_negatives(self, users, items) -> tuple[torch.Tensor, torch.Tensor]:
        """``negatives`` items per row [B, K] and a mask [B, K] of draws to ignore (padding,
        or the row's own positive). From the user's shortlist when the net has shortlists,
        else from ``item_sampling`` over the catalogue."""
        shape = (len(items), self.negatives)
        if self.shortlists is None:
            draws = torch.multinomial(self.item_sampling, shape[0] * shape[1], True)
            negatives = draws.view(shape)
            return negatives, negatives == items[:, None]
        lists = self.shortlists[users]
        picks = torch.randint(0, lists.shape[1], shape, device=lists.device)
        negatives = lists.gather(1, picks)
        invalid = (negatives < 0) | (negatives == items[:, None])
        return negatives.clamp_min(0), invalid

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        users, items = batch["user"], batch["item"]
        u_vec, u_bias = self.user_vectors(users)
        i_vec, i_bias = self.item_vectors(items)
        context = self.context_of(batch)
        penalty = sum(
            x.pow(2).sum(-1).mean()
            for x in (u_vec, i_vec, self.user_emb(users), self.item_emb(items),
                      self.user_bias(users), self.item_bias(items))
        )  # fmt: skip
        if self.objective == "rating":
            predicted = self.combine(u_vec, u_bias, i_vec, i_bias, context)
            loss = mse_loss(predicted, batch["rating"].float(), batch.get("weight"))
        else:
            negatives, invalid = self.draw_negatives(users, items)
            n_vec, n_bias = self.item_vectors(negatives.reshape(-1))
            n_vec = n_vec.view(len(items), self.negatives, -1)
            n_bias = n_bias.view(len(items), self.negatives)
            c = None if context is None else context[:, None]
            neg = self.combine(u_vec[:, None], u_bias[:, None], n_vec, n_bias, c)
            pos = self.combine(u_vec, u_bias, i_vec, i_bias, context)
            if self.objective == "watch":
                logits = torch.cat([pos, neg.reshape(-1)])
                labels = torch.cat(
                    [torch.ones_like(pos), torch.zeros(neg.numel(), device=pos.device)]
                )
                weights = torch.cat([torch.ones_like(pos), (~invalid).reshape(-1).float()])
                loss = F.binary_cross_entropy_with_logits(logits, labels, weights, reduction="sum")
                loss = loss / weights.sum()
            else:
                neg = neg.masked_fill(invalid, float("-inf"))
                loss = listwise_softmax_loss(torch.cat([pos[:, None], neg], 1))
        return loss + self.l2 * penalty


class RankingModel(Recommender):
    """Ranking model over ids, side features and context (see the module docstring;
    hyper-parameters in :class:`~recfunnel.config.RankingConfig`). ``autoencoder`` > 0 trains
    an item autoencoder (I-AutoRec, :mod:`recfunnel.models.autoencoder`) beside the network
    and blends it into the predicted ratings of users and items seen in training."""

    kind = "ranking"
    predicts_ratings = True
    needs_dataset = True
    config_class = RankingConfig
    config: RankingConfig

    def _rates(self) -> bool:
        return self.config.objective == "rating"

    # ----------------------------------------------------------------- fitting
    def _check_data(self, train, *, dataset=None, shortlists=None, **context):
        """``dataset`` supplies the side features (``features=True``); ``shortlists`` [U, M]
        (item indices, ``-1`` = padding) are per-user candidate lists that the ``listwise`` /
        ``watch`` objectives draw their negatives from instead of the whole catalogue, e.g. the
        retrieval stage's shortlists (hard negatives)."""
        c = self.config
        if shortlists is not None:
            if c.objective == "rating":
                raise RecfunnelError("shortlists give negatives; objective 'rating' has none")
            shortlists = np.asarray(shortlists)
            if shortlists.ndim != 2 or len(shortlists) != train.num_users:
                raise RecfunnelError(
                    f"shortlists must have one row per user ({train.num_users}), got shape "
                    f"{tuple(shortlists.shape)}"
                )
        if c.objective == "rating" and train.ratings is None:
            raise RecfunnelError(
                "objective 'rating' needs ratings; fit interactions with ratings or use "
                "objective='watch'",
                cli="objective 'rating' needs ratings; give --rating-col or use --set "
                "objective=watch",
            )
        if (c.features or c.context) and dataset is None:
            raise RecfunnelError(
                "this ranking model uses side features but got no dataset; pass "
                "fit(..., dataset=...) or set features=False"
            )
        return train

    def _sparse(self, num_users: int, num_items: int) -> bool:
        """:func:`~recfunnel.config.sparse_updates_for` above
        :data:`~recfunnel.config.SPARSE_RANKING_ABOVE`. A saved model is rebuilt the same way,
        so its SVD++ term pools a batch's rows alike."""
        return sparse_updates_for(self.config, num_users, num_items, SPARSE_RANKING_ABOVE)

    def _resolve(self, train):
        return self.config.override(sparse_updates=self._sparse(train.num_users, train.num_items))

    def _parameter_count(self, num_users, num_items):
        c = self.config
        return (num_users + num_items + 2) * (c.dim + 1) * (2 if c.pool_seen_items else 1)

    def _check_memory(self, num_users: int, num_items: int) -> None:
        """The network's check, then the item autoencoder's: it trains after the network (whose
        weights stay) on a dense items x users rating matrix (float32), with encoder and decoder
        weights of users x hidden each and Adam's moments: refused before any training, not
        hours in."""
        super()._check_memory(num_users, num_items)
        hidden = self.config.autoencoder
        if not hidden:
            return
        network = 4 * self._parameter_count(num_users, num_items)  # the trained weights
        needed = 4 * num_items * num_users + 16 * hidden * (2 * num_users + num_items) + network
        available = available_memory()
        if available and needed > available:
            problem = (
                f"the item autoencoder (autoencoder={hidden}) needs about "
                f"{needed / 2**30:,.1f} GiB for its items x users rating matrix and weights "
                f"({num_items:,} items, {num_users:,} users), more than the "
                f"{available / 2**30:,.1f} GiB available"
            )
            raise RecfunnelError(f"{problem}; set autoencoder=0",
                                 cli=f"{problem}; pass --set autoencoder=0")  # fmt: skip

    def _build(self, sampling: torch.Tensor | None, rating_mean: float,
               shortlists: torch.Tensor | None = None) -> RankingNet:  # fmt: skip
        user_features = item_features = None
        if self.config.features and self.spec_ is not None:
            user_features, item_features = self.user_features_, self.item_features_
            if user_features.num_features == 0:
                user_features = None
            if item_features.num_features == 0:
                item_features = None
        net = RankingNet(
            self.seen_.shape[0],
            self.seen_.shape[1],
            dim=self.config.dim,
            head=self.config.head,
            hidden=tuple(self.config.hidden),
            cross_layers=self.config.cross_layers,
            cross_rank=self.config.cross_rank,
            user_features=user_features,
            item_features=item_features,
            history=self.seen_ if self.config.pool_seen_items else None,
            context_buckets=self.spec_.context.num_buckets
            if self.config.context and self.spec_
            else 0,
            objective=self.config.objective,
            negatives=self.config.negatives,
            l2=self.config.l2,
            item_sampling=sampling,
            init_scale=self.config.init_scale,
            rating_mean=rating_mean,
            shortlists=shortlists,
            sparse=self._sparse(*self.seen_.shape),
        )
        if not self.config.biases:
            for p in (net.user_bias.weight, net.item_bias.weight, net.global_bias):
                p.requires_grad_(False)
                p.data.zero_()
        return net

    def _encode_features(self, dataset) -> None:
        spec = self.spec_
        n_users, n_items = self.seen_.shape
        user_table = {k: v[:n_users] for k, v in dataset.user_table.items()}
        self.user_features_ = spec.user.encode(user_table, n_users)
        self.item_features_ = spec.item.encode(spec.item_table(dataset), n_items)
        self._add_oov_rows()

    def _add_oov_rows(self) -> None:
        """Append the OOV entity row (every column in its OOV bucket) to both matrices."""
        for side, spec in (("user", self.spec_.user), ("item", self.spec_.item)):
            matrix = getattr(self, f"{side}_features_")
            oov = spec.encode({}, 1)
            width = max(matrix.ids.shape[1], oov.ids.shape[1])
            ids = torch.cat([_widen(matrix.ids, width), _widen(oov.ids, width)])
            weights = torch.cat([_widen(matrix.weights, width), _widen(oov.weights, width)])
            setattr(self, f"{side}_features_", FeatureMatrix(ids, weights, spec.num_features))

    def default_duplicates(self) -> str:
        """``mean`` for the rating objective, else ``keep`` (every observed row a positive)."""
        return "mean" if self.config.objective == "rating" else "keep"

    def _build_network(self, train, *, dataset=None, shortlists=None, **context):
        c = self.config
        self.spec_ = None
        if c.features or c.context:
            self.spec_ = FeatureSpec.from_dataset(dataset, train.timestamps)
            self._encode_features(dataset)
        if shortlists is not None:
            shortlists = torch.as_tensor(np.asarray(shortlists), dtype=torch.long)
        sampling = None
        if c.objective != "rating":
            counts = train.item_counts().astype(np.float64)
            sampling = torch.as_tensor((counts + 1.0) ** 0.75, dtype=torch.float32)
            if c.objective == "watch":
                sampling = torch.ones(train.num_items)
        self.rating_range_ = (
            (float(train.ratings.min()), float(train.ratings.max()))
            if train.ratings is not None
            else (float("-inf"), float("inf"))
        )
        mean = float(train.ratings.mean()) if c.objective == "rating" else 0.0
        self.net_ = self._build(sampling, mean, shortlists)
        self.autoencoder_ = None
        return _WithContext(self.net_, self.spec_)

    def _finish_training(self) -> None:
        self.net_.shortlists = None  # training only
        super()._finish_training()

    def _train(self, train, validation, *, progress=False, **context) -> None:
        super()._train(train, validation, progress=progress, **context)
        c = self.config
        if c.autoencoder:
            self.autoencoder_ = ItemAutoencoder.fit(
                train, hidden=c.autoencoder, l2=c.autoencoder_l2, epochs=c.autoencoder_epochs,
                device=c.trainer.device, seed=c.trainer.seed,
            )  # fmt: skip

    # -------------------------------------------------------------- predicting
    def _context_now(self, n: int) -> torch.Tensor | None:
        if not self.config.context or self.spec_ is None:
            return None
        return torch.full((n,), self.spec_.context.num_buckets - 1, dtype=torch.long)

    @torch.no_grad()
    def predict(self, users, items) -> np.ndarray:
        """Predicted ratings of (user, item) index pairs, clipped to the training range
        (objective ``rating``); logits otherwise."""
        self._check_fitted()
        users = torch.as_tensor(np.asarray(users, dtype=np.int64))
        items = torch.as_tensor(np.asarray(items, dtype=np.int64))
        out = []
        for start in range(0, len(users), 65536):
            u, i = users[start : start + 65536], items[start : start + 65536]
            u_vec, u_bias = self.net_.user_vectors(u)
            i_vec, i_bias = self.net_.item_vectors(i)
            out.append(self.net_.combine(u_vec, u_bias, i_vec, i_bias, self._context_now(len(u))))
        scores = torch.cat(out) if out else torch.zeros(0)
        if self.autoencoder_ is not None:
            known = (users < self.num_users) & (items < self.num_items)
            w = self.config.autoencoder_weight
            blended = self.autoencoder_.predict(users[known], items[known])
            scores[known] = (1 - w) * scores[known] + w * blended
        scores = scores.numpy()
        if self.config.objective == "rating":
            scores = np.clip(scores, *self.rating_range_)
        return scores

    @torch.no_grad()
    def _score_vectors(self, u_vec, u_bias, items=None) -> torch.Tensor:
        """[B, D], [B] user parts -> [B, M] scores of ``items`` (default: all)."""
        items = torch.arange(self.num_items) if items is None else torch.as_tensor(items)
        i_vec, i_bias = self.net_.item_vectors(items.reshape(-1))
        i_vec = i_vec.view(*items.shape, -1)
        i_bias = i_bias.view(items.shape)
        if items.ndim == 1:
            i_vec, i_bias = i_vec[None], i_bias[None]
        ctx = self._context_now(1)
        out = []
        for start in range(0, len(u_vec), 256):
            uv, ub = u_vec[start : start + 256, None], u_bias[start : start + 256, None]
            iv = i_vec if items.ndim == 1 else i_vec[start : start + 256]
            ib = i_bias if items.ndim == 1 else i_bias[start : start + 256]
            out.append(self.net_.combine(uv, ub, iv, ib, ctx))
        return torch.cat(out)

    def _blend_autoencoder(self, scores, users, items=None) -> torch.Tensor:
        """Blend the item autoencoder into [B, M] ``scores`` of known ``users`` and ``items``."""
        if self.autoencoder_ is None:
            return scores
        items = torch.arange(self.num_items) if items is None else items
        known = users < self.num_users
        if not known.any():
            return scores
        safe = items.clamp(max=self.num_items - 1)
        rows = safe if items.ndim == 1 else safe[known]
        blended = self.autoencoder_.score(users[known], rows)
        w = self.config.autoencoder_weight
        mixed = (1 - w) * scores[known] + w * blended
        oov_items = (
            (items >= self.num_items) if items.ndim == 1 else (items >= self.num_items)[known]
        )
        scores[known] = torch.where(oov_items, scores[known], mixed)
        return scores

    @torch.no_grad()
    def score(self, users) -> torch.Tensor:
        self._check_fitted()
        users = torch.as_tensor(np.asarray(users, dtype=np.int64))
        u_vec, u_bias = self.net_.user_vectors(users)
        return self._blend_autoencoder(self._score_vectors(u_vec, u_bias), users)

    @torch.no_grad()
    def score_candidates(self, users, candidates) -> torch.Tensor:
        """Scores [B, M] of each user's own candidate items ``candidates`` [B, M]."""
        self._check_fitted()
        users = torch.as_tensor(np.asarray(users, dtype=np.int64))
        candidates = torch.as_tensor(candidates)
        u_vec, u_bias = self.net_.user_vectors(users)
        scores = self._score_vectors(u_vec, u_bias, candidates)
        return self._blend_autoencoder(scores, users, candidates)

    # -------------------------------------------------------------- cold start
    def _require_features(self, side: str) -> None:
        self._check_fitted()
        if not (
            self.config.features
            and self.spec_ is not None
            and getattr(self.net_, f"has_{side}_features")
        ):
            raise RecfunnelError(
                f"this model has no {side} features; train it with features=True on a dataset "
                f"with a {side} table"
            )

    @torch.no_grad()
    def score_new_user(self, features: dict) -> torch.Tensor:
        """Scores [N] of every item for a user unseen in training, from their raw features
        (e.g. ``{"age": [31], "gender": ["F"], "occupation": ["writer"], "zip": ["94"]}``)."""
        self._require_features("user")
        bag = self.spec_.user.encode(features, 1)
        oov = torch.tensor([self.num_users])
        implicit = torch.zeros(1, self.config.dim) if self.config.pool_seen_items else None
        u_vec, u_bias = self.net_.user_vectors(oov, bag.ids, bag.weights, implicit)
        return self._score_vectors(u_vec, u_bias)[0]

    @torch.no_grad()
    def score_new_item(self, features: dict, users) -> torch.Tensor:
        """Scores [B] of an item unseen in training, from its raw features (e.g.
        ``{"genres": [[0, 1, ...]], "year": [1995], "title": ["Heat (1995)"]}``), for ``users``."""
        self._require_features("item")
        bag = self.spec_.item.encode(features, 1)
        i_vec, i_bias = self.net_.item_vectors(torch.tensor([self.num_items]), bag.ids, bag.weights)
        users = torch.as_tensor(np.asarray(users, dtype=np.int64))
        u_vec, u_bias = self.net_.user_vectors(users)
        return self.net_.combine(u_vec, u_bias, i_vec, i_bias, self._context_now(len(users)))

    # ----------------------------------------------------------- saving/loading
    def _learned_tensors(self):
        out = super()._learned_tensors()
        out["rating_range"] = torch.tensor(self.rating_range_, dtype=torch.float64)
        if self.autoencoder_ is not None:
            out.update({f"autoencoder.{k}": v for k, v in self.autoencoder_.tensors().items()})
        if self.spec_ is not None:  # the encoded features are the net's buffers
            out["features.spec_json"] = json_tensor(self.spec_.to_json())
        return out

    def _load_learned(self, tensors):
        self.spec_ = None
        if "features.spec_json" in tensors:
            self.spec_ = FeatureSpec.from_json(tensor_json(tensors["features.spec_json"]))
            for side, spec in (("user", self.spec_.user), ("item", self.spec_.item)):
                ids = tensors.get(f"net.{side}_feat_ids", torch.zeros(0, 1, dtype=torch.long))
                weights = tensors.get(f"net.{side}_feat_w", torch.zeros(0, 1))
                setattr(self, f"{side}_features_", FeatureMatrix(ids, weights, spec.num_features))
        self.rating_range_ = tuple(float(x) for x in tensors["rating_range"])
        self.autoencoder_ = None
        if "autoencoder.codes" in tensors:
            self.autoencoder_ = ItemAutoencoder(
                tensors["autoencoder.codes"], tensors["autoencoder.decoder"],
                tensors["autoencoder.offsets"],
            )  # fmt: skip
        super()._load_learned(tensors)

    def _new_network(self, state):
        return self._build(state.get("item_sampling"), 0.0)


class _WithContext(nn.Module):
    """Adds the context bucket of each row's timestamp to the trainer's batch."""

    def __init__(self, net: RankingNet, spec: FeatureSpec | None) -> None:
        super().__init__()
        self.net = net
        self.spec = spec

    def sparse_parameters(self) -> list[nn.Parameter]:
        return self.net.sparse_parameters()

    def compute_loss(self, batch):
        if self.net.context_buckets and "timestamp" in batch:
            batch = dict(batch, context=self.spec.context.encode(batch["timestamp"]))
        return self.net.compute_loss(batch)
