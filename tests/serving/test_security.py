"""Exposure: admin endpoints off without a token, reload confined to a root, Host allow-list,
bounded requests, bodies JSON can carry but UTF-8 cannot, heavy requests off the event loop."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from recfunnel.serving import create_app  # noqa: E402
from recfunnel.serving.schema import MAX_BODY_BYTES  # noqa: E402
from recfunnel.serving.server import default_allowed_hosts  # noqa: E402

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def error_of(r) -> dict:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]


def post_raw(client, path, text: str, **kwargs):
    return client.post(path, content=text.encode("utf-8", "surrogatepass"),
                       headers={"content-type": "application/json", **kwargs})  # fmt: skip


def test_admin_endpoints_are_off_without_a_token(client, other_run_dir):
    r = client.post("/v1/admin/reload", json={"run_dir": str(other_run_dir)})
    assert r.status_code == 404
    assert "admin endpoints are off" in error_of(r)["message"]
    assert client.post("/v1/admin/reload").status_code == 404
    assert client.get("/v1/model").json()["generation"] == 0  # nothing was reloaded
    assert "/v1/admin/reload" not in client.get("/openapi.json").json()["paths"]


def test_reload_is_confined_to_the_runs_root(admin, tmp_path_factory, run_dir, save_run):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    outside = save_run(elsewhere / "run", seed=2)
    answers = []
    for path in (str(outside), str(elsewhere / "missing"), "../elsewhere", "/etc", "/"):
        r = admin.post("/v1/admin/reload", json={"run_dir": path})
        assert r.status_code == 403, path
        answers.append(r.json())
        assert str(elsewhere) not in r.text and "etc" not in r.text
    assert all(a == answers[0] for a in answers)  # existing or not: the same answer
    link = run_dir.parent / "link"
    os.symlink(outside, link)  # a symlink inside the root that leads out of it
    assert admin.post("/v1/admin/reload", json={"run_dir": str(link)}).status_code == 403
    assert admin.get("/v1/model").json()["generation"] == 0


def test_runs_root_widens_what_reload_may_load(run_dir, tmp_path_factory, save_run):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    outside = save_run(elsewhere / "run", seed=2, num_items=13)
    app = create_app(run_dir, token=TOKEN, runs_root=os.path.dirname(elsewhere))
    with TestClient(app, headers=AUTH) as c:
        r = c.post("/v1/admin/reload", json={"run_dir": str(outside)})
        assert r.status_code == 200 and r.json()["model"]["num_items"] == 13


def test_missing_and_non_run_folders_give_the_same_answer(admin, run_dir):
    (run_dir.parent / "notes").mkdir()
    (run_dir.parent / "notes" / "a.txt").write_text("x")
    a = admin.post("/v1/admin/reload", json={"run_dir": "notes"})
    b = admin.post("/v1/admin/reload", json={"run_dir": "nothing-here"})
    assert a.status_code == b.status_code == 409 and a.json() == b.json()


def test_model_card_shows_no_server_path(client, run_dir):
    text = client.get("/v1/model").text
    assert str(run_dir.parent) not in text and client.get("/v1/model").json()["run"] == "run"


@pytest.mark.parametrize(
    "host, status",
    [("127.0.0.1:8000", 200), ("localhost:8000", 200), ("[::1]:8000", 200), ("localhost", 200),
     ("evil.example:8000", 400), ("127.0.0.1.evil.example", 400), ("", 400)],
)  # fmt: skip
def test_loopback_binds_check_the_host_header(run_dir, host, status):
    app = create_app(run_dir, allowed_hosts=default_allowed_hosts("127.0.0.1"))
    with TestClient(app, raise_server_exceptions=False) as c:
        for path in ("/healthz", "/v1/model"):
            r = c.get(path, headers={"host": host})
            assert r.status_code == status, (host, path)
            if status == 400:
                assert "Host header not allowed" in error_of(r)["message"]


def test_default_host_list_is_loopback_only():
    assert default_allowed_hosts("127.0.0.1") == ["127.0.0.1", "::1", "localhost"]
    assert "::1" in default_allowed_hosts("::1")
    assert default_allowed_hosts("0.0.0.0") is None  # a public bind: set --allowed-hosts


@pytest.mark.parametrize(
    "text", ['{"users": ["\\ud800"]}', '{"history": ["\\udfff"]}',
             '{"users": ["u0"], "deny": ["\\ud800x"]}'],
)  # fmt: skip
def test_lone_surrogates_in_ids_are_422(client, text):
    r = post_raw(client, "/v1/recommendations", text)
    assert r.status_code == 422, r.text
    assert "unicode" in error_of(r)["message"].lower()


@pytest.mark.parametrize("text", ['{"run_dir": "\\ud800"}', '{"run_dir": "a\\u0000"}'])
def test_lone_surrogate_run_dir_is_4xx(admin, client, text):
    assert post_raw(admin, "/v1/admin/reload", text).status_code == 422
    assert post_raw(client, "/v1/admin/reload", text).status_code == 404  # off: no token


@pytest.mark.parametrize(
    "body",
    [{"users": ["u0"] * 257}, {"users": ["u0"], "k": 1001}, {"users": ["x" * 257]},
     {"users": ["u0"], "allow": ["i0"] * 10_001}, {"users": ["u0"], "deny": ["i0"] * 10_001},
     {"history": ["i0"] * 10_001}],
)  # fmt: skip
def test_requests_over_the_limits_are_422(client, body):
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 422, r.text
    assert len(r.content) < 1000  # the input is not echoed back


def test_long_ids_in_the_path_are_422(client):
    assert client.get("/v1/recommendations/" + "u" * 257).status_code == 422
    assert client.get("/v1/items/" + "i" * 257 + "/similar").status_code == 422
    r = client.get("/v1/recommendations/" + "u" * 256)  # at the limit: a cold start
    assert r.status_code == 200 and r.json()["cold_start"]


def test_bodies_over_the_byte_limit_are_413(client):
    big = json.dumps({"users": ["u0"], "allow": ["i0" * 100] * 30_000})
    assert len(big) > MAX_BODY_BYTES
    r = client.post("/v1/recommendations", content=big,
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413 and error_of(r)["code"] == "too_large"

    def chunks():  # no Content-Length: counted as it streams
        for _ in range(5):
            yield b" " * (MAX_BODY_BYTES // 4)
        yield b"{}"

    r = client.post("/v1/recommendations", content=chunks(),
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 413 and error_of(r)["code"] == "too_large"


def test_heavy_requests_do_not_block_the_event_loop(run_dir):
    app = create_app(run_dir)
    model = app.state.holder.current.run.model
    real = model.recommend
    started = threading.Event()

    def slow(*args, **kwargs):
        started.set()
        time.sleep(1.5)
        return real(*args, **kwargs)

    model.recommend = slow
    with TestClient(app) as c:
        t = threading.Thread(target=c.post, args=("/v1/recommendations",),
                             kwargs={"json": {"users": ["u0", "u1"], "k": 5}})  # fmt: skip
        t.start()
        assert started.wait(5)
        begin = time.perf_counter()
        assert c.get("/healthz").status_code == 200
        waited = time.perf_counter() - begin
        t.join(10)
    assert waited < 0.5, f"/healthz waited {waited:.2f} s behind a batch request"


@pytest.mark.parametrize("damage", ["fifo manifest", "symlink to /dev/zero", "edited config"])
def test_reload_of_a_hostile_folder_is_a_prompt_409(admin, run_dir, damage):
    """A FIFO (which would block a reader forever), a symlink to an endless device, or a
    consistent but edited file: each is refused with 409 at once, and the model kept."""
    import hashlib
    import shutil

    bad = run_dir.parent / "bad"
    shutil.copytree(run_dir, bad)
    if damage == "fifo manifest":
        (bad / "manifest.json").unlink()
        os.mkfifo(bad / "manifest.json")
    elif damage == "symlink to /dev/zero":
        (bad / "model.safetensors").unlink()
        os.symlink("/dev/zero", bad / "model.safetensors")
    else:
        config = json.loads((bad / "config.json").read_text())
        config["params"] = {"dim": [[[]]]}  # what an editor could write
        (bad / "config.json").write_text(json.dumps(config))
        manifest = json.loads((bad / "manifest.json").read_text())
        manifest["config.json"] = hashlib.sha256((bad / "config.json").read_bytes()).hexdigest()
        (bad / "manifest.json").write_text(json.dumps(manifest))
    answer = {}
    t = threading.Thread(target=lambda: answer.update(
        r=admin.post("/v1/admin/reload", json={"run_dir": "bad"})), daemon=True)  # fmt: skip
    t.start()
    t.join(20)
    assert "r" in answer, "the reload is still blocked after 20 s"
    r = answer["r"]
    assert r.status_code == 409, r.text
    assert "cannot load that run folder" in error_of(r)["message"]
    assert str(run_dir.parent) not in r.text
    assert admin.get("/v1/model").json()["generation"] == 0
