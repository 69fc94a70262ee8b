"""Exceptions raised by recfunnel.

Every error a user can cause by bad input is a :class:`RecfunnelError` (a ``ValueError``) whose
message names the problem and the fix in one line. The CLI prints that line and exits non-zero;
the HTTP service turns it into a 4xx JSON body.
"""

from __future__ import annotations


class RecfunnelError(ValueError):
    """Bad input: the message says what is wrong and how to fix it."""


class DataError(RecfunnelError):
    """A data file or array is missing, malformed or inconsistent."""


class UnknownIdError(RecfunnelError, KeyError):
    """A raw user or item id is not in the vocabulary."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NotFittedError(RecfunnelError, AttributeError):
    """A model was used before ``fit`` (both ``ValueError`` and ``AttributeError``)."""


class TrainingError(RuntimeError):
    """Training diverged (NaN or infinite loss); lower the learning rate or raise regularization."""


class ArtifactError(RecfunnelError):
    """A saved run folder is missing files, truncated, tampered with or of an unknown schema."""
