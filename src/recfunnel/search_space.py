"""Search-space declarations for ``recfunnel tune`` (kept free of Optuna so models can import it).

Each model class declares ``search_space: dict[str, Float | Int | Choice]`` beside its
hyper-parameters; a name is a config option, dotted (``ranker.learning_rate``) or bare
(``epochs``: every field of that name, as ``--set`` reads it).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Float:
    """A real value in ``[low, high]``, sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def contains(self, value) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high


@dataclass(frozen=True)
class Int:
    """An integer in ``[low, high]``, sampled on a log scale when ``log``."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high, log=self.log)

    def contains(self, value) -> bool:
        return isinstance(value, int) and self.low <= value <= self.high


@dataclass(frozen=True)
class Choice:
    """One of ``values`` (JSON scalars)."""

    values: tuple

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.values))

    def contains(self, value) -> bool:
        return value in self.values


Param = Float | Int | Choice
