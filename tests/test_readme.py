"""The README's commands, read from README.md itself: they must work as pasted in a fresh clone.

``.ci/run`` runs the main job verbatim (``python tests/test_readme.py main-job`` prints it);
these tests check, without running anything heavy, that every ``recfunnel`` line of the setup
and Quickstart blocks parses with today's CLI, that no bare ``recfunnel`` is used before the
venv is activated, and that the main job installs the clone (``-e``) with the extras the
Quickstart needs.
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def bash_blocks(section: str) -> list[str]:
    """The ```bash blocks of one ``## section`` of the README."""
    text = README.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no '## {section}' section"
    return re.findall(r"^```bash\n(.*?)^```", match.group(1), re.S | re.M)


def main_job() -> str:
    return bash_blocks("Set up on a fresh machine")[0].strip()


def commands(block: str) -> list[list[str]]:
    """Shell words of each command: lines joined at backslashes, split at ``&&``, no comments."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            out.append(words[:cut])
            words = words[cut + 1 :]
    return [c for c in out if c]


def _recfunnel_argv(words: list[str]) -> list[str] | None:
    if words[0] in ("recfunnel", ".venv/bin/recfunnel"):
        return words[1:]
    return None


@pytest.mark.parametrize("section", ["Set up on a fresh machine", "Quickstart"])
def test_every_recfunnel_line_parses(section, capsys):
    from recfunnel.cli import build_parser

    parser = build_parser()
    checked = 0
    for block in bash_blocks(section):
        for words in commands(block):
            argv = _recfunnel_argv(words)
            if argv is None:
                continue
            try:
                parser.parse_args(argv)
            except SystemExit:
                pytest.fail(
                    f"README line does not parse: {shlex.join(words)}\n{capsys.readouterr()}"
                )
            checked += 1
    assert checked >= 3


def test_no_bare_recfunnel_before_the_venv_is_active():
    for section in ("Set up on a fresh machine", "Quickstart"):
        for block in bash_blocks(section):
            active = False
            for words in commands(block):
                if words[:2] == ["source", ".venv/bin/activate"]:
                    active = True
                if words[0] == "recfunnel":
                    assert active, f"bare 'recfunnel' without an active venv in {section}"


def test_main_job_installs_the_clone_with_the_quickstart_extras():
    job = commands(main_job())
    installs = [w for w in job if w[0].endswith("pip") and "install" in w]
    assert installs, "the main job installs nothing"
    targets = [w[w.index("-e") + 1] for w in installs if "-e" in w]
    assert targets, "the main job must install the clone with -e, not a package from the registry"
    extras = set(re.findall(r"\[(.*)\]", targets[0])[0].split(",")) if "[" in targets[0] else set()
    quick = " ".join(bash_blocks("Quickstart"))
    needed = {"serve"} if "recfunnel serve" in quick else set()
    if "recfunnel report" in quick:
        needed.add("plot")
    if ".parquet" in quick or "Parquet" in quick:
        needed.add("parquet")
    assert needed <= extras, f"the main job's install lacks extras {needed - extras}"
    first = [w[0] for w in job]
    assert first[0] == "python3" and ".venv/bin/recfunnel" in first


if __name__ == "__main__":  # python tests/test_readme.py main-job  -> the command, for .ci/run
    if sys.argv[1:] == ["main-job"]:
        print(main_job())
    else:
        sys.exit("usage: python tests/test_readme.py main-job")
