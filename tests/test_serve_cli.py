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


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def test_serve_refuses_a_port_out_of_range(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--port", "99999"]) == 2
    assert "--port must be between 0 and 65535, not 99999" in one_error_line(capsys)


def test_serve_on_a_port_in_use_is_one_line_and_exit_2(tmp_path, capsys):
    import socket

    import pytest
    import torch

    pytest.importorskip("fastapi")
    from recfunnel.data import Vocabulary, checkerboard
    from recfunnel.models import MostPopular
    from recfunnel.runs import Run

    data = checkerboard(4, 6, seed=0)
    users = Vocabulary([f"u{i}" for i in range(4)])
    items = Vocabulary([f"i{i}" for i in range(6)])
    run_dir = Run(MostPopular().fit(data), users, items).save(tmp_path / "run")
    threads = torch.get_num_threads()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        try:
            assert main(["serve", str(run_dir), "--port", str(port)]) == 2
        finally:
            torch.set_num_threads(threads)
    err = one_error_line(capsys)
    assert f"cannot listen on 127.0.0.1:{port}" in err and "pick another --port" in err


def test_token_file_problems_are_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--token-file", str(tmp_path / "none")]) == 2
    assert "cannot read --token-file" in one_error_line(capsys)
    (tmp_path / "empty").write_text("\n")
    assert main(["serve", str(tmp_path), "--token-file", str(tmp_path / "empty")]) == 2
    assert "--token-file must hold one token" in one_error_line(capsys)
    (tmp_path / "t").write_text("abc\n")
    assert main(["serve", str(tmp_path), "--token-file", str(tmp_path / "t"), "--token", "x"]) == 2
    assert "not both" in one_error_line(capsys)


def test_token_file_is_read_and_stripped(tmp_path, monkeypatch):
    import argparse

    from recfunnel.cli import _serve_token

    (tmp_path / "t").write_text("s3cret\n")
    args = argparse.Namespace(token_file=str(tmp_path / "t"), token=None)
    assert _serve_token(args) == "s3cret"
    monkeypatch.setenv("RECFUNNEL_TOKEN", "from-env")
    assert _serve_token(argparse.Namespace(token_file=None, token=None)) == "from-env"
