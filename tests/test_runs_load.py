"""Loading run folders an attacker or an editor has touched: only regular files inside the
folder, bounded reads, and a schema checked after the checksums, so every bad folder is one
ArtifactError line (exit 2 in the CLI), never a hang, a traceback or a huge allocation."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time

import pytest

from recfunnel.cli import main
from recfunnel.data import Vocabulary, checkerboard
from recfunnel.errors import ArtifactError
from recfunnel.models import TwoTower
from recfunnel.runs import Run


@pytest.fixture
def run_dir(tmp_path):
    data = checkerboard(6, 8, seed=0)
    model = TwoTower(dim=4, epochs=1, softmax="full", reduction="mean").fit(data)
    users = Vocabulary([f"u{i}" for i in range(6)], name="user")
    items = Vocabulary([f"i{i}" for i in range(8)], name="item")
    return Run(model, users, items, config={"data": {}}, metrics={"x": 1.0}).save(tmp_path / "r")


def rehash(path) -> None:
    """Make the manifest agree with the files again (an edit a checksum cannot catch)."""
    names = ("config.json", "vocab.json", "model.safetensors", "metrics.json")
    manifest = {n: hashlib.sha256((path / n).read_bytes()).hexdigest() for n in names}
    (path / "manifest.json").write_text(json.dumps(manifest))


def edit(path, name, change) -> None:
    data = json.loads((path / name).read_text())
    data = change(data)
    (path / name).write_text(json.dumps(data))
    rehash(path)


def load_fails(path, match: str) -> str:
    with pytest.raises(ArtifactError, match=match) as info:
        Run.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert str(path) not in info.value.reason  # the folder-free reason shown over HTTP
    return message


def loads_within(path, seconds: float) -> BaseException | None:
    """Run.load in a thread: the exception it raised; fails the test if it hangs."""
    out: dict = {}

    def target():
        try:
            Run.load(path)
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out["exc"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"Run.load still blocked after {seconds} s"
    return out.get("exc")


def test_a_fifo_manifest_is_refused_without_blocking(run_dir):
    (run_dir / "manifest.json").unlink()
    os.mkfifo(run_dir / "manifest.json")
    exc = loads_within(run_dir, 5)
    assert isinstance(exc, ArtifactError) and "not a regular file" in str(exc)


def test_a_fifo_weights_file_is_refused_without_blocking(run_dir):
    (run_dir / "model.safetensors").unlink()
    os.mkfifo(run_dir / "model.safetensors")
    exc = loads_within(run_dir, 5)
    assert isinstance(exc, ArtifactError) and "not a regular file" in str(exc)


def test_a_symlink_to_dev_zero_is_refused(run_dir):
    (run_dir / "vocab.json").unlink()
    os.symlink("/dev/zero", run_dir / "vocab.json")
    exc = loads_within(run_dir, 5)
    assert isinstance(exc, ArtifactError) and "not a regular file" in str(exc)


def test_a_symlink_out_of_the_folder_is_refused_even_with_the_right_bytes(run_dir, tmp_path):
    copy = tmp_path / "elsewhere.json"
    copy.write_bytes((run_dir / "config.json").read_bytes())
    (run_dir / "config.json").unlink()
    os.symlink(copy, run_dir / "config.json")
    load_fails(run_dir, "not a regular file")


def test_files_over_the_size_limit_are_refused(run_dir, monkeypatch):
    import recfunnel.runs as runs

    monkeypatch.setitem(runs.MAX_FILE_BYTES, "metrics.json", 8)
    load_fails(run_dir, "metrics.json is larger than")


@pytest.mark.parametrize(
    "name, change, match",
    [
        ("config.json", lambda c: {**c, "model": "nope"}, "names no known model"),
        ("config.json", lambda c: {**c, "model": ["two-tower"]}, "names no known model"),
        ("config.json", lambda c: {**c, "params": []}, "no 'params' object"),
        ("config.json", lambda c: [c], "not a JSON object"),
        ("config.json", lambda c: {k: v for k, v in c.items() if k != "format"}, "format None"),
        ("config.json", lambda c: {**c, "params": {**c["params"], "bogus": 1}}, "settings"),
        ("config.json", lambda c: {**c, "params": {**c["params"], "dim": 10**9}}, "disagree"),
        ("config.json", lambda c: {**c, "params": {**c["params"], "dim": -3}}, "settings"),
        ("vocab.json", lambda v: {**v, "users": list(range(6))}, "'users' list of strings"),
        ("vocab.json", lambda v: {**v, "users": v["users"][:-1]}, "disagree on the number"),
        ("vocab.json", lambda v: {**v, "users": ["u0"] * 6}, "twice"),
        ("vocab.json", lambda v: {**v, "items": None}, "'items' list of strings"),
        ("vocab.json", lambda v: {**v, "titles": ["a"]}, "one string per item"),
        ("vocab.json", lambda v: [], "'users' list of strings"),
        ("metrics.json", lambda m: [m], "metrics.json is not a JSON object"),
    ],
)
def test_edited_but_consistent_files_are_one_line_errors(run_dir, name, change, match):
    edit(run_dir, name, change)
    start = time.perf_counter()
    load_fails(run_dir, match)
    assert time.perf_counter() - start < 10  # no huge allocation on the way


def test_deeply_nested_json_is_refused(run_dir):
    (run_dir / "metrics.json").write_text("[" * 200_000 + "]" * 200_000)
    rehash(run_dir)
    load_fails(run_dir, "metrics.json is not valid JSON")


def test_a_manifest_that_is_not_an_object_is_refused(run_dir):
    (run_dir / "manifest.json").write_text("[1, 2]")
    load_fails(run_dir, "manifest.json is not a JSON object")
    (run_dir / "manifest.json").write_text("{not json")
    load_fails(run_dir, "manifest.json is unreadable")


def test_missing_tensors_are_refused(run_dir):
    from safetensors.torch import load_file, save_file

    tensors = load_file(run_dir / "model.safetensors")
    del tensors["seen.indptr"]
    save_file(tensors, run_dir / "model.safetensors")
    rehash(run_dir)
    load_fails(run_dir, "tensor 'seen.indptr' is missing")


@pytest.mark.parametrize("what", ["fifo", "edited", "nested"])
def test_the_cli_says_one_line_and_exits_2(run_dir, capsys, what):
    if what == "fifo":
        (run_dir / "manifest.json").unlink()
        os.mkfifo(run_dir / "manifest.json")
    elif what == "edited":
        edit(run_dir, "vocab.json", lambda v: {**v, "users": v["users"][:-1]})
    else:
        (run_dir / "config.json").write_text("{" * 100_000)
        rehash(run_dir)
    assert main(["recommend", str(run_dir), "--user", "u0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
