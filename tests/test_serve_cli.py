"""``recfunnel serve`` without the serve extra: one clear line, exit status 2."""

import sys

from recfunnel.cli import main


def test_serve_without_the_extra_says_what_to_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # makes ``import fastapi`` fail
    assert main(["serve", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "error: the HTTP service needs the 'serve' extra (fastapi is not installed); "
        "run: pip install 'recfunnel[serve]'"
    )


def test_serve_rejects_zero_workers(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--workers", "0"]) == 2
    assert "--workers must be at least 1" in capsys.readouterr().err
