"""A typed client generated from /openapi.json (openapi-python-client, pinned in the test extra)
calls every endpoint and gets typed objects back, errors included."""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from recfunnel.serving import create_app  # noqa: E402

TOKEN = "t0k"


def generator() -> str:
    found = shutil.which("openapi-python-client") or str(
        Path(sys.executable).parent / "openapi-python-client"
    )
    if not Path(found).exists():
        pytest.skip("openapi-python-client is in the test extra")
    return found


@pytest.fixture
def generated(tmp_path, run_dir):
    """(the generated package, the app it talks to)."""
    app = create_app(run_dir, token=TOKEN)
    (tmp_path / "openapi.json").write_text(json.dumps(app.openapi()))
    out = tmp_path / "gen" / "recfunnel_client"
    subprocess.run(
        [generator(), "generate", "--path", str(tmp_path / "openapi.json"), "--output-path",
         str(out), "--meta", "none"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    sys.path.insert(0, str(out.parent))
    try:
        yield importlib.import_module("recfunnel_client"), app
    finally:
        sys.path.remove(str(out.parent))
        for name in [m for m in sys.modules if m.split(".")[0] == "recfunnel_client"]:
            del sys.modules[name]


def test_a_generated_client_calls_every_endpoint_and_gets_typed_objects(generated, run_dir):
    package, app = generated
    api = importlib.import_module("recfunnel_client.api")
    models = importlib.import_module("recfunnel_client.models")
    ops = {name: importlib.import_module(f"recfunnel_client.api.{group}.{name}")
           for group, names in (("ops", ("healthz", "model_info")),
                                ("recommend", ("recommend_user", "recommend_batch",
                                               "similar_items")),
                                ("explore", ("list_users", "user_history", "list_items")),
                                ("admin", ("reload",)))
           for name in names}  # fmt: skip
    assert api is not None
    (run_dir.parent / "other").mkdir()
    for f in run_dir.iterdir():  # a second run folder inside the runs root
        shutil.copy(f, run_dir.parent / "other" / f.name)
    client = package.AuthenticatedClient(base_url="http://testserver", token=TOKEN)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        client.set_httpx_client(http)

        health = ops["healthz"].sync(client=client)
        assert isinstance(health, models.Health) and health.status == "ok"

        card = ops["model_info"].sync(client=client)
        assert isinstance(card, models.ModelCard)
        assert (card.num_users, card.num_items, card.model) == (8, 12, "two-tower")

        rec = ops["recommend_user"].sync("u0", client=client, k=3)
        assert isinstance(rec, models.Recommendation) and len(rec.items) == 3
        assert all(isinstance(x, models.Item) for x in rec.items)
        assert isinstance(rec.items[0].score, float) and rec.cold_start is False

        batch = ops["recommend_batch"].sync(
            client=client, body=models.UsersRequest(users=["u0", "u1"], k=2)
        )
        assert isinstance(batch, models.BatchResponse)
        assert [r.user for r in batch.results] == ["u0", "u1"]
        anonymous = ops["recommend_batch"].sync(
            client=client, body=models.HistoryRequest(history=["i0", "i2"], k=2)
        )
        assert isinstance(anonymous, models.BatchResponse)
        assert anonymous.results[0].user == "(history)"

        similar = ops["similar_items"].sync("i3", client=client, k=2)
        assert isinstance(similar, models.SimilarItems) and similar.item == "i3"

        users = ops["list_users"].sync(client=client, q="u", limit=3)
        assert isinstance(users, models.UserList)
        assert (users.count, users.users) == (8, ["u0", "u1", "u2"])

        seen = ops["user_history"].sync("u0", client=client, limit=2)
        assert isinstance(seen, models.UserHistory) and seen.user == "u0"
        assert all(isinstance(x, models.HistoryItem) for x in seen.items) and seen.items

        found = ops["list_items"].sync(client=client, q="film 3")
        assert isinstance(found, models.ItemList)
        assert [(x.item, x.title) for x in found.items] == [("i3", "Film 3")]
        assert all(isinstance(x, models.ItemRef) for x in found.items)

        reloaded = ops["reload"].sync(client=client, body=models.ReloadRequest(run_dir="other"))
        assert isinstance(reloaded, models.Reloaded)
        assert reloaded.model.generation == 1 and reloaded.model.run == "other"

        # errors are typed too: the one error shape
        missing = ops["recommend_user"].sync("nobody", client=client, cold_start=False)
        assert isinstance(missing, models.ErrorBody) and missing.error.code == "not_found"
        stranger = ops["user_history"].sync("nobody", client=client)
        assert isinstance(stranger, models.ErrorBody) and stranger.error.code == "not_found"
        outside = ops["reload"].sync(client=client, body=models.ReloadRequest(run_dir="/"))
        assert isinstance(outside, models.ErrorBody) and outside.error.code == "forbidden"
