"""The FastAPI app: routes, validation, error mapping and the bearer-token check.

Endpoints (all but ``/healthz`` need ``Authorization: Bearer TOKEN`` when a token is set)::

    GET  /healthz                              liveness and the answering worker's pid; no token
    GET  /v1/model                             run metadata and metrics
    GET  /v1/recommendations/{user_id}?k=10&exclude_seen=true&cold_start=true
    POST /v1/recommendations                   {"users": [...]} or {"history": [...]}, allow/deny
    GET  /v1/items/{item_id}/similar?k=10
    POST /v1/admin/reload                      {"run_dir": optional} swap in a run, no downtime
    GET  /docs, /openapi.json                  interactive docs

Bad input is always a 4xx JSON body ``{"detail": "..."}``: an unknown id is 404, a bad value
422 (FastAPI's own validation errors keep its list form). Handlers are ``async def`` on purpose:
a recommendation takes well under a millisecond of CPU, less than a hop to the thread pool
costs; and they return their response directly (orjson), skipping FastAPI's generic encoder,
which cost more than the recommendation itself.
"""

from __future__ import annotations

import hmac
import os
import signal

import torch
from fastapi import FastAPI, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recfunnel.errors import ArtifactError, RecfunnelError, UnknownIdError
from recfunnel.runs import Recommendations
from recfunnel.serving.model import ModelHolder
from recfunnel.serving.ui import is_public, mount_ui

try:
    import orjson

    def _dumps(data) -> bytes:
        return orjson.dumps(data)

except ImportError:  # pragma: no cover - orjson is in the serve extra
    import json

    def _dumps(data) -> bytes:
        return json.dumps(data, allow_nan=False).encode()


MAX_K = 1000
MAX_USERS = 256
MAX_IDS = 10_000
WORKERS_ENV = "RECFUNNEL_SERVE_WORKERS"


class FastJSON(Response):
    media_type = "application/json"

    def render(self, content) -> bytes:
        return _dumps(content)


def _error(status: int, message: str) -> FastJSON:
    return FastJSON({"detail": message}, status_code=status)


class RecommendRequest(BaseModel):
    """A batch of known (or cold-start) users, or one anonymous user given by their items."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    users: list[str] | None = Field(
        None, min_length=1, max_length=MAX_USERS, description="raw user ids"
    )
    history: list[str] | None = Field(
        None,
        min_length=1,
        max_length=MAX_IDS,
        description="raw item ids an anonymous user interacted with (folded in)",
    )
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = True
    cold_start: bool = Field(True, description="unknown users get popular items (else 404)")
    allow: list[str] | None = Field(None, max_length=MAX_IDS, description="choose only from")
    deny: list[str] | None = Field(None, max_length=MAX_IDS, description="never return")

    @model_validator(mode="after")
    def _one_of(self):
        if (self.users is None) == (self.history is None):
            raise ValueError("give exactly one of 'users' or 'history'")
        return self


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_dir: str | None = Field(None, description="run folder to serve; default: the same again")


def _answer(rec: Recommendations) -> dict:
    return {"user": rec.user, "cold_start": rec.cold_start, "items": rec.to_records()}


class _BearerToken:
    """Pure ASGI middleware: every path but ``/healthz`` needs the token (constant-time check)."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not is_public(scope["path"]):  # pages, assets: no data
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = _error(401, "missing or wrong bearer token; send 'Authorization: "
                                       "Bearer TOKEN'")  # fmt: skip
                response.headers["WWW-Authenticate"] = "Bearer"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_app(run_dir, token: str | None = None, *, index: str = "auto") -> FastAPI:
    """Build the app serving the run in ``run_dir``.

    Args:
        token: when set, every endpoint but ``/healthz`` needs ``Authorization: Bearer token``.
        index: top-k index for factorized models: ``auto``, ``exact``, ``hnsw`` or ``ivf``.

    Raises :class:`~recfunnel.errors.ArtifactError` at once when the run folder is broken.
    """
    torch.set_num_threads(1)  # one request is tiny; parallelism comes from workers
    holder = ModelHolder(run_dir, index=index)
    app = FastAPI(
        title="recfunnel",
        version=__import__("recfunnel").__version__,
        summary="Recommendations from a saved recfunnel run",
        default_response_class=FastJSON,
        docs_url=None,  # mount_ui serves /docs with local Swagger assets (no CDN)
        redoc_url=None,
    )
    app.state.holder = holder
    if token:
        app.add_middleware(_BearerToken, token=token)

    @app.exception_handler(RecfunnelError)
    async def _bad_input(request: Request, exc: RecfunnelError):
        return _error(404 if isinstance(exc, UnknownIdError) else 422, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # FastAPI's own handler echoes the input back, and fails (500) on e.g. k=Infinity,
        # which JSON cannot carry: report where and what, without the input.
        errors = [{key: e[key] for key in ("type", "loc", "msg") if key in e} for e in exc.errors()]
        return FastJSON({"detail": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):  # a bug, never bad input: say so briefly
        return _error(500, f"internal error ({type(exc).__name__}); see the server log")

    @app.get("/healthz", tags=["ops"])
    async def healthz():
        return FastJSON(
            {"status": "ok", "generation": holder.current.generation, "worker": os.getpid()}
        )

    @app.get("/v1/model", tags=["ops"])
    async def model_info():
        return FastJSON(holder.current.describe())

    @app.get("/v1/recommendations/{user_id:path}", tags=["recommend"])
    async def recommend_user(
        user_id: str = Path(..., description="raw user id"),
        k: int = Query(10, ge=1, le=MAX_K),
        exclude_seen: bool = True,
        cold_start: bool = Query(True, description="unknown user: popular items, else 404"),
    ):
        run = holder.current.run  # this request's model, whatever reloads happen meanwhile
        rec = run.recommend(user_id, k, exclude_seen=exclude_seen, cold_start=cold_start)
        return FastJSON(_answer(rec))

    @app.post("/v1/recommendations", tags=["recommend"])
    async def recommend_batch(body: RecommendRequest):
        run = holder.current.run
        options = {"exclude_seen": body.exclude_seen, "filter_items": body.deny,
                   "items": body.allow}  # fmt: skip
        if body.history is not None:
            if not hasattr(run.model, "recommend_history"):
                raise RecfunnelError(f"a {run.model.kind} model cannot fold in a history")
            results = [run.recommend_history(body.history, body.k, **options)]
        else:
            results = [
                run.recommend(user, body.k, cold_start=body.cold_start, **options)
                for user in body.users
            ]
        return FastJSON({"results": [_answer(r) for r in results]})

    @app.get("/v1/items/{item_id:path}/similar", tags=["recommend"])
    async def similar(
        item_id: str = Path(..., description="raw item id"), k: int = Query(10, ge=1, le=MAX_K)
    ):
        rec = holder.current.run.similar_items(item_id, k)
        return FastJSON({"item": item_id, "items": rec.to_records()})

    mount_ui(app, holder)  # GET /ui (explorer), /docs, /v1/users, /v1/items

    @app.post("/v1/admin/reload", tags=["ops"])
    async def reload(body: ReloadRequest | None = None):
        run_dir = body.run_dir if body else None
        workers = int(os.environ.get(WORKERS_ENV, "1"))
        if workers > 1:
            return await _reload_workers(run_dir)
        try:
            served = await run_in_threadpool(holder.reload, run_dir)
        except ArtifactError as exc:
            kept = holder.current
            return _error(
                409, f"{exc} (still serving {kept.run_dir}, generation {kept.generation})"
            )
        return FastJSON({"status": "reloaded", **served.describe()})

    async def _reload_workers(run_dir):
        """Several worker processes: check the run here, then ask uvicorn's supervisor (our
        parent) for a rolling restart with SIGHUP; each new worker loads the folder again."""
        current = holder.current
        if run_dir is not None and os.path.abspath(run_dir) != os.path.abspath(current.run_dir):
            return _error(
                409,
                "with --workers > 1 the served folder is fixed; replace it "
                "(train --out writes atomically) and reload without run_dir",
            )
        from recfunnel.runs import Run

        try:
            await run_in_threadpool(Run.load, current.run_dir)
        except ArtifactError as exc:
            return _error(409, f"{exc} (still serving the previous model)")
        os.kill(os.getppid(), signal.SIGHUP)
        return JSONResponse({"status": "restarting workers"}, status_code=202)

    return app


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: settings come from the environment."""
    return create_app(
        os.environ["RECFUNNEL_SERVE_RUN_DIR"],
        token=os.environ.get("RECFUNNEL_TOKEN") or None,
        index=os.environ.get("RECFUNNEL_SERVE_INDEX", "auto"),
    )
