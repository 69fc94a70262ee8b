"""The HTTP API through FastAPI's test client: answers, validation, errors, token, reload."""

from __future__ import annotations

import threading

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from recfunnel.runs import Run  # noqa: E402
from recfunnel.serving import create_app  # noqa: E402

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def message(response) -> str:
    """The message of the one error shape every 4xx answer has."""
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["message"]


def test_recommendations_match_the_run(client, run_dir):
    run = Run.load(run_dir)
    r = client.get("/v1/recommendations/u0?k=3")
    assert r.status_code == 200
    body = r.json()
    want = run.recommend("u0", 3)
    assert body["user"] == "u0" and body["cold_start"] is False
    assert [x["item"] for x in body["items"]] == want.items
    assert [x["title"] for x in body["items"]] == want.titles
    assert [x["score"] for x in body["items"]] == pytest.approx(want.scores)


def test_exclude_seen_is_honoured(client, run_dir):
    run = Run.load(run_dir)
    seen = set(run.items.decode(run.model.seen_[0].indices))
    items = lambda q: {x["item"] for x in client.get(f"/v1/recommendations/u0?{q}").json()["items"]}  # noqa: E731
    assert not items("k=12") & seen
    assert items("k=12&exclude_seen=false") >= seen


def test_unknown_user_is_a_flagged_cold_start_or_404(client):
    r = client.get("/v1/recommendations/stranger?k=2")
    assert r.status_code == 200 and r.json()["cold_start"] is True
    assert len(r.json()["items"]) == 2
    r = client.get("/v1/recommendations/stranger?k=2&cold_start=false")
    assert r.status_code == 404
    assert "unknown user 'stranger'" in message(r)


@pytest.mark.parametrize("k", ["0", "-1", "1001", "ten", "1.5"])
def test_k_out_of_range_is_422(client, k):
    assert client.get(f"/v1/recommendations/u0?k={k}").status_code == 422
    assert client.get(f"/v1/items/i0/similar?k={k}").status_code == 422


def test_k_larger_than_the_catalogue_answers_the_whole_catalogue(client):
    # schema-valid (k <= 1000) requests are answered: k is capped at the catalogue's size
    r = client.get("/v1/recommendations/u0?k=500&exclude_seen=false")
    assert r.status_code == 200 and len(r.json()["items"]) == 12
    r = client.post("/v1/recommendations", json={"users": ["u0"], "k": 999})
    assert r.status_code == 200 and 0 < len(r.json()["results"][0]["items"]) <= 12
    r = client.get("/v1/items/i0/similar?k=1000")
    assert r.status_code == 200 and len(r.json()["items"]) == 11


def test_batch_of_users_with_allow_and_deny(client, run_dir):
    run = Run.load(run_dir)
    body = {"users": ["u0", "u1", "nobody"], "k": 2, "deny": ["i2"],
            "allow": ["i0", "i1", "i2", "i3", "i4"], "exclude_seen": False}  # fmt: skip
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["user"] for x in results] == ["u0", "u1", "nobody"]
    assert [x["cold_start"] for x in results] == [False, False, True]
    for res in results:
        got = {x["item"] for x in res["items"]}
        assert got <= {"i0", "i1", "i3", "i4"} and len(got) == 2
    for user, res in zip(["u0", "u1", "nobody"], results, strict=True):
        want = run.recommend(user, 2, exclude_seen=False, filter_items=["i2"],
                             items=["i0", "i1", "i2", "i3", "i4"])  # fmt: skip
        assert [x["item"] for x in res["items"]] == want.items
        assert [x["score"] for x in res["items"]] == pytest.approx(want.scores)


def test_a_batch_answers_as_one_request_per_user(client, run_dir):
    run = Run.load(run_dir)
    users = [f"u{i}" for i in range(8)] + ["u3", "stranger"]
    r = client.post("/v1/recommendations", json={"users": users, "k": 5})
    assert r.status_code == 200
    for user, res in zip(users, r.json()["results"], strict=True):
        want = run.recommend(user, 5)
        assert res["user"] == user and res["cold_start"] == (user == "stranger")
        assert [x["item"] for x in res["items"]] == want.items
        assert [x["score"] for x in res["items"]] == pytest.approx(want.scores, rel=1e-5)


def test_anonymous_history_is_folded_in(client, run_dir):
    run = Run.load(run_dir)
    r = client.post("/v1/recommendations", json={"history": ["i0", "i2"], "k": 3})
    assert r.status_code == 200
    (res,) = r.json()["results"]
    assert [x["item"] for x in res["items"]] == run.recommend_history(["i0", "i2"], 3).items
    assert not {"i0", "i2"} & {x["item"] for x in res["items"]}


@pytest.mark.parametrize(
    "body, status, text",
    [
        ({}, 422, "exactly one of"),
        ({"users": ["u0"], "history": ["i0"]}, 422, "exactly one of"),
        ({"users": []}, 422, None),
        ({"users": ["u0"], "k": 0}, 422, None),
        ({"users": ["u0"], "colour": "red"}, 422, None),
        ({"history": ["nope"]}, 404, "unknown item 'nope' in the history"),
        ({"users": ["u0"], "deny": ["nope"]}, 404, "unknown item 'nope' in the deny list"),
        ({"users": ["nobody"], "cold_start": False}, 404, "unknown user 'nobody'"),
    ],
)
def test_bad_batch_requests_are_4xx(client, body, status, text):
    r = client.post("/v1/recommendations", json=body)
    assert r.status_code == status
    assert text is None or text in message(r)


def test_malformed_json_is_422(client):
    r = client.post("/v1/recommendations", content=b"{not json",
                    headers={"content-type": "application/json"})  # fmt: skip
    assert r.status_code == 422


def test_similar_items(client, run_dir):
    run = Run.load(run_dir)
    r = client.get("/v1/items/i3/similar?k=4")
    assert r.status_code == 200
    got = [x["item"] for x in r.json()["items"]]
    assert got == run.similar_items("i3", 4).items and "i3" not in got and len(got) == 4
    assert client.get("/v1/items/a%2Fb%20c/similar?k=2").status_code == 200  # '/' in an id
    assert client.get("/v1/items/a/b c/similar?k=2").status_code == 200
    r = client.get("/v1/items/nope/similar")
    assert r.status_code == 404 and "unknown item 'nope'" in message(r)


def test_model_and_health(client):
    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/v1/model").json()
    assert info["num_users"] == 8 and info["num_items"] == 12
    assert info["metrics"] == {"m": 0.5} and info["model"] == "two-tower"
    assert info["index"]["exact"] is True
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200


def test_token_is_required_everywhere_but_healthz(run_dir):
    with TestClient(create_app(run_dir, token=TOKEN)) as c:
        assert c.get("/healthz").status_code == 200
        for path in ("/v1/recommendations/u0", "/v1/model", "/docs", "/openapi.json",
                     "/v1/items/i0/similar", "/no/such/path"):  # fmt: skip
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/recommendations", json={"users": ["u0"]}).status_code == 401
        assert c.post("/v1/admin/reload").status_code == 401
        wrong = {"Authorization": "Bearer s3cres"}
        assert c.get("/v1/model", headers=wrong).status_code == 401
        assert "bearer token" in message(c.get("/v1/model", headers=wrong))
        assert c.get("/v1/recommendations/u0", headers=AUTH).status_code == 200


def test_reload_swaps_to_a_new_run(admin, other_run_dir):
    r = admin.post("/v1/admin/reload", json={"run_dir": str(other_run_dir)})
    assert r.status_code == 200 and r.json()["status"] == "reloaded"
    assert r.json()["model"]["generation"] == 1 and r.json()["model"]["run"] == "other"
    assert admin.get("/v1/model").json()["num_items"] == 14
    assert admin.get("/healthz").json()["generation"] == 1
    assert admin.post("/v1/admin/reload").json()["model"]["generation"] == 2  # same folder again
    r = admin.post("/v1/admin/reload", json={"run_dir": "run"})  # relative to the runs root
    assert r.status_code == 200 and r.json()["model"]["num_items"] == 12


@pytest.mark.parametrize("truncate", [False, True])
def test_reload_of_a_broken_run_is_refused_and_the_old_model_kept(
    admin, other_run_dir, break_run, truncate
):
    before = admin.get("/v1/recommendations/u0?k=3").json()
    break_run(other_run_dir, truncate=truncate)
    r = admin.post("/v1/admin/reload", json={"run_dir": str(other_run_dir)})
    assert r.status_code == 409
    assert "does not match its checksum" in message(r)
    assert "still serving generation 0" in message(r)
    assert str(other_run_dir.parent) not in message(r)  # no server path in the answer
    assert admin.get("/v1/model").json()["generation"] == 0
    assert admin.get("/v1/recommendations/u0?k=3").json() == before


def test_reload_of_a_missing_folder_is_refused(admin, tmp_path):
    r = admin.post("/v1/admin/reload", json={"run_dir": str(tmp_path / "nowhere")})
    assert r.status_code == 409 and "not a recfunnel run folder" in message(r)
    assert "nowhere" not in message(r) and str(tmp_path) not in message(r)


def test_a_request_in_flight_finishes_on_the_model_it_started_with(run_dir, other_run_dir):
    app = create_app(run_dir)
    holder = app.state.holder
    old = holder.current
    started, release = threading.Event(), threading.Event()
    real = old.run.recommend

    def slow(*args, **kwargs):  # the request holds its model while a reload happens
        started.set()
        release.wait(5)
        return real(*args, **kwargs)

    old.run.recommend = slow
    answers = {}
    with TestClient(app) as c:
        t = threading.Thread(target=lambda: answers.update(r=c.get("/v1/recommendations/u0")))
        t.start()
        assert started.wait(5)
        new = holder.reload(other_run_dir)  # swaps while the request is in flight
        assert holder.current is new and new.generation == 1
        release.set()
        t.join(5)
        assert answers["r"].status_code == 200
        assert [x["item"] for x in answers["r"].json()["items"]] == real("u0", 10).items
        assert c.get("/v1/model").json()["num_items"] == 14


def test_create_app_refuses_a_broken_run(run_dir, break_run):
    from recfunnel.errors import ArtifactError

    break_run(run_dir)
    with pytest.raises(ArtifactError, match="does not match its checksum"):
        create_app(run_dir)
