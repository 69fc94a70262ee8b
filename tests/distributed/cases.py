"""Networks and one global batch each, built alike in every process (seeded)."""

import numpy as np
import torch

from recfunnel.data import Interactions
from recfunnel.data.synthetic import power_law
from recfunnel.models.sgd_mf import BiasedMFNet, BPRLoss, RatingLoss
from recfunnel.models.two_tower import TwoTower
from recfunnel.training import to_tensors

_RAW = power_law(70, 50, 900, seed=2)
DATA = Interactions(_RAW.users, _RAW.items, _RAW.num_users, _RAW.num_items,
                    ratings=np.random.default_rng(0).integers(1, 6, len(_RAW)))  # fmt: skip
TWO_TOWER = {
    "seed": dict(softmax="in-batch", reduction="sum"),
    "in-batch-hits-logq": dict(softmax="in-batch", remove_accidental_hits=True,
                               logq_correction=True, reduction="mean"),
    "mixed-sparse": dict(softmax="mixed", negatives=12, logq_correction=True,
                         sparse_updates=True, history=True, item_bias=True, user_l2=0.1,
                         reduction="mean"),
    "full-history": dict(softmax="full", history=True, item_bias=True, reduction="mean"),
}  # fmt: skip
CASES = [*TWO_TOWER, "sgd-mf", "bpr", "bpr-sparse-popularity"]


def rows():
    """The global batch: 301 rows of a seeded shuffle (uneven between 2 processes)."""
    return torch.randperm(len(DATA), generator=torch.Generator().manual_seed(5))[:301]


def build(name):
    """``(network, tensors, rows)`` for case ``name``."""
    tensors = to_tensors(DATA, torch.device("cpu"))
    torch.manual_seed(1)
    if name == "sgd-mf":
        return (
            RatingLoss(BiasedMFNet(DATA.num_users, DATA.num_items, 6, 0.1), 0.05),
            tensors,
            rows(),
        )
    if name.startswith("bpr"):  # negatives drawn in the step: for the global batch, sliced
        sparse = name == "bpr-sparse-popularity"
        net = BiasedMFNet(DATA.num_users, DATA.num_items, 6, 0.1, sparse=sparse)
        sampling = "popularity" if sparse else "uniform"
        return BPRLoss(net, 0.05, DATA.item_counts(), 5, sampling), tensors, rows()
    model = TwoTower(dim=6, seed=1, init="normal", init_scale=0.1, **TWO_TOWER[name])
    config = model.resolve(len(DATA), DATA.num_items)
    model._remember(DATA)
    net = model._network(DATA.num_users, DATA.num_items, DATA.item_counts(), config)
    return net, tensors, rows()


# ------------------------------------------------------------------ WALS, rows split by rank
WALS_CASES = {
    "implicit-cg": dict(solver="cg"),  # the fused kernel where numba is installed
    "implicit-cg-torch": dict(solver="cg", torch_solver=True),
    "implicit-cholesky": dict(solver="cholesky", reg_exponent=1.0),
    "explicit-cholesky": dict(solver="cholesky", feedback="explicit", regularization=0.1),
    "explicit-cg": dict(solver="cg", feedback="explicit", regularization=0.1),
}


def wals_fit(name):
    """A WALS fit of one case on seeded power-law data with ratings and weights."""
    import numpy as np

    from recfunnel.data import Interactions
    from recfunnel.data.synthetic import power_law
    from recfunnel.models import als

    data = power_law(90, 50, 1500, seed=5)
    rng = np.random.default_rng(1)
    data = Interactions(data.users, data.items, data.num_users, data.num_items,
                        ratings=rng.integers(1, 6, len(data)).astype(np.float32),
                        weights=rng.integers(1, 4, len(data)).astype(np.float32))  # fmt: skip
    params = dict(WALS_CASES[name])
    torch_solver = params.pop("torch_solver", False)
    fused = als.als_kernels.AVAILABLE
    als.als_kernels.AVAILABLE = fused and not torch_solver
    try:
        return als.WALS(dim=6, epochs=4, alpha=2.0, seed=3, **params).fit(data)
    finally:
        als.als_kernels.AVAILABLE = fused
