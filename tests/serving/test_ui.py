"""The explorer's routes without a browser: public pages, token-guarded data, no CDN."""

from __future__ import annotations

import re

import pytest

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def guarded(run_dir):
    from fastapi.testclient import TestClient

    from recfunnel.serving import create_app

    with TestClient(create_app(run_dir, token=TOKEN), raise_server_exceptions=False) as c:
        yield c


@pytest.mark.parametrize(
    "path", ["/ui", "/ui/static/explorer.js", "/ui/static/swagger-ui-bundle.js"]
)
def test_pages_and_assets_load_without_the_token(guarded, path):
    response = guarded.get(path)
    assert response.status_code == 200, response.text[:200]


@pytest.mark.parametrize(
    "path", ["/v1/users", "/v1/users/u1/history", "/v1/items?q=film", "/v1/model", "/docs"]
)
def test_data_needs_the_token(guarded, path):
    assert guarded.get(path).status_code == 401
    assert guarded.get(path, headers=AUTH).status_code == 200


def test_only_the_listed_static_files_are_served(guarded, client):
    for path in ("/ui/static/explorer.html", "/ui/static/ui.py", "/ui/static/%2e%2e%2fapp.py"):
        assert guarded.get(path).status_code == 401  # not public: the token is asked first
        assert client.get(path).status_code == 404  # and even with no token set: not served
    assert guarded.get("/ui/static/%2e%2e/%2e%2e/v1/model").status_code == 401


def test_pages_reference_nothing_outside_the_service(guarded):
    for path in ("/ui", "/docs", "/ui/static/explorer.js", "/ui/static/explorer.css"):
        text = guarded.get(path, headers=AUTH).text
        assert not re.search(r"https?://", text), path
    docs = guarded.get("/docs", headers=AUTH).text
    assert "/ui/static/swagger-ui-bundle.js" in docs and "/ui/static/swagger-ui.css" in docs
    assert guarded.get("/redoc").status_code in (401, 404)  # ReDoc needs a CDN: not served


def test_users_history_and_item_search(guarded):
    users = guarded.get("/v1/users?limit=3", headers=AUTH).json()
    assert users == {"count": 8, "users": ["u0", "u1", "u2"]}
    assert guarded.get("/v1/users?q=7", headers=AUTH).json()["users"] == ["u7"]
    history = guarded.get("/v1/users/u1/history", headers=AUTH).json()
    # checkerboard: odd users interacted with odd items; most popular first
    assert history["count"] == len(history["items"]) > 0
    assert all(int(entry["title"].split()[1]) % 2 == 1 for entry in history["items"])
    pops = [entry["popularity"] for entry in history["items"]]
    assert pops == sorted(pops, reverse=True)
    assert guarded.get("/v1/users/u1/history?limit=2", headers=AUTH).json()["count"] == len(
        history["items"]
    )
    assert len(guarded.get("/v1/users/u1/history?limit=2", headers=AUTH).json()["items"]) == 2
    missing = guarded.get("/v1/users/nobody/history", headers=AUTH)
    assert missing.status_code == 404 and "unknown user" in missing.json()["error"]["message"]
    found = guarded.get("/v1/items?q=FILM 1", headers=AUTH).json()["items"]  # titles, any case
    assert [entry["title"] for entry in found] == ["Film 1", "Film 10", "Film 11"]
