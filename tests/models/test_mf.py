"""Matrix factorization: WALS (fast solvers vs the NumPy reference), SGD biased MF and BPR."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from recfunnel.data import Interactions, checkerboard
from recfunnel.errors import DataError, RecfunnelError, TrainingError
from recfunnel.models import BPR, SGDMF, WALS, als_kernels
from recfunnel.models.als import SparseRows, solve_cg, solve_cholesky
from recfunnel.models.als_reference import explicit_half_step, implicit_half_step


@pytest.fixture
def system():
    rng = np.random.default_rng(0)
    m = sp.random(30, 20, density=0.3, format="csr", random_state=1, dtype=np.float32)
    m.data = (m.data * 3 + 0.5).astype(np.float32)  # confidences in [0.5, 3.5]
    Y = rng.normal(size=(20, 4)).astype(np.float32)
    reg = rng.uniform(0.1, 1.0, 30)
    return m, Y, reg


def fast(m, Y, reg, *, implicit, solver):
    rows = SparseRows(m, torch.device("cpu"))
    values, Yt = torch.as_tensor(m.data), torch.as_tensor(Y)
    gram = values - 1 if implicit else torch.ones_like(values)
    base = Yt.T @ Yt if implicit else None
    out = torch.zeros(m.shape[0], Y.shape[1])
    regt = torch.as_tensor(reg, dtype=torch.float32)
    if solver == "cg":  # D=4: four exact-arithmetic CG steps solve the system
        return solve_cg(rows, Yt, gram, values, regt, base, out, steps=4).numpy()
    if solver == "fused":  # the per-row numba kernel, same equations
        pytest.importorskip("numba")
        X = out.numpy()
        base = None if base is None else base.numpy()
        scales = dict(h_scale=1.0, g_scale=1.0, g_shift=-1.0)  # g = v - 1, h = v
        if not implicit:
            scales = dict(h_scale=1.0, g_scale=0.0, g_shift=1.0)  # g = 1, h = v
        als_kernels.cg_rows(m.indptr, m.indices, m.data, regt.numpy(), base, Y, X, 4, **scales)
        return X
    return solve_cholesky(rows, Yt, gram, values, regt, base, out, batch=7).numpy()


@pytest.mark.parametrize("solver", ["cholesky", "cg", "fused"])
def test_implicit_solver_matches_the_reference(system, solver):
    m, Y, reg = system
    expected = implicit_half_step(m.astype(np.float64), Y.astype(np.float64), reg)
    np.testing.assert_allclose(fast(m, Y, reg, implicit=True, solver=solver), expected, atol=1e-4)


@pytest.mark.parametrize("solver", ["cholesky", "cg", "fused"])
def test_explicit_solver_matches_the_reference(system, solver):
    m, Y, reg = system
    m = m.tolil()
    m[3] = 0  # a user with no ratings gets zeros
    m = m.tocsr()
    m.eliminate_zeros()
    expected = explicit_half_step(m.astype(np.float64), Y.astype(np.float64), reg)
    np.testing.assert_allclose(fast(m, Y, reg, implicit=False, solver=solver), expected, atol=1e-3)
    assert not expected[3].any()


@pytest.mark.parametrize("feedback", ["implicit", "explicit"])
def test_fused_and_torch_cg_fits_agree(monkeypatch, feedback):
    pytest.importorskip("numba")
    rng = np.random.default_rng(0)
    data = Interactions(rng.integers(0, 60, 600), rng.integers(0, 40, 600), 60, 40,
                        ratings=rng.integers(1, 6, 600).astype(np.float32))  # fmt: skip
    data = data.deduplicate("mean")
    fused = WALS(dim=6, epochs=4, feedback=feedback, regularization=0.5).fit(data)
    monkeypatch.setattr(als_kernels, "AVAILABLE", False)
    plain = WALS(dim=6, epochs=4, feedback=feedback, regularization=0.5).fit(data)
    # float32 sums in another order: CG steps amplify the rounding a little
    np.testing.assert_allclose(fused.user_factors_, plain.user_factors_, atol=2e-3)
    np.testing.assert_allclose(fused.item_factors_, plain.item_factors_, atol=2e-3)
    assert fused.training_log_.epochs[-1]["loss"] == pytest.approx(
        plain.training_log_.epochs[-1]["loss"], rel=1e-4
    )


def test_cholesky_wals_never_increases_the_loss():
    data = checkerboard(20, 20, seed=2)
    model = WALS(dim=4, epochs=6, solver="cholesky", alpha=3.0, regularization=0.1).fit(data)
    losses = [e["loss"] for e in model.training_log_.epochs]
    assert all(b <= a + 1e-5 for a, b in zip(losses, losses[1:], strict=False))


def precision_at_1(model, data):
    ids, _ = model.recommend(np.arange(data.num_users), 1)
    return float(np.mean(ids[:, 0] % 2 == np.arange(data.num_users) % 2))


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_wals_checkerboard_precision_at_1(board, solver):
    model = WALS(dim=4, epochs=10, solver=solver, alpha=4.0, regularization=0.1).fit(board)
    assert precision_at_1(model, board) == 1.0


def test_bpr_checkerboard_precision_at_1(board):
    model = BPR(dim=8, epochs=60, batch_size=32, learning_rate=0.05, seed=1).fit(board)
    assert precision_at_1(model, board) == 1.0


def planted_ratings(seed=0, users=60, items=40, rank=3):
    """A rank-3 rating matrix plus biases; 60% of cells observed, the rest held out."""
    rng = np.random.default_rng(seed)
    P, Q = rng.normal(size=(users, rank)), rng.normal(size=(items, rank))
    full = 3.0 + 0.5 * rng.normal(size=(users, 1)) + 0.5 * rng.normal(size=(1, items))
    full = full + 0.5 * P @ Q.T
    u, i = np.divmod(np.arange(users * items), items)
    observed = rng.random(users * items) < 0.6
    make = lambda m: Interactions(u[m], i[m], users, items, ratings=full[u[m], i[m]])  # noqa: E731
    return make(observed), make(~observed)


def rmse(model, test):
    return float(np.sqrt(np.mean((model.predict(test.users, test.items) - test.ratings) ** 2)))


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_explicit_wals_recovers_a_planted_low_rank_matrix(solver):
    train, test = planted_ratings()
    model = WALS(feedback="explicit", dim=3, epochs=30, regularization=0.01, solver=solver)
    model.fit(train)
    assert rmse(model, test) < 0.1  # the ratings' own spread is ~1


def test_explicit_wals_with_an_unrated_item_and_frequency_scaled_regularization(tiny):
    wide = Interactions(tiny.users, tiny.items, 4, 7, ratings=tiny.ratings)  # items 5, 6 unrated
    model = WALS(feedback="explicit", dim=2, epochs=3, reg_exponent=1.0, solver="cholesky")
    model.fit(wide)
    assert not model.item_factors_[5:].any() and not model.item_bias_[5:].any()
    assert np.isfinite(model.predict([0, 1], [5, 6])).all()


def test_sgd_mf_recovers_a_planted_low_rank_matrix():
    train, test = planted_ratings()
    model = SGDMF(dim=3, epochs=150, regularization=0.0, batch_size=64, learning_rate=0.02)
    model.fit(train)
    assert rmse(model, test) < 0.15
    assert model.predicts_ratings


def test_fold_in_of_a_training_user_gives_nearly_their_recommendations():
    data = checkerboard(40, 30, seed=3, density=0.6)
    model = WALS(dim=6, epochs=15, alpha=2.0, regularization=0.05, solver="cholesky").fit(data)
    for user in (0, 7):
        history = data.items[data.users == user]
        folded = model.fold_in(history)[0]
        # exactly one user update against the final item factors ...
        confidence = sp.csr_matrix(
            (np.full(len(history), 2.0), (np.zeros(len(history), int), history)), shape=(1, 30)
        )
        Y = model.item_factors_.double().numpy()
        exact = implicit_half_step(confidence, Y, np.array([0.05]))[0]
        np.testing.assert_allclose(folded, exact, atol=1e-4)
        # ... which is nearly the trained vector (solved against the previous item factors)
        cosine = torch.nn.functional.cosine_similarity(folded, model.user_factors_[user], 0)
        assert cosine > 0.99
        ids, _ = model.recommend_history(history, 5)
        expected, _ = model.recommend(user, 5)
        assert len(set(ids.tolist()) & set(expected.tolist())) >= 4


def test_bad_input_is_a_clear_error(tiny):
    with pytest.raises(RecfunnelError, match="SGD-MF needs ratings; fit interactions with"):
        SGDMF().fit(Interactions(tiny.users, tiny.items, 4, 5))
    with pytest.raises(RecfunnelError, match="explicit WALS needs ratings"):
        WALS(feedback="explicit").fit(Interactions(tiny.users, tiny.items, 4, 5))
    with pytest.raises(RecfunnelError, match="regularization must be positive"):
        WALS(regularization=0).fit(tiny)
    with pytest.raises(RecfunnelError, match="solver must be one of"):
        WALS(solver="qr").fit(tiny)
    with pytest.raises(DataError, match="confidences must be >= 0"):
        Interactions(tiny.users, tiny.items, 4, 5, weights=[1, 1, -1, 1, 1, 1, 1, 1])
    with pytest.raises(DataError, match="NaN"):
        Interactions(tiny.users, tiny.items, 4, 5, ratings=[1, 1, np.nan, 1, 1, 1, 1, 1])
    model = WALS(dim=2, epochs=2).fit(tiny)
    with pytest.raises(RecfunnelError, match="history is empty"):
        model.recommend_history([], 2)
    with pytest.raises(RecfunnelError, match="out of range"):
        model.fold_in(np.array([9]))


def test_weights_scale_the_confidence(tiny):
    """alpha * weight is the confidence: doubling alpha equals doubling every weight."""
    weighted = Interactions(tiny.users, tiny.items, 4, 5, weights=np.full(8, 2.0))
    a = WALS(dim=2, epochs=3, alpha=1.0, solver="cholesky").fit(weighted)
    b = WALS(dim=2, epochs=3, alpha=2.0, solver="cholesky").fit(tiny)
    torch.testing.assert_close(a.user_factors_, b.user_factors_)


def test_divergence_raises_training_error(tiny):
    with pytest.raises(TrainingError, match="diverged"):
        SGDMF(dim=2, epochs=5, optimizer="sgd", learning_rate=1e6, batch_size=2).fit(tiny)
