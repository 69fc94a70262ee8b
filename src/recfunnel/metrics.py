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

from collections.abc import Callable, Sequence

import numpy as np
import torch

from recfunnel.data.interactions import Interactions
from recfunnel.errors import RecfunnelError

FACTORIZED_KS = (1, 5, 10, 50, 100)
RANKING_KS = (5, 10, 20, 50, 100)

Scorer = Callable[[np.ndarray], torch.Tensor]  # user indices [B] -> scores [B, N]


def factorized_key(k: int) -> str:
    return f"factorized_top_k/top_{k}_categorical_accuracy"


def evaluate_scores(
    scorer: Scorer,
    train: Interactions,
    test: Interactions,
    *,
    factorized_ks: Sequence[int] = FACTORIZED_KS,
    ranking_ks: Sequence[int] = RANKING_KS,
    users: np.ndarray | None = None,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Both metric families for a model given as a scorer of all items.

    Args:
        scorer: maps user indices [B] to scores [B, N] of every item.
        train: the training interactions (excluded from the per-user ranking).
        test: held-out interactions.
        users: evaluate only these users (e.g. a sample on large data); default all test users.
        batch_size: users scored at once (default keeps each score block near 64M floats).
    """
    n_items = test.num_items
    if len(test) == 0:
        raise RecfunnelError("the test set is empty; nothing to evaluate")
    factorized_ks = [k for k in factorized_ks if k <= n_items]
    ranking_ks = [k for k in ranking_ks if k <= n_items] or [n_items]  # a tiny catalogue
    max_k = max(ranking_ks)
    test_csr = test.to_csr()
    train_csr = train.to_csr()
    if users is None:
        users = np.flatnonzero(np.diff(test_csr.indptr))
    batch_size = batch_size or max(1, min(1024, (1 << 26) // max(1, n_items)))

    totals: dict[str, float] = {}
    test_rows = 0
    eval_users = 0
    covered = {k: np.zeros(n_items, dtype=bool) for k in ranking_ks}
    gains = 1.0 / np.log2(np.arange(max_k) + 2.0)
    ideal = np.concatenate([[0.0], np.cumsum(gains)])

    def add(key, value):
        totals[key] = totals.get(key, 0.0) + float(value)

    for start in range(0, len(users), batch_size):
        batch = users[start : start + batch_size]
        with torch.no_grad():
            scores = scorer(batch).float().cpu()
        if scores.shape != (len(batch), n_items):
            raise RecfunnelError(
                f"scorer returned {tuple(scores.shape)}, expected ({len(batch)}, {n_items})"
            )
        t = test_csr[batch].tocoo()
        rows, cols = (
            torch.as_tensor(t.row.astype(np.int64)),
            torch.as_tensor(t.col.astype(np.int64)),
        )
        # Factorized top-K: rank among all items, nothing excluded.
        pos = scores[rows, cols]
        rank = (scores[rows] > pos[:, None]).sum(1)
        test_rows += len(rows)
        for k in factorized_ks:
            add(factorized_key(k), (rank < k).sum())
        # Per-user metrics: exclude training items; relevant = test items not in training.
        tr = train_csr[batch].tocoo()
        scores[
            torch.as_tensor(tr.row.astype(np.int64)), torch.as_tensor(tr.col.astype(np.int64))
        ] = float("-inf")
        relevant = torch.zeros(len(batch), n_items, dtype=torch.bool)
        relevant[rows, cols] = True
        relevant &= ~torch.isneginf(scores)
        n_rel = relevant.sum(1)
        keep = n_rel > 0
        if not keep.any():
            continue
        scores, relevant, n_rel = scores[keep], relevant[keep], n_rel[keep].numpy()
        eval_users += int(keep.sum())
        top = torch.topk(scores, max_k, dim=1).indices
        hits = torch.gather(relevant, 1, top).numpy().astype(np.float64)  # [B', max_k]
        cum_hits = np.cumsum(hits, axis=1)
        top_np = top.numpy()
        for k in ranking_ks:
            h = cum_hits[:, k - 1]
            denom = np.minimum(k, n_rel)
            add(f"recall@{k}", (h / denom).sum())
            add(f"precision@{k}", (h / k).sum())
            add(f"hit_rate@{k}", (h > 0).sum())
            add(f"ndcg@{k}", ((hits[:, :k] @ gains[:k]) / ideal[denom]).sum())
            precision_at = cum_hits[:, :k] / np.arange(1, k + 1)
            add(f"map@{k}", ((precision_at * hits[:, :k]).sum(1) / denom).sum())
            covered[k][top_np[:, :k].reshape(-1)] = True
        best = torch.where(relevant, scores, torch.tensor(float("-inf"))).max(1).values
        first_rank = (scores > best[:, None]).sum(1).numpy()
        add("mrr", (1.0 / (first_rank + 1.0)).sum())

    metrics = {factorized_key(k): totals.get(factorized_key(k), 0.0) / max(1, test_rows)
               for k in factorized_ks}  # fmt: skip
    for k in ranking_ks:
        for name in ("recall", "precision", "ndcg", "map", "hit_rate"):
            metrics[f"{name}@{k}"] = totals.get(f"{name}@{k}", 0.0) / max(1, eval_users)
        metrics[f"coverage@{k}"] = float(covered[k].mean())
    metrics["mrr"] = totals.get("mrr", 0.0) / max(1, eval_users)
    metrics["num_test_rows"] = test_rows
    metrics["num_eval_users"] = eval_users
    return metrics


def rating_metrics(predicted: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    """``rmse`` and ``mae`` of rating predictions."""
    err = np.asarray(predicted, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return {"rmse": float(np.sqrt(np.mean(err**2))), "mae": float(np.mean(np.abs(err)))}
