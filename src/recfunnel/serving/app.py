"""The FastAPI app: routes, validation, error mapping, the bearer token and the Host check.

Endpoints (all but ``/healthz`` need ``Authorization: Bearer TOKEN`` when a token is set)::

    GET  /healthz                              liveness and the answering worker's pid; no token
    GET  /v1/model                             the served run: model, sizes, index, metrics
    GET  /v1/recommendations/{user_id}?k=10&exclude_seen=true&cold_start=true
    POST /v1/recommendations                   {"users": [...]} or {"history": [...]}, allow/deny
    GET  /v1/items/{item_id}/similar?k=10
    POST /v1/admin/reload                      {"run_dir": optional}; only with a token
    GET  /docs, /openapi.json                  interactive docs and the schema

Every error is ``{"error": {"code", "message"}}`` (see :mod:`recfunnel.serving.schema`): an
unknown id is 404, a request the schema forbids 422, a body over
:data:`~recfunnel.serving.schema.MAX_BODY_BYTES` 413, something the served model cannot do 409.

Cheap requests (one user, ``k`` ≤ 100, no allow/deny list) are answered on the event loop: a
hop to a thread costs more than they do. Everything heavier (batches, long lists, large ``k``)
runs in a small thread pool (:data:`SCORING_THREADS` at a time), so ``/healthz`` and light
requests keep answering while heavy ones compute. Answers are written with orjson directly;
the pydantic models document them.
"""

from __future__ import annotations

import gc
import hmac
import json
import os
import signal
import threading
from functools import partial
from pathlib import Path as FsPath

import torch
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from recfunnel.errors import ArtifactError, RecfunnelError, UnknownIdError
from recfunnel.runs import Recommendations
from recfunnel.serving.model import ItemsJSON, ModelHolder, ServedModel, dumps
from recfunnel.serving.schema import (
    ERROR_CODES,
    MAX_BODY_BYTES,
    MAX_ID_LENGTH,
    MAX_K,
    BatchRequest,
    BatchResponse,
    Health,
    HistoryRequest,
    ModelCard,
    Recommendation,
    Reloaded,
    ReloadRequest,
    Restarting,
    SimilarItems,
    error_responses,
)
from recfunnel.serving.ui import is_public, mount_ui

WORKERS_ENV = "RECFUNNEL_SERVE_WORKERS"
SUPERVISOR_ENV = "RECFUNNEL_SERVE_SUPERVISOR"  # pid of the process that starts the workers
SCORING_THREADS = 2  # heavy requests computing at once (per worker); the rest wait their turn
INLINE_K = 100  # one user and k up to this: answered on the event loop
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


class FastJSON(JSONResponse):
    """JSON written by orjson; ``content`` may also be bytes already rendered."""

    def render(self, content) -> bytes:
        return content if isinstance(content, bytes) else dumps(content)


def error(status: int, message: str, headers: dict | None = None) -> FastJSON:
    code = ERROR_CODES.get(status, "error")
    return FastJSON({"error": {"code": code, "message": message}}, status, headers=headers)


# ------------------------------------------------------------------ middleware (pure ASGI)
_draining = threading.Event()


def start_draining() -> None:
    """From now on every answer carries ``Connection: close`` (the worker is about to stop)."""
    _draining.set()


class _CloseWhileDraining:
    """While the worker drains, ask each client to close its connection after the answer, so
    no keep-alive connection is left open for the worker to cut when it exits."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def closing(message):
            if message["type"] == "http.response.start" and _draining.is_set():
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (b"connection", b"close")]}  # fmt: skip
            await send(message)

        await self.app(scope, receive, closing)


class _HostCheck:
    """Answer 400 unless the Host header names an allowed host (DNS-rebinding defence)."""

    def __init__(self, app, hosts) -> None:
        self.app = app
        self.hosts = {h.lower().strip("[]") for h in hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1").lower()
            if host.startswith("["):  # [::1]:8000
                host = host[1 : host.find("]")] if "]" in host else host
            else:
                host = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
            if host not in self.hosts:
                response = error(400, "Host header not allowed; use the address the server "
                                      "listens on, or start it with --allowed-hosts")  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413 (declared length or as streamed)."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        message = f"request body over {self.limit} bytes; send fewer or shorter ids, or split it"
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await error(413, message)(scope, receive, send)
            return
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, message)
            return message

        await self.app(scope, limited, send)


class _BearerToken:
    """Every path but ``/healthz`` needs the token (constant-time comparison)."""

    def __init__(self, app, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not is_public(scope["path"]):  # pages, assets: no data
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = error(401, "missing or wrong bearer token; send 'Authorization: "
                                      "Bearer TOKEN'", {"WWW-Authenticate": "Bearer"})  # fmt: skip
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _answer(rec: Recommendations, items_json: ItemsJSON) -> bytes:
    return (
        b'{"user":' + dumps(rec.user) + b',"cold_start":' + dumps(rec.cold_start)
        + b',"items":' + items_json(rec) + b"}"
    )  # fmt: skip


def _validation_message(exc: RequestValidationError) -> str:
    """Where and what, never the input (it can be huge, or not encodable)."""
    parts = []
    for e in exc.errors()[:3]:
        loc = [str(x) for x in e.get("loc", ()) if x != "body"]
        if len(loc) > 1 and loc[0] == loc[1]:  # the union's tag ("users", "users", 0)
            loc = loc[1:]
        where = ".".join(loc) or "body"
        parts.append(f"{where}: {e.get('msg', 'invalid')}")
    more = len(exc.errors()) - 3
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def resolve_reload_dir(requested: str, root: FsPath) -> FsPath | None:
    """``requested`` (absolute, or relative to ``root``) resolved; None when outside ``root``."""
    candidate = FsPath(requested)
    if not candidate.is_absolute():
        candidate = root / candidate
    resolved = FsPath(os.path.realpath(candidate))
    return resolved if resolved == root or root in resolved.parents else None


def create_app(
    run_dir,
    token: str | None = None,
    *,
    index: str = "auto",
    runs_root=None,
    allowed_hosts=None,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """Build the app serving the run in ``run_dir``.

    Args:
        token: when set, every endpoint but ``/healthz`` needs ``Authorization: Bearer token``,
            and the admin endpoint (reload) exists; without a token it is off.
        index: top-k index for factorized models: ``auto``, ``exact``, ``hnsw`` or ``ivf``.
        runs_root: reloads may only load run folders inside this folder (after resolving
            symlinks); default: the served run's parent folder.
        allowed_hosts: answer only requests whose ``Host`` header names one of these (``serve``
            passes the loopback names for a loopback bind); None: no check.
        max_body_bytes: larger request bodies are refused with 413.

    Raises :class:`~recfunnel.errors.ArtifactError` at once when the run folder is broken.
    """
    torch.set_num_threads(1)  # one request is small; parallelism comes from workers
    holder = ModelHolder(run_dir, index=index)
    root = FsPath(os.path.realpath(runs_root or FsPath(os.path.realpath(run_dir)).parent))
    app = FastAPI(
        title="recfunnel",
        version=__import__("recfunnel").__version__,
        summary="Recommendations from a saved recfunnel run",
        description='Every error answer is `{"error": {"code", "message"}}`.',
        default_response_class=FastJSON,
        docs_url=None,  # mount_ui serves /docs with local Swagger assets (no CDN)
        redoc_url=None,
    )
    app.state.holder = holder
    app.state.runs_root = root
    if token:
        app.add_middleware(_BearerToken, token=token)
    app.add_middleware(_BodyLimit, limit=max_body_bytes)
    if allowed_hosts is not None and "*" not in allowed_hosts:
        app.add_middleware(_HostCheck, hosts=allowed_hosts)
    app.add_middleware(_CloseWhileDraining)
    secured = [Depends(HTTPBearer(auto_error=False))] if token else []  # documents the scheme
    auth = (401,) if token else ()

    limiter = {}

    async def offload(fn, *args):
        """Run ``fn`` in the scoring thread pool (at most SCORING_THREADS at once)."""
        import anyio

        if "limiter" not in limiter:
            limiter["limiter"] = anyio.CapacityLimiter(SCORING_THREADS)
        return await anyio.to_thread.run_sync(partial(fn, *args), limiter=limiter["limiter"])

    @app.exception_handler(RecfunnelError)
    async def _refused(request: Request, exc: RecfunnelError):
        # UnknownIdError: the id is not in the served run. Anything else the run refuses is
        # something this model cannot do (e.g. fold in a history): a conflict with its state.
        return error(404 if isinstance(exc, UnknownIdError) else 409, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error(422, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        message = {404: "no such endpoint; see /docs", 405: "method not allowed here"}.get(
            exc.status_code, str(exc.detail)
        )
        return error(exc.status_code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):  # a bug, never bad input: say so briefly
        return error(500, f"internal error ({type(exc).__name__}); see the server log")

    @app.get("/healthz", tags=["ops"], operation_id="healthz", response_model=Health,
             responses=error_responses(400))  # fmt: skip
    async def healthz():
        """Liveness; never needs the token."""
        return FastJSON(
            {"status": "ok", "generation": holder.current.generation, "worker": os.getpid()}
        )

    @app.get("/v1/model", tags=["ops"], operation_id="model_info", response_model=ModelCard,
             dependencies=secured,
             responses=error_responses(400, *auth))  # fmt: skip
    async def model_info():
        """The served run: model kind, sizes, index, hyper-parameters and test metrics."""
        return FastJSON(holder.current.describe())

    @app.get("/v1/recommendations/{user_id:path}", tags=["recommend"],
             operation_id="recommend_user", response_model=Recommendation, dependencies=secured,
             responses=error_responses(400, *auth, 404, 409, 422))  # fmt: skip
    async def recommend_user(
        user_id: str = Path(..., description="raw user id", max_length=MAX_ID_LENGTH),
        k: int = Query(10, ge=1, le=MAX_K, description="at most the catalogue's size"),
        exclude_seen: bool = True,
        cold_start: bool = Query(True, description="unknown user: popular items, else 404"),
    ):
        """One user's top-k items, best first."""
        served = holder.current  # this request's model, whatever reloads happen meanwhile
        run = served.run
        call = partial(run.recommend, user_id, min(k, len(run.items)),
                       exclude_seen=exclude_seen, cold_start=cold_start)  # fmt: skip
        rec = call() if k <= INLINE_K else await offload(call)
        return FastJSON(_answer(rec, served.items_json))

    @app.post("/v1/recommendations", tags=["recommend"], operation_id="recommend_batch",
              response_model=BatchResponse, dependencies=secured,
              responses=error_responses(400, *auth, 404, 409, 413, 422))  # fmt: skip
    async def recommend_batch(request: Request):
        """Top-k for a batch of users, or for one anonymous user given by a history."""
        raw = await request.body()  # parsed, validated and scored off the event loop
        return FastJSON(await offload(_batch, holder.current, raw))

    @app.get("/v1/items/{item_id:path}/similar", tags=["recommend"], operation_id="similar_items",
             response_model=SimilarItems, dependencies=secured,
             responses=error_responses(400, *auth, 404, 409, 422))  # fmt: skip
    async def similar(
        item_id: str = Path(..., description="raw item id", max_length=MAX_ID_LENGTH),
        k: int = Query(10, ge=1, le=MAX_K, description="at most the catalogue's size - 1"),
    ):
        """The items closest to one item (the item itself excluded)."""
        served = holder.current
        run = served.run
        call = partial(run.similar_items, item_id, max(1, min(k, len(run.items) - 1)))
        rec = call() if k <= INLINE_K else await offload(call)
        return FastJSON(b'{"item":' + dumps(item_id) + b',"items":' + served.items_json(rec) + b"}")

    mount_ui(app, holder, secured, auth)  # GET /ui (explorer), /docs, /v1/users, /v1/items
    _document_batch_body(app)
    if token:
        _add_reload(app, holder, root, secured, offload)
    else:

        @app.api_route("/v1/admin/{rest:path}", methods=["GET", "POST", "PUT", "DELETE"],
                       include_in_schema=False)  # fmt: skip
        async def admin_off(rest: str):
            return error(404, "admin endpoints are off; start the server with a token "
                              "(RECFUNNEL_TOKEN or --token-file) to enable them")  # fmt: skip

    return app


_BATCH = TypeAdapter(BatchRequest)


def _batch(served: ServedModel, raw: bytes) -> bytes:
    """Parse, validate and answer a batch request, then encode the answer (in a scoring
    thread: a 4 MiB body of ids costs tens of milliseconds just to parse)."""
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body",), "msg": "the body is not valid JSON"}]
        ) from None
    try:
        body = _BATCH.validate_python(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from None
    run = served.run
    options = {"exclude_seen": body.exclude_seen, "filter_items": body.deny, "items": body.allow}
    k = min(body.k, len(run.items))
    if isinstance(body, HistoryRequest):
        results = [run.recommend_history(body.history, k, **options)]
    else:
        results = run.recommend_many(body.users, k, cold_start=body.cold_start, **options)
    # One answer at a time: the GIL is held for one user's items per call, not for the whole
    # answer (up to 256 x 1000 items, ~25 MB: hundreds of ms in a single call), so the event
    # loop gets it back within a few ms and /healthz keeps answering; and no dict per item (see
    # ItemsJSON), so the garbage collector does not stop every thread.
    return b'{"results":[' + b",".join(_answer(r, served.items_json) for r in results) + b"]}"


def _document_batch_body(app: FastAPI) -> None:
    """The batch handler reads its body itself (to parse it off the event loop): put the
    request schema (users or history, never both) into the OpenAPI document."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()
            body = _BATCH.json_schema(ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                body.pop("$defs", {})
            )
            body["title"] = "BatchRequest"
            schema["paths"]["/v1/recommendations"]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body}},
            }
        return app.openapi_schema

    app.openapi = openapi


def _add_reload(app: FastAPI, holder: ModelHolder, root: FsPath, secured, offload) -> None:
    @app.post("/v1/admin/reload", tags=["admin"], operation_id="reload", response_model=Reloaded,
              dependencies=secured,
              responses={202: {"model": Restarting, "description": "several workers: a rolling "
                               "restart has begun"},
                         **error_responses(400, 401, 403, 409, 413, 422)})  # fmt: skip
    async def reload(body: ReloadRequest | None = None):
        """Load a run folder (default: the served one again) and swap it in; no downtime.

        Only folders inside the allowed runs root (``serve --runs-root``; default: the served
        run's parent folder) can be loaded. Errors never echo a path.
        """
        kept = holder.current
        target = FsPath(kept.run_dir)
        if body is not None and body.run_dir is not None:
            target = resolve_reload_dir(body.run_dir, root)
            if target is None:
                return error(403, "run_dir is outside the folder reloads may load from; "
                                  "start serve with --runs-root to widen it")  # fmt: skip
        workers = int(os.environ.get(WORKERS_ENV, "1"))
        try:
            if workers > 1:
                if os.path.realpath(target) != os.path.realpath(kept.run_dir):
                    return error(409, "with --workers > 1 the served folder is fixed; replace "
                                      "it (train --out writes atomically) and reload without "
                                      "run_dir")  # fmt: skip
                from recfunnel.runs import Run

                await offload(Run.load, target)
            else:
                served = await offload(holder.reload, target)
        except ArtifactError as exc:
            reason = getattr(exc, "reason", "the run folder cannot be loaded")
            return error(409, f"cannot load that run folder: {reason} (still serving "
                              f"generation {kept.generation})")  # fmt: skip
        if workers > 1:
            # uvicorn's supervisor does a rolling restart. Not os.getppid(): workers are forked
            # by a fork server, which a SIGHUP would end (leaving its workers orphaned).
            os.kill(int(os.environ[SUPERVISOR_ENV]), signal.SIGHUP)
            return FastJSON({"status": "restarting workers"}, 202)
        return FastJSON({"status": "reloaded", "model": served.describe()})


def settle_heap() -> None:
    """Take everything loaded so far (modules, the app, the model) out of the cyclic garbage
    collector's sight (``gc.freeze``), so its full passes -- which stop every thread, the event
    loop's included -- walk only what requests allocate, not the ~10^5 start-up objects."""
    gc.collect()
    gc.freeze()


def app_from_env() -> FastAPI:
    """App factory for uvicorn worker processes: settings come from the environment."""
    import sys

    from recfunnel.serving.server import SWITCH_INTERVAL

    sys.setswitchinterval(SWITCH_INTERVAL)
    hosts = os.environ.get("RECFUNNEL_SERVE_ALLOWED_HOSTS")
    app = create_app(
        os.environ["RECFUNNEL_SERVE_RUN_DIR"],
        token=os.environ.get("RECFUNNEL_TOKEN") or None,
        index=os.environ.get("RECFUNNEL_SERVE_INDEX", "auto"),
        runs_root=os.environ.get("RECFUNNEL_SERVE_RUNS_ROOT") or None,
        allowed_hosts=hosts.split(",") if hosts else None,
    )
    settle_heap()
    return app
