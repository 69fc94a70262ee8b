"""Models. Every model keeps the contract of :class:`~recfunnel.models.base.Recommender`."""

from recfunnel.errors import RecfunnelError
from recfunnel.models.als import WALS
from recfunnel.models.base import FactorizedRecommender, Recommender
from recfunnel.models.blend import Blend
from recfunnel.models.ease import EASE
from recfunnel.models.multitask import Multitask
from recfunnel.models.popularity import MostPopular
from recfunnel.models.ranking import RankingModel
from recfunnel.models.rp3beta import RP3beta
from recfunnel.models.sequential import Sequential
from recfunnel.models.sgd_mf import BPR, SGDMF
from recfunnel.models.two_stage import TwoStage
from recfunnel.models.two_tower import TwoTower

MODELS: dict[str, type[Recommender]] = {
    m.kind: m
    for m in (
        TwoTower,
        MostPopular,
        WALS,
        SGDMF,
        BPR,
        EASE,
        RP3beta,
        RankingModel,
        TwoStage,
        Multitask,
        Blend,
        Sequential,
    )
}


def model_class(kind: str) -> type[Recommender]:
    """The model class registered under ``kind`` (``--model`` on the command line)."""
    try:
        return MODELS[kind]
    except KeyError:
        raise RecfunnelError(f"unknown model {kind!r}; use one of {', '.join(MODELS)}") from None


__all__ = [
    "BPR",
    "Blend",
    "EASE",
    "MODELS",
    "SGDMF",
    "WALS",
    "FactorizedRecommender",
    "MostPopular",
    "RP3beta",
    "Multitask",
    "RankingModel",
    "Recommender",
    "Sequential",
    "TwoStage",
    "TwoTower",
    "model_class",
]
