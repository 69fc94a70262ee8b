"""Errors speak the caller's language: Python callers read ``data_dir=``, the CLI ``--data-dir``.

A library error whose message names a command-line flag must also carry the Python wording: the
flag text goes into ``cli=`` (printed by the ``recfunnel`` command, see
:meth:`recfunnel.errors.RecfunnelError.for_cli`) and the message itself names the Python
argument. This test reads the source, so a new flag-speaking error fails it at once.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from recfunnel.errors import DataError, RecfunnelError

SRC = Path(__file__).resolve().parents[1] / "src" / "recfunnel"
FLAG = re.compile(r"(?<![\w-])--[a-z]")
# The Python API checked so far. models/, config.py, presets.py, tuning.py and threads.py are
# being reworked on other branches today and still hold flag-speaking messages; add them here
# once converted (cli.py and __main__.py speak in flags by design).
CHECKED = ["data/*.py", "runs.py", "experiment.py", "metrics.py", "training.py", "report.py",
           "plots.py", "models/als.py", "models/ease.py", "models/sgd_mf.py", "checkpoints.py",
           "distributed.py", "progress.py", "tasks.py", "losses.py"]  # fmt: skip


def _strings(node):
    return " ".join(
        n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    )


def test_library_errors_naming_a_flag_also_speak_python():
    offenders = []
    paths = sorted({p for pattern in CHECKED for p in SRC.glob(pattern)})
    assert len(paths) > 10
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            call = node.exc
            speaks_cli = call.args and FLAG.search(_strings(call.args[0]))
            if speaks_cli and not any(k.arg == "cli" for k in call.keywords):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == [], "flag in a Python-facing message; move it to cli=: " + str(offenders)


def test_for_cli_falls_back_to_the_message():
    assert RecfunnelError("plain").for_cli() == "plain"
    err = DataError("pass data_dir=FOLDER", cli="pass --data-dir FOLDER")
    assert str(err) == "pass data_dir=FOLDER" and err.for_cli() == "pass --data-dir FOLDER"
    assert isinstance(err, ValueError)
