"""The explorer page (``GET /ui``) and the Swagger UI (``GET /docs``), served without a CDN.

Both pages are plain files shipped in ``recfunnel/serving/static/`` (no build step): the
explorer is one HTML page with a little JavaScript that calls the JSON API, and the Swagger UI
assets are vendored from the ``swagger-ui-dist`` npm package (Apache-2.0, see
``static/swagger-ui-LICENSE``), so both work on a machine without internet.

The explorer page and the static assets hold no data, so they load without the bearer token (a
browser cannot attach one to a page it navigates to); every answer the page shows comes from the
API, which keeps needing the token: the page asks for it once and keeps it in the tab's
``sessionStorage``. ``/docs`` and ``/openapi.json`` need the token like the API (so in a browser
they open when the service runs without one).

Two small read-only endpoints feed the explorer (same token as the rest of the API)::

    GET /v1/users?q=&limit=50              raw user ids (containing q), in catalogue order
    GET /v1/users/{user_id}/history?limit=50  the user's training items, most popular first
    GET /v1/items?q=&limit=20               items whose id or title contains q (case-folded)
"""

from __future__ import annotations

from importlib import resources

import numpy as np
from fastapi import APIRouter, FastAPI, Path, Query
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, Response

STATIC_PREFIX = "/ui/static/"
# Files served from the package's static folder, with their media types (nothing else is).
STATIC_FILES = {
    "explorer.js": "text/javascript; charset=utf-8",
    "explorer.css": "text/css; charset=utf-8",
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "swagger-ui-LICENSE": "text/plain; charset=utf-8",
}
# Paths a browser loads without the bearer token: pages and assets only, never data.
# /docs and /openapi.json keep needing the token, as every API path does.
PUBLIC_PATHS = frozenset({"/healthz", "/ui"})
MAX_LIST = 1000


def is_public(path: str) -> bool:
    """True for the paths that need no bearer token (pages and static assets, no data)."""
    if path.startswith(STATIC_PREFIX):
        return path[len(STATIC_PREFIX) :] in STATIC_FILES
    return path in PUBLIC_PATHS


def _static(name: str) -> bytes:
    return resources.files("recfunnel.serving").joinpath("static", name).read_bytes()


def mount_ui(app: FastAPI, holder, dependencies=(), auth=()) -> None:
    """Add ``/ui``, ``/ui/static/*``, ``/docs`` (local Swagger assets) and the explorer's
    endpoints to ``app``; build the app with ``docs_url=None`` so ``/docs`` is this one.
    ``dependencies`` and ``auth`` (the 401 status when a token is set) document the bearer
    token on the explorer's endpoints in the OpenAPI schema."""
    cache: dict[str, bytes] = {}

    def asset(name: str) -> bytes:
        if name not in cache:
            cache[name] = _static(name)
        return cache[name]

    @app.get("/ui", include_in_schema=False)
    async def explorer():
        return HTMLResponse(asset("explorer.html"))

    @app.get(STATIC_PREFIX + "{name}", include_in_schema=False)
    async def static(name: str):
        media = STATIC_FILES.get(name)
        if media is None:
            body = b'{"error":{"code":"not_found","message":"no such file"}}'  # the one shape
            return Response(body, 404, media_type="application/json")
        return Response(asset(name), media_type=media, headers={"Cache-Control": "max-age=3600"})

    @app.get("/docs", include_in_schema=False)
    async def docs():
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - API docs",
            swagger_js_url=STATIC_PREFIX + "swagger-ui-bundle.js",
            swagger_css_url=STATIC_PREFIX + "swagger-ui.css",
            swagger_favicon_url=STATIC_PREFIX + "favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},  # the default validator is online
        )

    app.include_router(_explorer_api(holder, tuple(auth)), dependencies=list(dependencies))


def _matching(ids: list[str], titles: list[str] | None, q: str, limit: int) -> list[int]:
    q = q.casefold()
    out = []
    for i, raw in enumerate(ids):
        if not q or q in raw.casefold() or (titles is not None and q in titles[i].casefold()):
            out.append(i)
            if len(out) == limit:
                break
    return out


def _explorer_api(holder, auth: tuple = ()) -> APIRouter:
    from recfunnel.serving.schema import (
        MAX_ID_LENGTH,
        ItemList,
        UserHistory,
        UserList,
        error_responses,
    )

    router = APIRouter(tags=["explore"])

    @router.get("/v1/users", operation_id="list_users", response_model=UserList,
                responses=error_responses(400, *auth, 422))  # fmt: skip
    async def users(q: str = Query("", max_length=200), limit: int = Query(50, ge=1, le=MAX_LIST)):
        run = holder.current.run
        ids = run.users.ids
        return {"count": len(ids), "users": [ids[i] for i in _matching(ids, None, q, limit)]}

    @router.get("/v1/users/{user_id:path}/history", operation_id="user_history",
                response_model=UserHistory,
                responses=error_responses(400, *auth, 404, 422))  # fmt: skip
    async def history(
        user_id: str = Path(..., description="raw user id", max_length=MAX_ID_LENGTH),
        limit: int = Query(50, ge=1, le=MAX_LIST),
    ):
        run = holder.current.run
        user = run.users.index(user_id)  # UnknownIdError -> 404
        seen = run.model.seen_
        items = seen.indices[seen.indptr[user] : seen.indptr[user + 1]]
        order = items[np.argsort(-run.popularity[items], kind="stable")][:limit]
        ids = run.items.ids  # a copy: take it once
        return {
            "user": user_id,
            "count": int(len(items)),
            "items": [
                {"item": ids[i], "title": run.item_titles[i],
                 "popularity": float(run.popularity[i])}
                for i in order.tolist()
            ],
        }  # fmt: skip

    @router.get("/v1/items", operation_id="list_items", response_model=ItemList,
                responses=error_responses(400, *auth, 422))  # fmt: skip
    async def items(q: str = Query("", max_length=200), limit: int = Query(20, ge=1, le=MAX_LIST)):
        run = holder.current.run
        ids = run.items.ids  # a copy: take it once
        found = _matching(ids, run.item_titles, q, limit)
        return {
            "count": len(run.items),
            "items": [{"item": ids[i], "title": run.item_titles[i]} for i in found],
        }

    return router
