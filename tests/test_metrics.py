import math

import numpy as np
import pytest
import torch

from recfunnel.data import Interactions
from recfunnel.errors import RecfunnelError
from recfunnel.metrics import (
    choose_users,
    describe_choice,
    evaluate_scores,
    factorized_key,
    parse_memory,
    rating_metrics,
    users_with_tests,
)

# 1 user, 5 items. Scores rank items 0 > 1 > 2 > 3 > 4. Item 0 was seen in training.
SCORES = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])


def scorer(users):
    return SCORES[: len(users)].clone()


def data(test_items):
    train = Interactions([0], [0], 1, 5)
    test = Interactions([0] * len(test_items), test_items, 1, 5)
    return train, test


def test_factorized_top_k_counts_rank_among_all_items_without_exclusion():
    train, test = data([1, 3])  # ranks 1 and 3 among all five (item 0 not excluded)
    m = evaluate_scores(scorer, train, test, factorized_ks=(1, 2, 4), ranking_ks=(1,))
    assert m[factorized_key(1)] == 0.0
    assert m[factorized_key(2)] == 0.5
    assert m[factorized_key(4)] == 1.0


def test_ranking_metrics_by_hand():
    train, test = data([1, 3])
    # seen item 0 excluded -> ranking is 1, 2, 3, 4; relevant {1, 3} at positions 0 and 2
    m = evaluate_scores(scorer, train, test, factorized_ks=(), ranking_ks=(1, 2, 3))
    assert m["recall@1"] == 1.0  # 1 hit / min(1, 2)
    assert m["recall@2"] == 0.5
    assert m["recall@3"] == 1.0
    assert m["precision@3"] == pytest.approx(2 / 3)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert m["ndcg@3"] == pytest.approx(dcg / idcg)
    assert m["map@3"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["mrr"] == 1.0
    assert m["hit_rate@1"] == 1.0
    assert m["coverage@1"] == pytest.approx(1 / 5)


def test_ties_count_in_the_items_favour():
    train, test = Interactions([0], [4], 1, 5), Interactions([0], [2], 1, 5)
    m = evaluate_scores(
        lambda u: torch.ones(1, 5), train, test, factorized_ks=(1,), ranking_ks=(1,)
    )
    assert m[factorized_key(1)] == 1.0


def test_rating_metrics():
    got = rating_metrics(np.array([1.0, 3.0]), np.array([2.0, 1.0]))
    assert got["rmse"] == pytest.approx(math.sqrt(2.5))
    assert got["mae"] == pytest.approx(1.5)


# ---------------------------------------------------------------- the blocked evaluation
def reference_metrics(scores, train, test, users, factorized_ks, ranking_ks):
    """A readable oracle: one user at a time, a full sort of every row."""
    scores = np.asarray(scores, dtype=np.float64)
    seen = {(u, i) for u, i in zip(train.users, train.items, strict=True)}
    by_user = {}
    for u, i in zip(test.users, test.items, strict=True):
        by_user.setdefault(int(u), set()).add(int(i))
    out = {factorized_key(k): 0.0 for k in factorized_ks}
    sums = {f"{m}@{k}": 0.0 for m in ("recall", "precision", "ndcg", "map", "hit_rate")
            for k in ranking_ks}  # fmt: skip
    sums["mrr"], rows, evaluated = 0.0, 0, 0
    covered = {k: set() for k in ranking_ks}
    for u in users:
        row = scores[u]
        for i in by_user.get(int(u), ()):
            rows += 1
            rank = int((row > row[i]).sum())
            for k in factorized_ks:
                out[factorized_key(k)] += rank < k
        masked = row.copy()
        masked[[i for (v, i) in seen if v == u]] = -np.inf
        relevant = {i for i in by_user.get(int(u), ()) if (u, i) not in seen}
        if not relevant:
            continue
        evaluated += 1
        order = np.argsort(-masked, kind="stable")
        for k in ranking_ks:
            hits = [1.0 if i in relevant else 0.0 for i in order[:k]]
            denom = min(k, len(relevant))
            sums[f"recall@{k}"] += sum(hits) / denom
            sums[f"precision@{k}"] += sum(hits) / k
            sums[f"hit_rate@{k}"] += float(sum(hits) > 0)
            dcg = sum(h / math.log2(r + 2) for r, h in enumerate(hits))
            sums[f"ndcg@{k}"] += dcg / sum(1 / math.log2(r + 2) for r in range(denom))
            ap = sum(sum(hits[: r + 1]) / (r + 1) for r, h in enumerate(hits) if h)
            sums[f"map@{k}"] += ap / denom
            covered[k].update(order[:k].tolist())
        best = max(masked[i] for i in relevant)
        sums["mrr"] += 1.0 / (1 + int((masked > best).sum()))
    for key in out:
        out[key] /= max(1, rows)
    for key, value in sums.items():
        out[key] = value / max(1, evaluated)
    for k in ranking_ks:
        out[f"coverage@{k}"] = len(covered[k]) / scores.shape[1]
    out["num_test_rows"], out["num_eval_users"] = rows, evaluated
    return out


@pytest.fixture(scope="module")
def random_case():
    from recfunnel.data.splits import random_split
    from recfunnel.data.synthetic import power_law

    data = power_law(300, 120, 4000, seed=3)
    train, test = random_split(data, 0.3, seed=1)
    # a few test rows that are also in training: neither relevant nor excluded from factorized
    train = train.concat(test.subset(np.arange(0, len(test), 17)))
    scores = torch.randn(300, 120, generator=torch.Generator().manual_seed(0))
    return train, test, scores


def _check_same(got, want):
    assert set(want) <= set(got)
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


@pytest.fixture(params=["compiled", "torch"])
def row_pass(request, monkeypatch):
    """Both ways of the per-row pass: the numba kernel (where installed) and torch/NumPy."""
    from recfunnel import eval_kernels

    if request.param == "compiled" and not eval_kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    monkeypatch.setattr(eval_kernels, "AVAILABLE", request.param == "compiled")
    return request.param


@pytest.mark.parametrize("batch_size", [None, 1, 7, 1000])
def test_blocked_evaluation_matches_the_reference_whatever_the_block(
    random_case, batch_size, row_pass
):
    train, test, scores = random_case
    users = users_with_tests(test)
    got = evaluate_scores(
        lambda u: scores[torch.as_tensor(u)].clone(), train, test,
        factorized_ks=(1, 5, 10, 50), ranking_ks=(1, 5, 10, 50), batch_size=batch_size,
    )  # fmt: skip
    want = reference_metrics(scores.numpy(), train, test, users, (1, 5, 10, 50), (1, 5, 10, 50))
    _check_same(got, want)


def test_memory_budget_bounds_the_block(random_case, row_pass):
    train, test, scores = random_case
    sizes = []

    def scorer(u):
        sizes.append(len(u))
        return scores[torch.as_tensor(u)].clone()

    tiny = evaluate_scores(scorer, train, test, memory="4KB")
    assert max(sizes) == 4096 // (8 * 120)
    sizes.clear()
    whole = evaluate_scores(scorer, train, test, memory="1GB")
    assert len(sizes) == 1
    _check_same(tiny, whole)  # the same up to the order of float sums


def test_a_scorer_may_return_one_reused_buffer(random_case):
    train, test, scores = random_case
    buffer = torch.empty(300, 120)

    def scorer(u):
        out = buffer[: len(u)]
        out.copy_(scores[torch.as_tensor(u)])
        return out

    reused = evaluate_scores(scorer, train, test, batch_size=16)
    fresh = evaluate_scores(lambda u: scores[torch.as_tensor(u)].clone(), train, test)
    _check_same(reused, fresh)


def test_sampled_users_are_seeded_and_evaluated_exactly(random_case, row_pass):
    train, test, scores = random_case
    everyone = users_with_tests(test)
    chosen, record = choose_users(test, 50, seed=4)
    again, _ = choose_users(test, 50, seed=4)
    assert np.array_equal(chosen, again) and len(chosen) == 50
    assert set(chosen) <= set(everyone)
    assert record == {"users": "sample", "sample_size": 50, "test_users": len(everyone), "seed": 4}
    assert "sample of 50" in describe_choice(record)
    got = evaluate_scores(lambda u: scores[torch.as_tensor(u)].clone(), train, test, users=chosen)
    want = reference_metrics(scores.numpy(), train, test, chosen, (1, 5, 10, 50, 100), (5, 10))
    _check_same(got, want)


def test_a_sample_as_large_as_the_test_users_is_all_of_them(random_case):
    _, test, _ = random_case
    everyone = users_with_tests(test)
    for choice in (len(everyone), len(everyone) + 5, "all", None):
        users, record = choose_users(test, choice)
        assert np.array_equal(users, everyone) and record["users"] == "all"
        assert describe_choice(record) == ""


def test_sampled_metrics_estimate_the_full_ones():
    from recfunnel.data.splits import random_split
    from recfunnel.data.synthetic import power_law
    from recfunnel.models.als import WALS

    data = power_law(3000, 300, 40000, seed=0)
    train, test = random_split(data, 0.2, seed=0)
    model = WALS(dim=8, epochs=3).fit(train)
    full = evaluate_scores(model.score, train, test)
    sample, _ = choose_users(test, 1000, seed=0)
    part = evaluate_scores(model.score, train, test, users=sample)
    assert part["num_eval_users"] < full["num_eval_users"]
    for key in ("recall@10", "ndcg@10", factorized_key(10)):
        assert part[key] == pytest.approx(full[key], rel=0.15), key


@pytest.mark.parametrize("bad", ["0", "-3", "some", "1.5"])
def test_eval_users_must_be_all_or_a_positive_number(random_case, bad):
    with pytest.raises(RecfunnelError, match="eval_users must be") as caught:
        choose_users(random_case[1], bad)
    assert caught.value.for_cli().startswith("--eval-users must be")  # the CLI's words


def test_memory_sizes():
    assert parse_memory("512MB") == 512 * 2**20
    assert parse_memory("2g") == 2 * 2**30
    assert parse_memory("1.5KiB") == 1536
    assert parse_memory(1000) == 1000
    with pytest.raises(RecfunnelError, match="512MB"):
        parse_memory("lots")


# ------------------------------------------------------- the fused pass of factorized models
def exact_factors(n_users, n_items, dim, seed):
    """Factors whose float32 dot products are exact (multiples of 1/4 times powers of two):
    the kernel's scores equal float64 ones, ties are frequent (equal scores, duplicated and
    zero item vectors), and item norms fall off so the pruning by norm stops users early."""
    rng = np.random.default_rng(seed)
    users = rng.integers(-8, 9, (n_users, dim)) / 4.0
    items = rng.integers(-8, 9, (n_items, dim)) / 4.0 * 2.0 ** -rng.integers(0, 7, (n_items, 1))
    items[rng.choice(n_items, n_items // 20, replace=False)] = 0.0
    items[1::97] = items[0]  # the same vector: the same score, ties broken by index
    return torch.tensor(users, dtype=torch.float32), torch.tensor(items, dtype=torch.float32)


@pytest.fixture(scope="module")
def factor_case():
    from recfunnel.data.splits import random_split
    from recfunnel.data.synthetic import power_law

    data = power_law(300, 1100, 9000, seed=5)  # more items than one tile (256)
    train, test = random_split(data, 0.3, seed=2)
    train = train.concat(test.subset(np.arange(0, len(test), 13)))  # seen test rows too
    X, Y = exact_factors(300, 1100, 8, seed=1)
    return train, test, X, Y


@pytest.mark.parametrize("batch_size", [None, 1, 37])
def test_fused_pass_matches_the_reference(factor_case, batch_size):
    from recfunnel import eval_kernels
    from recfunnel.metrics import DotScorer, dot_scorer

    if not eval_kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    train, test, X, Y = factor_case
    scorer = dot_scorer(lambda u: X[torch.as_tensor(u)], Y)
    assert isinstance(scorer, DotScorer) and scorer.fusable()
    ks = (1, 5, 10, 50, 100)
    got = evaluate_scores(scorer, train, test, factorized_ks=ks, ranking_ks=ks,
                          batch_size=batch_size)  # fmt: skip
    users = users_with_tests(test)
    want = reference_metrics((X.double() @ Y.double().T).numpy(), train, test, users, ks, ks)
    _check_same(got, want)


def test_fused_pass_agrees_with_the_blocked_pass(factor_case, monkeypatch):
    """The same metrics through the [B, N] blocks (torch's product) and the fused pass, on
    random float factors (no ties, whose order the blocked pass leaves to torch.topk)."""
    from recfunnel import eval_kernels
    from recfunnel.metrics import dot_scorer

    if not eval_kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    train, test, _, _ = factor_case
    g = torch.Generator().manual_seed(3)
    X = torch.randn(300, 8, generator=g)
    Y = torch.randn(1100, 8, generator=g) * 10.0 ** -(3 * torch.rand(1100, 1, generator=g))
    fused = evaluate_scores(dot_scorer(lambda u: X[torch.as_tensor(u)], Y), train, test)
    monkeypatch.setattr(eval_kernels, "AVAILABLE", False)
    blocked = evaluate_scores(dot_scorer(lambda u: X[torch.as_tensor(u)], Y), train, test)
    for key in ("recall@10", "ndcg@10", "mrr", factorized_key(10), "num_eval_users"):
        assert fused[key] == pytest.approx(blocked[key], rel=1e-9), key


def test_fused_top_k_prunes_and_stays_exact():
    """Random float factors with norms over four orders of magnitude: the pruned pass gives
    the top-k, the counts above each user's best and the test and seen cells' scores of a
    brute-force float64 ranking (no exact ties with random floats)."""
    from recfunnel import eval_kernels

    if not eval_kernels.AVAILABLE:
        pytest.skip("numba is not installed")
    rng = np.random.default_rng(0)
    B, N, D, K = 40, 3000, 16, 20
    Q = rng.standard_normal((B, D)).astype(np.float32)
    V = (rng.standard_normal((N, D)) * 10.0 ** rng.uniform(-4, 0, (N, 1))).astype(np.float32)
    picks = [rng.choice(N, 28, replace=False) for _ in range(B)]  # 3 test, 25 seen each
    seen_cols = [np.sort(p[3:]) for p in picks]
    test_cols = [p[:3] for p in picks]
    s_ptr = np.concatenate([[0], np.cumsum([len(c) for c in seen_cols])])
    t_ptr = np.arange(B + 1) * 3
    relevant = rng.random(3 * B) < 0.7
    t_cols, s_cols = np.concatenate(test_cols), np.concatenate(seen_cols)
    items = eval_kernels.sort_items(V)
    ids, vals, counts, pos, seen = eval_kernels.fused_top_k(
        Q, items, K, (t_ptr, t_cols, relevant), (s_ptr, s_cols)
    )
    S = Q.astype(np.float64) @ V.astype(np.float64).T
    norms = np.linalg.norm(Q, axis=1)[:, None] * np.linalg.norm(V, axis=1)[None, :]
    for got, count, cols in ((pos, 3, t_cols), (seen, 25, s_cols)):  # float32 rounding only
        rows = np.repeat(np.arange(B), count)
        assert (np.abs(got - S[rows, cols]) <= 1e-5 * norms[rows, cols]).all()
    masked = S.copy()
    masked[np.repeat(np.arange(B), 25), s_cols] = -np.inf
    np.testing.assert_array_equal(ids, np.argsort(-masked, axis=1, kind="stable")[:, :K])
    for u in range(B):
        mine = t_cols[3 * u : 3 * u + 3][relevant[3 * u : 3 * u + 3]]
        want = int((masked[u] > S[u, mine].max()).sum()) if len(mine) else 0
        assert counts[u] == want, u
