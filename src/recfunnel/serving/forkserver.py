"""Imported once, and only, by the fork server that starts the workers of ``serve --workers N``
(see :func:`recfunnel.serving.server.worker_context`): torch, FastAPI and the app are imported
here once, and each worker is forked from this ready-made process.

The fork server ignores ``SIGHUP``: that signal asks the supervisor for a rolling restart, and
one reaching the fork server too (a terminal hang-up, ``kill -HUP -PGID``) would end it, leaving
its workers running unsupervised beside their replacements. Workers inherit the setting; only
the supervisor acts on ``SIGHUP``.
"""

from __future__ import annotations

import signal

import recfunnel.serving.app  # noqa: F401  (imported for its side effect: the modules load once)

signal.signal(signal.SIGHUP, signal.SIG_IGN)
