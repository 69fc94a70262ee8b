"""Models. Every model keeps the contract of :class:`~recfunnel.models.base.Recommender`."""

from recfunnel.errors import RecfunnelError
from recfunnel.models.als import WALS
from recfunnel.models.base import FactorizedRecommender, Recommender
from recfunnel.models.popularity import MostPopular
from recfunnel.models.sgd_mf import BPR, SGDMF
from recfunnel.models.two_tower import TwoTower

MODELS: dict[str, type[Recommender]] = {m.kind: m for m in (TwoTower, MostPopular)}
MODELS.update({m.kind: m for m in (WALS, SGDMF, BPR)})  # matrix factorization (#3)


def model_class(kind: str) -> type[Recommender]:
    """The model class registered under ``kind`` (``--model`` on the command line)."""
    try:
        return MODELS[kind]
    except KeyError:
        raise RecfunnelError(f"unknown model {kind!r}; use one of {', '.join(MODELS)}") from None


__all__ = [
    "BPR",
    "MODELS",
    "SGDMF",
    "WALS",
    "FactorizedRecommender",
    "MostPopular",
    "Recommender",
    "TwoTower",
    "model_class",
]
