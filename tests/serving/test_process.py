"""The real server in a subprocess on 127.0.0.1: start-up refusal, kill under load, SIGHUP."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from recfunnel.cli import main
from recfunnel.runs import Run

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")

SRC = Path(__file__).resolve().parents[2] / "src"
ENV = {**os.environ, "PYTHONPATH": f"{SRC}:{os.environ.get('PYTHONPATH', '')}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(run_dir, *extra, env=None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recfunnel.cli", "serve", str(run_dir), "--port", str(port), *extra],
        env={**ENV, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    workers = int(extra[extra.index("--workers") + 1]) if "--workers" in extra else 1
    seen: set[int] = set()  # every worker has answered: none is still starting up
    deadline = time.time() + 90
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited: {proc.stderr.read().decode()}")
        try:
            r = httpx.get(url + "/healthz", timeout=1)
            if r.status_code == 200:
                seen.add(r.json()["worker"])
                if len(seen) >= workers:
                    proc.workers = seen  # the pids of the workers started
                    return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.05 if seen else 0.2)
    stop(proc)
    pytest.fail(f"server did not start {workers} worker(s) within 90 s (saw {len(seen)})")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def wait_for(predicate, seconds=30.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("truncate", [False, True])
def test_serve_refuses_a_broken_run_with_one_line(run_dir, break_run, capsys, truncate):
    break_run(run_dir, truncate=truncate)
    assert main(["serve", str(run_dir), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ")
    assert "does not match its checksum" in err


def test_serve_refuses_a_missing_folder(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "nope")]) == 2
    assert "not a recfunnel run folder" in capsys.readouterr().err


def test_kill_under_load_loses_nothing(run_dir):
    before = digest(run_dir)
    proc, url = start(run_dir, "--token", "t0k")
    headers = {"Authorization": "Bearer t0k"}
    assert httpx.get(url + "/v1/model").status_code == 401  # the token is enforced
    answer = httpx.get(url + "/v1/recommendations/u1?k=5", headers=headers).json()
    counts = {"ok": 0, "failed": 0}
    stop_load = threading.Event()

    def load():
        with httpx.Client(base_url=url, headers=headers, timeout=2) as c:
            while not stop_load.is_set():
                try:
                    counts["ok"] += c.get("/v1/recommendations/u1?k=5").status_code == 200
                except httpx.HTTPError:
                    counts["failed"] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: counts["ok"] >= 50, 30)
        os.killpg(proc.pid, signal.SIGKILL)  # mid-load, no chance to clean up
        proc.wait(10)
        assert wait_for(lambda: counts["failed"] >= 1, 10)
    finally:
        stop_load.set()
        for t in threads:
            t.join(10)
    assert digest(run_dir) == before  # the run folder is untouched
    assert not [p for p in run_dir.parent.iterdir() if p.name.startswith(".")]  # no temp files
    Run.load(run_dir)
    proc, url = start(run_dir, "--token", "t0k")
    try:
        again = httpx.get(url + "/v1/recommendations/u1?k=5", headers=headers).json()
        assert again == answer
    finally:
        stop(proc)


def test_sighup_reloads_and_a_broken_folder_keeps_the_old_model(run_dir, other_run_dir, break_run):
    proc, url = start(run_dir)
    model = lambda: httpx.get(url + "/v1/model").json()  # noqa: E731
    try:
        assert model()["num_items"] == 12
        Run.load(other_run_dir).save(run_dir)  # a retrained run replaces the folder atomically
        os.kill(proc.pid, signal.SIGHUP)
        assert wait_for(lambda: model()["generation"] == 1)
        assert model()["num_items"] == 14
        break_run(run_dir)
        os.kill(proc.pid, signal.SIGHUP)
        time.sleep(3)
        assert proc.poll() is None  # still up, still the previous model
        assert model()["generation"] == 1
        assert httpx.get(url + "/v1/recommendations/u0?k=2").status_code == 200
    finally:
        stop(proc)
    assert "reload failed" in proc.stderr.read().decode()


TOKEN_ENV = {"RECFUNNEL_TOKEN": "t0k"}
AUTH = {"Authorization": "Bearer t0k"}


def test_workers_reload_by_rolling_restart(run_dir, other_run_dir, break_run):
    """A rolling restart under load drops no request: each stopping worker drains (stops
    accepting, answers with Connection: close, finishes in-flight requests, then exits).
    Failures are counted, never retried."""
    proc, url = start(run_dir, "--workers", "2", env=TOKEN_ENV)
    # a generous timeout: while a replacement worker starts (imports torch, loads the run) the
    # two cores are busy and an answer can take longer than httpx's default 5 s
    items = lambda: {  # noqa: E731
        httpx.get(url + "/v1/model", headers=AUTH, timeout=30).json()["num_items"] for _ in range(6)
    }
    ok, failed = [0], []
    stop_load = threading.Event()

    def load(keep_alive: bool):
        client = httpx.Client(headers=AUTH, timeout=30) if keep_alive else None
        while not stop_load.is_set():
            try:
                if client is not None:
                    r = client.get(url + "/v1/recommendations/u1?k=5")
                else:
                    r = httpx.get(url + "/v1/recommendations/u1?k=5", headers=AUTH, timeout=30)
                if r.status_code == 200:
                    ok[0] += 1
                else:
                    failed.append(r.status_code)
            except httpx.HTTPError as exc:
                failed.append(repr(exc))
            time.sleep(0.02)  # steady load, leaving CPU for the new workers to start
        if client is not None:
            client.close()

    threads = [threading.Thread(target=load, args=(k,)) for k in (True, False)]
    try:
        assert items() == {12}
        r = httpx.post(url + "/v1/admin/reload", json={"run_dir": str(other_run_dir)},
                       headers=AUTH)  # fmt: skip
        assert r.status_code == 409 and "served folder is fixed" in r.json()["error"]["message"]
        for t in threads:
            t.start()
        Run.load(other_run_dir).save(run_dir)
        r = httpx.post(url + "/v1/admin/reload", headers=AUTH, timeout=30)
        assert r.status_code == 202
        # the restart is over when every first worker has exited (each new one was ready first)
        assert wait_for(lambda: not any(map(alive, proc.workers)), 120), "old workers still up"
        assert items() == {14}
        before = ok[0]
        assert wait_for(lambda: ok[0] > before + 20, 30)  # the new workers serve the load
        break_run(run_dir)
        r = httpx.post(url + "/v1/admin/reload", headers=AUTH, timeout=30)
        assert r.status_code == 409
        assert "does not match its checksum" in r.json()["error"]["message"]
        assert str(run_dir) not in r.text
        assert items() == {14}
    finally:
        stop_load.set()
        for t in threads:
            t.join(60)
        stop(proc)
    assert failed == [], f"{len(failed)} failed requests during the rolling restart: {failed[:5]}"
    assert ok[0] > 50


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def read_line(proc, seconds: float) -> str:
    """The next stderr line of ``proc`` (fails after ``seconds``)."""
    out = []
    t = threading.Thread(target=lambda: out.append(proc.stderr.readline().decode()), daemon=True)
    t.start()
    t.join(seconds)
    assert out, f"nothing on stderr within {seconds} s"
    return out[0]


def test_serve_prints_its_url_docs_and_explorer_and_port_0_picks_a_free_port(run_dir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "recfunnel.cli", "serve", str(run_dir), "--port", "0"],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    try:
        line = read_line(proc, 90)
        assert line.startswith("serving ") and "/docs" in line, line
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        assert f"(docs: {url}/docs; explorer: {url}/ui)" in line
        assert wait_for(lambda: _up(url), 60)
        # a DNS-rebinding page reaches the loopback server with a foreign Host header
        r = httpx.get(url + "/healthz", headers={"host": "evil.example"})
        assert r.status_code == 400
        assert httpx.get(url + "/ui").status_code == 200  # the printed explorer URL works
    finally:
        stop(proc)


def _up(url) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
