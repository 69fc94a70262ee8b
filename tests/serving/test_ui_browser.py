"""The explorer page in a real browser: Debian's chromium driven by Playwright.

The service runs in a thread on a free port, serving a WALS run trained on MovieLens 100k
(titles as item ids, as ``recfunnel train`` does by default). The test types the token, picks
user 9, checks ten titled recommendations render, clicks one and checks similar items appear,
then saves a screenshot to ``tests/artifacts/ui.png`` (git-ignored) for a person to look at.

Skips with a reason only where the browser (``/usr/bin/chromium`` or $RECFUNNEL_CHROMIUM) or
Playwright is absent; ``.ci/run`` installs both.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TOKEN = "explorer-test-token"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("RECFUNNEL_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    executable = chromium_path()
    if executable is None:
        pytest.skip("no chromium browser: apt-get install chromium (or set RECFUNNEL_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def ml_run(ml100k, tmp_path_factory):
    from recfunnel import experiment
    from recfunnel.data.sources import DataSpec

    spec = DataSpec(dataset="movielens-100k", data_dir=str(ml100k))
    model = experiment.build_model("wals", "default")
    run, *_ = experiment.train(spec, model)
    return run.save(tmp_path_factory.mktemp("ui") / "wals")


@pytest.fixture(scope="module")
def server(ml_run):
    import uvicorn

    from recfunnel.serving import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(ml_run, token=TOKEN), host="127.0.0.1", port=port,
                            log_level="warning")  # fmt: skip
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


def test_explorer_user_recommendations_and_similar_items(browser, server):
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    failed = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.goto(server + "/ui")
    # The page loads without the token but the API refuses: it asks for the token.
    page.wait_for_selector("#token-bar:not([hidden])")
    page.fill("#token", TOKEN)
    page.click("#token-save")
    page.wait_for_selector("#token-bar[hidden]", state="attached")
    assert "wals" in page.text_content("#model-info")

    page.fill("#user", "9")
    page.click("#user-form button[type=submit]")
    page.wait_for_function("document.querySelectorAll('#recs li.item').length === 10")
    titles = page.locator("#recs li.item button.title").all_text_contents()
    assert len(titles) == 10 == len(set(titles))
    assert all(t.strip() and t.rstrip().endswith(")") for t in titles)  # "Title (1997)"
    scores = [float(s) for s in page.locator("#recs li.item .score").all_text_contents()]
    assert scores == sorted(scores, reverse=True)
    history = page.locator("#history-items li.item button.title").all_text_contents()
    assert "Star Wars (1977)" in history  # user 9 rated it in the training split
    assert not set(history) & set(titles)  # seen items are excluded
    assert page.text_content("#recs-panel h2").startswith("Top 10 for user 9")

    page.locator("#recs li.item button.title").nth(0).click()
    page.wait_for_function("document.querySelectorAll('#similar li.item').length === 10")
    assert page.text_content("#similar-panel h2") == f"Similar to {titles[0]}"
    similar = page.locator("#similar li.item button.title").all_text_contents()
    assert titles[0] not in similar and len(set(similar)) == 10
    assert page.locator("#error").is_hidden()
    assert not failed, f"requests failed: {failed}"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "ui.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")
    page.close()


def test_anonymous_history_in_the_browser(browser, server):
    page = browser.new_page()
    page.add_init_script(f"sessionStorage.setItem('recfunnel.token', {TOKEN!r})")
    page.goto(server + "/ui#user=9")  # the hash picks a user on load
    page.wait_for_function("document.querySelectorAll('#recs li.item').length === 10")
    page.fill("#history", "Star Wars (1977)\nReturn of the Jedi (1983)")
    page.click("#history-form button[type=submit]")
    page.wait_for_function(
        "document.querySelector('#recs-panel h2').textContent.startsWith('Top 10 for this')"
    )
    titles = page.locator("#recs li.item button.title").all_text_contents()
    assert len(titles) == 10 and "Star Wars (1977)" not in titles
    page.fill("#history", "No Such Film (2099)")
    page.click("#history-form button[type=submit]")
    page.wait_for_selector("#error:not([hidden])")
    assert "unknown item" in page.text_content("#error")
    page.close()


def test_swagger_docs_render_offline(browser, server):
    page = browser.new_page(extra_http_headers={"Authorization": f"Bearer {TOKEN}"})
    external = []

    def local_only(route):
        if route.request.url.startswith(server):
            route.continue_()
        else:
            external.append(route.request.url)
            route.abort()

    page.route("**/*", local_only)
    page.goto(server + "/docs")
    page.wait_for_selector(".swagger-ui .opblock", timeout=20_000)
    assert page.locator(".swagger-ui .opblock").count() >= 5
    assert not external, f"the docs page reached outside the service: {external}"
    page.close()
