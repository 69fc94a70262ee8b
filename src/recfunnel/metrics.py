"""Evaluation metrics for recommenders.

Two families, computed in one pass over the test users:

* **Factorized top-K accuracy** exactly as TFRS's ``FactorizedTopK`` defines it: the share of test
  (user, item) rows whose item ranks within the top ``k`` of *all* candidates by score, seen items
  *not* excluded. A row's rank is the number of items scoring strictly higher than its item, so
  ties count in the item's favour, as TensorFlow's ``in_top_k`` does.
* **Per-user ranking metrics** with the user's training items excluded from the ranking and the
  relevant set being the user's test items that were not in training, averaged over users with at
  least one relevant item (binary relevance):

  - ``recall@k`` = hits / min(k, |relevant|) (the truncated recall of Liang et al. 2018, so a
    perfect ranking scores 1 whatever the number of relevant items)
  - ``precision@k`` = hits / k; ``hit_rate@k`` = 1 if any hit
  - ``ndcg@k`` = DCG / ideal DCG with gains ``1 / log2(rank + 2)``
  - ``map@k`` = sum of precision at each hit / min(k, |relevant|)
  - ``mrr`` = 1 / (1 + rank of the best-ranked relevant item) over the full ranking
  - ``coverage@k`` = share of the catalogue that appears in some user's top-k

Letters: B users in a batch, N catalogue size.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np
import scipy.sparse as sp
import torch

from recfunnel import eval_kernels
from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError
from recfunnel.progress import make_progress

FACTORIZED_KS = (1, 5, 10, 50, 100)
RANKING_KS = (5, 10, 20, 50, 100)
#: above this many test users, evaluation uses a seeded sample of them unless told otherwise
DEFAULT_EVAL_USERS = 10_000
#: default bound on the memory one block of scores takes while evaluating
DEFAULT_EVAL_MEMORY = 512 * 2**20
#: bytes per (user, item) cell of a score block: the float32 scores plus the bool comparison
#: buffer and headroom for the top-k's per-row work
_BYTES_PER_CELL = 8

Scorer = Callable[[np.ndarray], torch.Tensor]  # user indices [B] -> scores [B, N]
#: users per call of the fused pass (it holds no [B, N] block; this paces progress)
_FUSED_BLOCK = 2048


def factorized_key(k: int) -> str:
    return f"factorized_top_k/top_{k}_categorical_accuracy"


def parse_memory(text: str | int) -> int:
    """Bytes from ``"512MB"``, ``"2GB"``, ``"800k"`` or a plain number of bytes."""
    if isinstance(text, int | np.integer):
        value = int(text)
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", str(text).lower())
        if match is None:
            raise RecfunnelError(
                f"cannot read the memory size {text!r}; write it like 512MB or 2GB"
            )
        scale = 1024 ** "_kmgt".index(match.group(2) or "_")
        value = int(float(match.group(1)) * scale)
    if value < 1:
        raise RecfunnelError(f"the memory size must be positive, not {text!r}")
    return value


def users_with_tests(test: Interactions) -> np.ndarray:
    """Sorted indices of the users with at least one test row."""
    return np.flatnonzero(np.bincount(test.users, minlength=test.num_users))


def parse_eval_users(value: int | str | None) -> int | str | None:
    """``None`` (the default sample), ``"all"`` or a positive number of users."""
    if value is None or str(value).strip().lower() == "all":
        return None if value is None else "all"
    text = str(value).strip()
    if not text.isdigit() or int(text) < 1:
        rule = f"must be 'all' or a positive whole number, not {value!r}"
        raise RecfunnelError(f"eval_users {rule}", cli=f"--eval-users {rule}")
    return int(text)


def choose_users(
    test: Interactions, eval_users: int | str | None = None, *, seed: int = 0
) -> tuple[np.ndarray, dict]:
    """The test users to evaluate, and a record of the choice for the run's config.

    Args:
        eval_users: ``None`` evaluates every test user up to :data:`DEFAULT_EVAL_USERS` and a
            seeded sample of that many above it; ``"all"`` every test user; a number N a
            seeded sample of N (every user when there are no more than N).
        seed: the sample's seed.

    Returns: sorted user indices and ``{"users": "all" | "sample", "sample_size", "test_users",
    "seed"}``.
    """
    everyone = users_with_tests(test)
    limit = parse_eval_users(eval_users)
    if limit is None:
        limit = DEFAULT_EVAL_USERS
    record = {"users": "all", "test_users": int(len(everyone)), "seed": int(seed)}
    if limit == "all" or len(everyone) <= limit:
        return everyone, record
    chosen = np.sort(np.random.default_rng(seed).choice(everyone, size=limit, replace=False))
    record.update(users="sample", sample_size=int(limit))
    return chosen, record


def describe_choice(record: dict) -> str:
    """One line saying which users an evaluation covered (empty when all of them)."""
    if record.get("users") != "sample":
        return ""
    return (
        f"evaluated a seeded sample of {record['sample_size']} of {record['test_users']} test "
        f"users (seed {record['seed']}); --eval-users all evaluates every one"
    )


#: the widest factors the fused pass takes (wider ones, e.g. EASE's item x item, go to BLAS)
FUSED_MAX_DIM = 512


class DotScorer:
    """A scorer ``user_vectors(users) @ items.T`` (see :func:`dot_scorer`).

    Called, it writes every block into one buffer: a fresh [B, N] result per block costs the
    page faults of a new allocation, about as much as the product itself. With numba, and
    the factors on the CPU, :func:`evaluate_scores` does not call it but scores and ranks
    tile by tile (:func:`recfunnel.eval_kernels.fused_top_k`) from ``user_vectors`` and
    ``items``.
    """

    def __init__(self, user_vectors: Callable[[np.ndarray], torch.Tensor], items: torch.Tensor):
        self.user_vectors = user_vectors
        self.items = items.detach()
        self._items_t: torch.Tensor | None = None
        self._sorted = None
        self._out: torch.Tensor | None = None

    def __call__(self, users: np.ndarray) -> torch.Tensor:
        if self._items_t is None:
            self._items_t = self.items.float().cpu().T.contiguous()  # [D, N]
        queries = self.user_vectors(users).detach().float().cpu()
        out = self._out
        if out is None or out.shape[0] < len(users):
            out = self._out = torch.empty(len(users), self._items_t.shape[1])
        return torch.mm(queries, self._items_t, out=out[: len(users)])

    def fusable(self) -> bool:
        """Whether :func:`evaluate_scores` can take the fused pass."""
        return (
            eval_kernels.AVAILABLE
            and self.items.device.type == "cpu"
            and self.items.dim() == 2
            and 0 < self.items.shape[1] <= FUSED_MAX_DIM
        )

    def sorted_items(self):
        """The items as :func:`recfunnel.eval_kernels.sort_items` lays them out (made once)."""
        if self._sorted is None:
            self._sorted = eval_kernels.sort_items(self.items.float().numpy())
        return self._sorted

    def queries(self, users: np.ndarray) -> np.ndarray:
        return self.user_vectors(users).detach().float().cpu().numpy()


def dot_scorer(
    user_vectors: Callable[[np.ndarray], torch.Tensor], items: torch.Tensor
) -> DotScorer:
    """The scorer of a factorized model: ``user_vectors(users) @ items.T``."""
    return DotScorer(user_vectors, items)


def _rows(matrix: sp.csr_matrix, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(row in ``users``, column) of the stored cells of ``matrix[users]``, row-major."""
    starts, stops = matrix.indptr[users], matrix.indptr[users + 1]
    lengths = (stops - starts).astype(np.int64)
    rows = np.repeat(np.arange(len(users), dtype=np.int64), lengths)
    # positions of every cell: its row's start plus its offset within the row
    offsets = np.arange(len(rows), dtype=np.int64) - np.repeat(
        np.cumsum(lengths) - lengths, lengths
    )
    cols = matrix.indices[np.repeat(starts.astype(np.int64), lengths) + offsets].astype(np.int64)
    return rows, cols


def _count_greater_in_row(
    rows_a: np.ndarray, values_a: np.ndarray, rows_q: np.ndarray, values_q: np.ndarray
) -> np.ndarray:
    """For each query ``(rows_q[j], values_q[j])``: how many ``a`` cells of the same row have a
    value strictly greater. One sort of both sets together, no loop per row."""
    if len(rows_q) == 0 or len(rows_a) == 0:
        return np.zeros(len(rows_q), dtype=np.int64)
    rows = np.concatenate([rows_a, rows_q])
    values = np.concatenate([values_a, values_q]).astype(np.float64)
    is_a = np.concatenate([np.ones(len(rows_a), np.int64), np.zeros(len(rows_q), np.int64)])
    # by row, then value descending, queries before cells on ties (a tie is not greater)
    order = np.lexsort((is_a, -values, rows))
    before = np.cumsum(is_a[order]) - is_a[order]  # cells earlier in the order
    sorted_rows = rows[order]
    row_start = np.searchsorted(sorted_rows, sorted_rows, side="left")
    count = before - before[row_start]
    out = np.empty(len(rows_q), dtype=np.int64)
    query = is_a[order] == 0
    out[order[query] - len(rows_a)] = count[query]
    return out


def evaluate_scores(
    scorer: Scorer,
    train: Interactions,
    test: Interactions,
    *,
    factorized_ks: Sequence[int] = FACTORIZED_KS,
    ranking_ks: Sequence[int] = RANKING_KS,
    users: np.ndarray | None = None,
    batch_size: int | None = None,
    memory: int | str | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Both metric families for a model given as a scorer of all items, exact, in one pass.

    Users are scored a block at a time; each block needs one top-k over its scores and one
    comparison pass (for ``mrr``), so the work is O(users x items) and the memory
    O(block x items), bounded by ``memory``. A factorized model's :func:`dot_scorer`, with
    numba, takes the fused pass instead (:func:`recfunnel.eval_kernels.fused_top_k`): users
    are scored against cache-sized tiles of items and ranked as they go, items by norm,
    largest first, so a user stops as soon as no later item can change its metrics; no
    [B, N] block is held and ``memory`` does not apply.

    * Factorized top-K: a test row's rank among all items is the number of unseen items above
      it (read off the block's top ``max(k)`` of unseen scores, exact below that) plus the number
      of the user's seen items above it (a sort of the block's seen cells).
    * Ranking metrics from the top ``max(k)`` with seen items excluded.
    * ``mrr``: the rank of each user's best relevant item, from the top-k where it lies there,
      else one comparison over the user's row.

    Args:
        scorer: maps user indices [B] to scores [B, N] of every item. It may return the same
            buffer on every call: the scores are modified in place and not kept.
        train: the training interactions (excluded from the per-user ranking).
        test: held-out interactions.
        users: evaluate only these users (see :func:`choose_users`); default all test users.
        batch_size: users scored at once (default: as many as ``memory`` allows).
        memory: bytes (or ``"512MB"``) one block of scores may take; default
            :data:`DEFAULT_EVAL_MEMORY`.
        progress: report progress on stderr.
    """
    n_items = test.num_items
    if len(test) == 0:
        raise RecfunnelError("the test set is empty; nothing to evaluate")
    factorized_ks = sorted(k for k in factorized_ks if k <= n_items)
    ranking_ks = sorted(k for k in ranking_ks if k <= n_items)
    top_k = max([*factorized_ks, *ranking_ks, 1])
    test_csr = test.to_csr()
    train_csr = train.to_csr()
    if users is None:
        users = users_with_tests(test)
    users = np.asarray(users, dtype=np.int64)
    batch_size_given = batch_size
    if batch_size is None:
        budget = parse_memory(memory if memory is not None else DEFAULT_EVAL_MEMORY)
        batch_size = budget // (_BYTES_PER_CELL * max(1, n_items))
    batch_size = int(max(1, batch_size))

    test_rows = 0
    eval_users = 0
    factorized_hits = np.zeros(len(factorized_ks))
    sums = {name: np.zeros(len(ranking_ks)) for name in ("recall", "precision", "ndcg", "map")}
    sums["hit_rate"] = np.zeros(len(ranking_ks))
    mrr = 0.0
    covered = np.zeros((len(ranking_ks), n_items), dtype=bool)
    gains = 1.0 / np.log2(np.arange(top_k) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(gains)])
    bar = make_progress(progress, desc="evaluate", unit="users")
    bar.start(len(users))
    compare = None  # reused bool buffer for the mrr comparison
    fused = isinstance(scorer, DotScorer) and scorer.fusable()
    if fused and batch_size_given is None:  # no [B, N] block: the block only paces progress
        batch_size = _FUSED_BLOCK
    width = min(top_k, n_items)

    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        B = len(batch)
        t_rows, t_cols = _rows(test_csr, batch)
        s_rows, s_cols = _rows(train_csr, batch)
        # Relevant = test items not in training
        t_keys = t_rows * n_items + t_cols
        s_keys = s_rows * n_items + s_cols
        relevant = np.ones(len(t_keys), dtype=bool)
        if len(s_keys):
            relevant = ~np.isin(t_keys, s_keys, assume_unique=True)
        if fused:  # scored and ranked tile by tile, never a [B, N] block
            with torch.no_grad():
                queries = scorer.queries(batch)
            t_ptr = np.concatenate([[0], np.cumsum(np.bincount(t_rows, minlength=B))])
            s_ptr = np.concatenate([[0], np.cumsum(np.bincount(s_rows, minlength=B))])
            top_ids, top_scores, first_rank, pos, seen_scores = eval_kernels.fused_top_k(
                queries, scorer.sorted_items(), width, (t_ptr, t_cols, relevant), (s_ptr, s_cols)
            )
            pos, seen_scores = pos.astype(np.float64), seen_scores.astype(np.float64)
        else:
            with torch.no_grad():
                scores = scorer(batch)
            if scores.dtype != torch.float32 or scores.device.type != "cpu":
                scores = scores.float().cpu()
            if scores.shape != (B, n_items):
                raise RecfunnelError(
                    f"scorer returned {tuple(scores.shape)}, expected ({B}, {n_items})"
                )
            t_rows_t, t_cols_t = torch.from_numpy(t_rows), torch.from_numpy(t_cols)
            s_rows_t, s_cols_t = torch.from_numpy(s_rows), torch.from_numpy(s_cols)
            pos = scores[t_rows_t, t_cols_t].numpy().astype(np.float64)
            seen_scores = scores[s_rows_t, s_cols_t].numpy().astype(np.float64)
            scores[s_rows_t, s_cols_t] = float("-inf")  # seen items leave the ranking
        all_rows, all_pos = t_rows, pos
        t_rows, t_keys, pos = t_rows[relevant], t_keys[relevant], pos[relevant]
        n_rel = np.bincount(t_rows, minlength=B)
        keep = n_rel > 0

        if not fused:  # one pass over the block: its top-k and the scores above the best
            best = np.full(B, np.inf)  # rows without a relevant item count nothing
            best[keep] = -np.inf
            np.maximum.at(best, t_rows, pos)  # each user's best relevant score (for mrr)
            if eval_kernels.AVAILABLE:
                top_ids, top_scores, first_rank = eval_kernels.top_k_and_count(
                    scores.numpy(), width, best
                )
            else:
                top = torch.topk(scores, width, dim=1)
                top_scores, top_ids = top.values.numpy(), top.indices.numpy()
                first_rank = (top_scores > best[:, None]).sum(1)
                full = np.flatnonzero(keep & (first_rank >= width))
                if len(full):  # ranked below the top-k: count over the whole row
                    if compare is None or compare.shape[1] != n_items or len(compare) < B:
                        compare = np.empty((B, n_items), dtype=bool)
                    np.greater(scores.numpy(), best[:, None], out=compare[:B])
                    first_rank[full] = np.count_nonzero(compare[:B], axis=1)[full]

        # Factorized top-K: rank among all items, seen ones included; exact below top_k.
        test_rows += len(all_rows)
        if factorized_ks:
            unseen_above = (top_scores[all_rows] > all_pos[:, None]).sum(1)
            seen_above = _count_greater_in_row(s_rows, seen_scores, all_rows, all_pos)
            rank = unseen_above + seen_above
            factorized_hits += (rank[:, None] < np.asarray(factorized_ks)).sum(0)

        if keep.any():
            eval_users += int(keep.sum())
            hits = np.isin(np.arange(B)[:, None] * n_items + top_ids, t_keys)[keep]
            hits = hits.astype(np.float64)
            n_rel_k = n_rel[keep]
            cum_hits = np.cumsum(hits, axis=1)
            for j, k in enumerate(ranking_ks):
                h = cum_hits[:, k - 1]
                denom = np.minimum(k, n_rel_k)
                sums["recall"][j] += (h / denom).sum()
                sums["precision"][j] += (h / k).sum()
                sums["hit_rate"][j] += (h > 0).sum()
                sums["ndcg"][j] += ((hits[:, :k] @ gains[:k]) / ideal[denom]).sum()
                precision_at = cum_hits[:, :k] / np.arange(1, k + 1)
                sums["map"][j] += ((precision_at * hits[:, :k]).sum(1) / denom).sum()
                covered[j, top_ids[keep, :k].reshape(-1)] = True
            mrr += (1.0 / (first_rank[keep] + 1.0)).sum()  # rank of the best relevant item
        bar.update(B)
    bar.finish()
    bar.close()

    metrics = {
        factorized_key(k): factorized_hits[j] / max(1, test_rows)
        for j, k in enumerate(factorized_ks)
    }
    for j, k in enumerate(ranking_ks):
        for name in ("recall", "precision", "ndcg", "map", "hit_rate"):
            metrics[f"{name}@{k}"] = float(sums[name][j] / max(1, eval_users))
        metrics[f"coverage@{k}"] = float(covered[j].mean())
    metrics["mrr"] = float(mrr / max(1, eval_users))
    metrics["num_test_rows"] = test_rows
    metrics["num_eval_users"] = eval_users
    return {k: (float(v) if isinstance(v, np.floating) else v) for k, v in metrics.items()}


def rating_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """``rmse`` and ``mae`` of rating predictions."""
    err = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}
