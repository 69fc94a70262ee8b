"""Exceptions raised by recfunnel.

Every error a user can cause by bad input is a :class:`RecfunnelError` (a ``ValueError``) whose
message names the problem and the fix in one line. The CLI prints that line and exits non-zero;
the HTTP service turns it into a 4xx JSON body.
"""

from __future__ import annotations

import re


class RecfunnelError(ValueError):
    """Bad input: the message says what is wrong and how to fix it.

    The message speaks Python (``pass data_dir=FOLDER``); where the fix reads differently on
    the command line, ``cli=`` holds the same message in the CLI's words (``pass --data-dir
    FOLDER``), which the ``recfunnel`` command prints instead (:meth:`for_cli`).
    """

    def __init__(self, *args, cli: str | None = None) -> None:
        super().__init__(*args)
        self.cli = cli

    def for_cli(self) -> str:
        """The message as the command line should print it."""
        return self.cli if self.cli is not None else str(self)


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


def out_of_memory(exc: BaseException) -> str | None:
    """How many bytes an allocation that ran out of memory asked for, as words ("800.0 GiB"; an
    empty string when unknown), or ``None`` when ``exc`` is not an out-of-memory error
    (:class:`MemoryError`, torch's CPU allocator's ``RuntimeError``, CUDA's
    ``OutOfMemoryError``)."""
    text = str(exc)
    if isinstance(exc, MemoryError):
        return ""
    oom = type(exc).__name__ == "OutOfMemoryError" or "can't allocate memory" in text
    if not isinstance(exc, RuntimeError) or not oom:
        return None
    asked = re.search(r"allocate (\d+) bytes", text)
    return f"{int(asked.group(1)) / 2**30:,.1f} GiB" if asked else ""
