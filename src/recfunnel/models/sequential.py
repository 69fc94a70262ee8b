"""Sequential recommendation: predict the next item from the order of a user's items.

``arch="transformer"`` is SASRec (Kang & McAuley 2018): item plus learned position
embeddings, ``blocks`` pre-LayerNorm causal self-attention blocks, and the input item
embeddings reused as the output layer, trained to predict the next item at every position of
every training sequence. ``arch="gru"`` is the lighter query tower of the TFRS sequential
retrieval tutorial (a GRU over the item embeddings), trained the same way.

Losses (``loss=``):

* ``"softmax"``: cross-entropy over the whole catalogue (SASRec+ of Klenitskiy & Vasilev,
  RecSys 2023, the strongest on ML-1M; cheap up to tens of thousands of items);
* ``"sampled"``: softmax over ``negatives`` items drawn per batch (uniform or by popularity)
  with the logQ correction (:func:`recfunnel.losses.sampled_softmax_loss`);
* ``"gbce"``: gSASRec's generalised binary cross-entropy (Petrov & Macdonald, RecSys 2023)
  with ``negatives`` uniform negatives per sequence and calibration ``gbce_t``
  (:func:`recfunnel.losses.gbce_loss`); ``gbce_t=0`` with one negative is SASRec's BCE.

Sequences are padded on the right with item id 0 (item ``i`` of the catalogue is id ``i + 1``
in the network), so a causal mask alone keeps every real position from seeing padding; only
each user's last ``max_len`` items are read. The model is a dot product of the hidden state
at a user's last position and the item embeddings, so it serves through the same top-k index
as every factorized model; ``score`` continues the user's training sequence, and
:meth:`Sequential.recommend_history` reads a history in the order given (most recent last).

Letters: B sequences, L positions, D dimension, N catalogue size, T real positions of a batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from recfunnel.config import SequentialConfig
from recfunnel.data.interactions import Interactions
from recfunnel.data.sequences import to_sequences
from recfunnel.errors import RecfunnelError
from recfunnel.losses import fused_full_softmax_loss, gbce_loss, sampled_softmax_loss
from recfunnel.metrics import evaluate_scores
from recfunnel.models.base import FactorizedRecommender
from recfunnel.training import Trainer, TrainingLog, epoch_hook

ARCHS = ("transformer", "gru")
#: the clock of ``max_minutes``: wall time; a benchmark on a shared machine may set
#: :func:`time.process_time` (CPU time of the fitting process) instead
CLOCK = time.perf_counter
LOSSES = ("softmax", "sampled", "gbce")
SAMPLERS = ("uniform", "popularity")


def gbce_beta(negatives: int, num_items: int, t: float) -> float:
    """gSASRec's power on the positive's probability: ``alpha * (t * (1 - 1/alpha) + 1/alpha)``
    with ``alpha = negatives / (num_items - 1)`` the sampling rate (``t = 0``: plain BCE)."""
    alpha = negatives / max(1, num_items - 1)
    return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


class Dropout(nn.Module):
    """Inverted dropout from a uniform draw compared with ``p``: the same as
    :class:`torch.nn.Dropout`, about 1.7 times faster on CPU (whose ``bernoulli_`` draws
    element by element), where it was a third of a training step."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        return x * (torch.rand_like(x) >= self.p) * (1.0 / (1.0 - self.p))


class CausalBlock(nn.Module):
    """One pre-LayerNorm transformer block with causal self-attention.

    Dropout acts on the residual branches and inside the feed-forward layer, not on the
    attention weights: that keeps PyTorch's fused attention kernel, about 2.8 times faster per
    block on CPU than the explicit one dropout on the weights needs.

    Shapes: [B, L, D] -> [B, L, D]; position ``l`` sees positions ``<= l`` only.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.attention_out = nn.Linear(dim, dim)
        self.feedforward_norm = nn.LayerNorm(dim)
        self.feedforward = nn.Sequential(
            nn.Linear(dim, dim), nn.GELU(), Dropout(dropout), nn.Linear(dim, dim)
        )
        self.drop = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).view(B, L, 3, self.heads, D // self.heads
                                                         ).permute(2, 0, 3, 1, 4)  # fmt: skip
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, H, L, D/H]
        x = x + self.drop(self.attention_out(attended.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.feedforward(self.feedforward_norm(x)))


class SequentialNet(nn.Module):
    """Item sequences [B, L] (ids ``1..N``, 0 = padding, padded on the right) -> hidden states
    [B, L, D]; the hidden state at position ``l`` predicts the item at ``l + 1``.

    ``item_embedding`` [N + 1, D] is both the input and the output layer (row 0: padding).
    """

    def __init__(self, num_items: int, *, arch: str, dim: int, blocks: int, heads: int,
                 dropout: float, max_len: int) -> None:  # fmt: skip
        super().__init__()
        self.arch = arch
        self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
        nn.init.normal_(self.item_embedding.weight, 0.0, dim**-0.5)
        with torch.no_grad():
            self.item_embedding.weight[0].zero_()
        self.input_drop = Dropout(dropout)
        if arch == "transformer":
            self.position_embedding = nn.Embedding(max_len, dim)
            nn.init.normal_(self.position_embedding.weight, 0.0, dim**-0.5)
            self.blocks = nn.ModuleList(CausalBlock(dim, heads, dropout) for _ in range(blocks))
            self.final_norm = nn.LayerNorm(dim)
        else:
            self.gru = nn.GRU(dim, dim, num_layers=blocks, batch_first=True,
                              dropout=dropout if blocks > 1 else 0.0)  # fmt: skip
        self.scale = math.sqrt(dim) if arch == "transformer" else 1.0

    def forward(self, sequences: torch.Tensor) -> torch.Tensor:
        x = self.item_embedding(sequences) * self.scale
        if self.arch == "transformer":
            positions = torch.arange(sequences.shape[1], device=sequences.device)
            x = self.input_drop(x + self.position_embedding(positions)[None])
            for block in self.blocks:
                x = block(x)
            return self.final_norm(x)
        out, _ = self.gru(self.input_drop(x))
        return out

    def item_vectors(self) -> torch.Tensor:
        """[N, D] output vectors of the catalogue (the padding row left out)."""
        return self.item_embedding.weight[1:]


class SequentialTask(nn.Module):
    """The network and its loss: :meth:`compute_loss` of a batch of training windows.

    A batch holds ``"window"`` [B, max_len + 1] (a sequence's last ``max_len + 1`` items,
    right-padded) and ``"length"`` [B] (its input positions: the window's length minus one).
    """

    def __init__(self, net: SequentialNet, *, loss: str, negatives: int, sampler: str,
                 gbce_t: float, item_counts: np.ndarray | None, seed: int) -> None:  # fmt: skip
        super().__init__()
        self.net = net
        self.loss = loss
        self.negatives = negatives
        self.gbce_t = gbce_t
        self.generator = torch.Generator().manual_seed(seed + 1)
        num_items = net.item_embedding.num_embeddings - 1
        probs = np.full(num_items, 1.0 / num_items)
        if sampler == "popularity" and item_counts is not None:
            probs = (item_counts + 1.0) / (item_counts.sum() + num_items)
        self.sampler_probs = torch.as_tensor(probs, dtype=torch.float64)

    def hidden_and_targets(self, batch: dict[str, torch.Tensor], groups: int = 4):
        """``(hidden [T, D], targets [T] catalogue indices, rows [T])`` of the real positions;
        ``rows`` says which sequence of the batch each position belongs to.

        The batch's sequences are sorted by length and run in ``groups`` groups, each cut to
        its longest sequence: a random batch of ML-1M sequences is then about half padding
        instead of two thirds."""
        window, length = batch["window"], batch["length"]
        order = torch.argsort(length)
        size = max(1, -(-len(order) // groups))
        hidden, targets, rows = [], [], []
        for start in range(0, len(order), size):
            group = order[start : start + size]
            width = int(length[group].max())  # columns of padding in every row: skipped
            inputs, target = window[group, :width], window[group, 1 : width + 1]
            real = target > 0
            hidden.append(self.net(inputs)[real])
            targets.append(target[real] - 1)
            rows.append(group[:, None].expand_as(target)[real])
        return torch.cat(hidden), torch.cat(targets), torch.cat(rows)

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden, targets, rows = self.hidden_and_targets(batch)
        items = self.net.item_vectors()
        if self.loss == "softmax":
            return fused_full_softmax_loss(hidden, items, targets, reduction="mean")
        if self.loss == "sampled":
            drawn = torch.multinomial(self.sampler_probs, self.negatives, replacement=True,
                                      generator=self.generator).to(hidden.device)  # fmt: skip
            ids, counts = torch.unique(drawn, return_counts=True)
            expected = self.sampler_probs.to(hidden.device)[ids] * self.negatives
            offsets = (counts.double().log() - expected.log()).to(hidden.dtype)
            return sampled_softmax_loss(
                hidden, items[targets], targets, items[ids], ids, negative_offsets=offsets
            )
        # gBCE: each sequence draws its own uniform negatives, shared by its positions
        B = len(batch["window"])
        drawn = torch.randint(len(items), (B, self.negatives), generator=self.generator)
        drawn = drawn.to(hidden.device)
        negative_scores = torch.bmm(items[drawn][rows], hidden[:, :, None]).squeeze(2)  # [T, k]
        positive_scores = (hidden * items[targets]).sum(1)
        valid = drawn[rows] != targets[:, None]  # a negative that is the target is no negative
        beta = gbce_beta(self.negatives, len(items), self.gbce_t)
        return gbce_loss(positive_scores, negative_scores, beta, mask=valid)


class _OutOfTime(Exception):
    """Raised by the epoch hook of a fit whose ``max_minutes`` is spent."""


class Sequential(FactorizedRecommender):
    """Next-item recommendation from the order of each user's items (see the module docstring;
    hyper-parameters in :class:`~recfunnel.config.SequentialConfig`). ``fit`` takes
    ``context=`` rows that continue users' sequences without being trained on."""

    kind = "sequential"
    ordered_history = True
    duplicates = "keep"  # a repeated item is one more step of the sequence
    config_class = SequentialConfig
    config: SequentialConfig

    def _network(self, num_items: int) -> SequentialNet:
        c = self.config
        return SequentialNet(num_items, arch=c.arch, dim=c.dim, blocks=c.blocks, heads=c.heads,
                             dropout=c.dropout, max_len=c.max_len)  # fmt: skip

    # --------------------------------------------------------------- training
    def training_windows(self) -> dict[str, torch.Tensor]:
        """Each training sequence's last ``max_len + 1`` items as catalogue ids + 1, right-padded
        with 0: ``{"window": [U', max_len + 1], "length": [U']}`` (sequences of two items or
        more; ``length`` counts input positions)."""
        indptr, items = self.sequence_indptr_, self.sequence_items_
        lengths = np.minimum(np.diff(indptr), self.config.max_len + 1)
        users = np.flatnonzero(lengths >= 2)
        windows = np.zeros((len(users), self.config.max_len + 1), dtype=np.int64)
        for row, u in enumerate(users):
            n = lengths[u]
            windows[row, :n] = items[indptr[u + 1] - n : indptr[u + 1]] + 1
        return {"window": torch.as_tensor(windows),
                "length": torch.as_tensor(lengths[users] - 1)}  # fmt: skip

    def _train(self, train: Interactions, validation: Interactions | None, *,
               progress=False, context: Interactions | None = None, **rest) -> None:  # fmt: skip
        """Learn from the sequences of ``train`` (ordered by timestamp, then row order).

        ``validation`` rows are scored every epoch (``ndcg@10``, ``recall@10``; early stopping
        with ``patience``) from each user's training sequence continued by their ``context``
        rows, which are not trained on. After fitting, the model's sequences (what
        :meth:`recommend` continues) are the training rows followed by the context.
        """
        c = self.config
        self.sequence_indptr_, self.sequence_items_ = to_sequences(train)
        windows = self.training_windows()
        if len(windows["length"]) == 0:
            raise RecfunnelError(
                "no user has two ordered items to learn a next item from; give longer sequences"
            )
        self.net_ = self._network(train.num_items)
        task = SequentialTask(
            self.net_, loss=c.loss, negatives=c.negatives, sampler=c.sampler,
            gbce_t=c.gbce_t, item_counts=train.item_counts(), seed=c.trainer.seed,
        )  # fmt: skip
        if context is not None and len(context):
            self.extend(context)
        validate = None
        if validation is not None and len(validation):
            seen = train if context is None else train.concat(context)

            def validate():
                return evaluate_scores(self.score, seen, validation, factorized_ks=(),
                                       ranking_ks=(10,))  # fmt: skip

        config = self.fit_config_.trainer
        if config.monitor == "auto":
            config = dataclasses.replace(config, monitor="ndcg@10")
        self.training_log_ = self._fit_in_time(config, task, windows, validate, progress)
        self._finish_training()

    def _fit_in_time(self, config, task, windows, validate, progress) -> TrainingLog:
        """The trainer's fit, within ``max_minutes`` when it is set: an epoch hook stops the
        fit before an epoch that would end past the budget (judged by the epoch just done)."""
        if self.config.max_minutes is None:
            return Trainer(config, progress=progress).fit(task, windows, validate=validate)
        budget, started, records = 60.0 * self.config.max_minutes, CLOCK(), []
        last = [started]

        def stop_in_time(record: dict) -> None:
            records.append(record)
            now = CLOCK()
            if now - started + (now - last[0]) > budget:
                raise _OutOfTime
            last[0] = now

        best = {}
        if config.patience is not None:  # the budget may end the fit before patience does

            def keep_best(record: dict) -> None:  # noqa: E306
                value = record.get(config.monitor)
                if value is not None and value > best.get("value", -math.inf):
                    best.update(
                        value=value,
                        epoch=record["epoch"],
                        state={k: v.clone() for k, v in task.state_dict().items()},
                    )

        with epoch_hook(stop_in_time), (epoch_hook(keep_best) if config.patience is not None
                                        else contextlib.nullcontext()):  # fmt: skip
            try:
                return Trainer(config, progress=progress).fit(task, windows, validate=validate)
            except _OutOfTime:
                pass
        if best:
            task.load_state_dict(best["state"])
        task.eval()
        return TrainingLog(epochs=records, best_epoch=best.get("epoch"), stopped_early=True)

    def extend(self, rows: Interactions) -> Sequential:
        """Continue users' sequences with ``rows`` (in their time order), without training: the
        items a user consumed since (e.g. a validation item before the test). They also join
        the items :meth:`recommend` excludes."""
        self._check_fitted()
        if rows.num_users != self.num_users or rows.num_items != self.num_items:
            raise RecfunnelError("the rows to extend with use other vocabularies than the model's")
        indptr, items = self.sequence_indptr_, self.sequence_items_
        new_indptr, new_items = to_sequences(rows)
        old_len, new_len = np.diff(indptr), np.diff(new_indptr)
        merged_indptr = np.concatenate([[0], np.cumsum(old_len + new_len)]).astype(np.int64)
        merged = np.empty(merged_indptr[-1], dtype=np.int64)
        starts = merged_indptr[:-1]
        old_pos = np.repeat(starts - indptr[:-1], old_len) + np.arange(len(items))
        new_pos = np.repeat(starts + old_len - new_indptr[:-1], new_len) + np.arange(len(new_items))
        merged[old_pos], merged[new_pos] = items, new_items
        self.sequence_indptr_, self.sequence_items_ = merged_indptr, merged
        seen = self.seen_ + rows.to_csr()
        seen.data[:] = 1.0
        self.seen_ = sp.csr_matrix(seen, dtype=np.float32)
        self.seen_.sort_indices()
        return self

    # ---------------------------------------------------------------- queries
    def _encode(self, sequences: list[np.ndarray], chunk: int = 256) -> torch.Tensor:
        """[B, D] hidden state after the last item of each sequence (its last ``max_len``
        items read); an empty sequence reads the padding item alone."""
        self._check_fitted()
        out = torch.empty(len(sequences), self.config.dim)
        lengths = np.array([min(len(s), self.config.max_len) for s in sequences], dtype=np.int64)
        order = np.argsort(lengths, kind="stable")  # similar lengths share a chunk: less padding
        device = next(self.net_.parameters()).device
        for start in range(0, len(order), chunk):
            rows = order[start : start + chunk]
            width = max(1, int(lengths[rows].max()))
            batch = np.zeros((len(rows), width), dtype=np.int64)
            for i, r in enumerate(rows):
                if lengths[r]:
                    batch[i, : lengths[r]] = np.asarray(sequences[r][-lengths[r] :]) + 1
            with torch.no_grad():
                hidden = self.net_(torch.as_tensor(batch, device=device))
            last = torch.as_tensor(np.maximum(lengths[rows] - 1, 0), device=device)
            out[torch.as_tensor(rows)] = hidden[torch.arange(len(rows), device=device), last
                                                ].float().cpu()  # fmt: skip
        return out

    def sequence(self, user: int) -> np.ndarray:
        """User index ``user``'s items in order (catalogue indices, oldest first)."""
        self._check_fitted()
        return self.sequence_items_[self.sequence_indptr_[user] : self.sequence_indptr_[user + 1]]

    def user_vectors(self, users) -> torch.Tensor:
        """[B, D] queries: the hidden state after each user's known sequence."""
        return self._encode([self.sequence(int(u)) for u in np.atleast_1d(users)])

    def item_vectors(self) -> torch.Tensor:
        self._check_fitted()
        return self.net_.item_vectors().detach().float().cpu()

    def fold_in(self, items: np.ndarray) -> torch.Tensor:
        """[1, D] query of an ordered history (most recent last)."""
        return self._encode([np.asarray(items, dtype=np.int64)])

    # ------------------------------------------------------------ saving/loading
    def _learned_tensors(self):
        return {
            "sequence.indptr": torch.as_tensor(self.sequence_indptr_),
            "sequence.items": torch.as_tensor(self.sequence_items_),
            **{
                f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net_.state_dict().items()
            },
        }

    def _load_learned(self, tensors):
        indptr, items = tensors["sequence.indptr"], tensors["sequence.items"]
        num_users, num_items = self.seen_.shape
        in_range = len(items) == 0 or (int(items.min()) >= 0 and int(items.max()) < num_items)
        shaped = indptr.dim() == 1 and len(indptr) == num_users + 1 and items.dim() == 1
        if not (shaped and int(indptr[-1]) == len(items) and in_range):
            raise RecfunnelError("the stored sequences do not match the vocabularies")
        self.sequence_indptr_ = indptr.numpy().astype(np.int64)
        self.sequence_items_ = items.numpy().astype(np.int64)
        self.net_ = self._network(num_items)
        self.net_.load_state_dict({k.removeprefix("net."): v for k, v in tensors.items()
                                   if k.startswith("net.")})  # fmt: skip
        self.net_.eval()
        self._index = None
