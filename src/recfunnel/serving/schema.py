"""The HTTP API's request and response models: the OpenAPI document is generated from these.

Requests are validated strictly (a number is not an id, ``"true"`` is not a boolean) and every
limit is a schema constraint, so a request the schema allows is answered, and one it forbids
is refused with 422. Responses are written with orjson straight from dicts (FastAPI's generic
encoder costs more than a recommendation); the models here document them, and the contract
test (Schemathesis) checks every answer against them.

Every 4xx answer has one shape, :class:`ErrorBody`::

    {"error": {"code": "not_found", "message": "unknown user 'u9': ..."}}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
)

MAX_K = 1000
MAX_USERS = 256
MAX_IDS = 10_000
MAX_ID_LENGTH = 256
MAX_PATH_LENGTH = 4096
MAX_BODY_BYTES = 4 << 20

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "invalid_request",
    500: "internal_error",
}


def _unicode(value: str) -> str:
    """Refuse strings JSON can carry but UTF-8 cannot (lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (a lone surrogate escape)") from None
    return value


def _whole(value: Any) -> Any:
    """JSON Schema counts 5.0 as an integer: accept it as 5 (strict mode refuses the rest)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


Id = Annotated[
    str,
    Field(min_length=1, max_length=MAX_ID_LENGTH, description="a raw user or item id"),
    AfterValidator(_unicode),
]
IdList = list[Id]


# ------------------------------------------------------------------ requests
class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    k: Annotated[int, BeforeValidator(_whole)] = Field(
        10, ge=1, le=MAX_K, description="how many items (at most the catalogue)"
    )
    exclude_seen: bool = Field(True, description="drop items the user interacted with")
    allow: IdList | None = Field(None, max_length=MAX_IDS, description="choose only from these")
    deny: IdList | None = Field(None, max_length=MAX_IDS, description="never return these")


class UsersRequest(_Options):
    """Top-k for a batch of users, known or not."""

    users: IdList = Field(..., min_length=1, max_length=MAX_USERS, description="raw user ids")
    cold_start: bool = Field(True, description="unknown users get popular items (else 404)")


class HistoryRequest(_Options):
    """Top-k for one anonymous user given by the items they interacted with (folded in)."""

    history: IdList = Field(..., min_length=1, max_length=MAX_IDS, description="raw item ids")


def _which(body: Any) -> str | None:
    if isinstance(body, dict):
        has_users, has_history = "users" in body, "history" in body
    else:
        has_users = hasattr(body, "users")
        has_history = hasattr(body, "history")
    if has_users != has_history:
        return "users" if has_users else "history"
    return None


BatchRequest = Annotated[
    Annotated[UsersRequest, Tag("users")] | Annotated[HistoryRequest, Tag("history")],
    Discriminator(
        _which,
        custom_error_type="one_of",
        custom_error_message="give exactly one of 'users' or 'history'",
    ),
]


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    run_dir: (
        Annotated[
            str,
            Field(min_length=1, max_length=MAX_PATH_LENGTH, pattern="^[^\\x00]*$"),
            AfterValidator(_unicode),
        ]
        | None
    ) = Field(
        None,
        description="run folder to serve, absolute or relative to the allowed runs root; "
        "default: the served folder again",
    )


# ------------------------------------------------------------------ responses
class Item(BaseModel):
    item: str
    title: str
    score: float


class Recommendation(BaseModel):
    user: str = Field(description="the user id asked for, or '(history)'")
    cold_start: bool = Field(description="the user was unknown and got the most popular items")
    items: list[Item]


class BatchResponse(BaseModel):
    results: list[Recommendation]


class SimilarItems(BaseModel):
    item: str
    items: list[Item]


class Health(BaseModel):
    status: Literal["ok"]
    generation: int = Field(description="how many reloads this worker has done")
    worker: int = Field(description="process id of the worker that answered")


class ModelCard(BaseModel):
    run: str = Field(description="name of the served run folder (never its path)")
    generation: int
    loaded_at: float = Field(description="Unix time the run was loaded")
    model: str
    num_users: int
    num_items: int
    index: dict[str, Any] = Field(description="the top-k index in use")
    params: dict[str, Any] = Field(description="the model's hyper-parameters")
    metrics: dict[str, Any] = Field(description="the run's test metrics")


class Reloaded(BaseModel):
    status: Literal["reloaded"]
    model: ModelCard


class Restarting(BaseModel):
    status: Literal["restarting workers"]


class UserList(BaseModel):
    count: int = Field(description="how many users the run knows")
    users: list[str]


class HistoryItem(BaseModel):
    item: str
    title: str
    popularity: float


class UserHistory(BaseModel):
    user: str
    count: int = Field(description="how many training items the user has")
    items: list[HistoryItem]


class ItemRef(BaseModel):
    item: str
    title: str


class ItemList(BaseModel):
    count: int = Field(description="how many items the run knows")
    items: list[ItemRef]


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable: " + ", ".join(ERROR_CODES.values()))
    message: str = Field(description="one line: what is wrong and what to change")


class ErrorBody(BaseModel):
    """The body of every 4xx (and 5xx) answer."""

    error: ErrorDetail


_WHY = {
    400: "bad request (Host header not allowed, unreadable body)",
    401: "missing or wrong bearer token",
    403: "the run folder is outside the allowed runs root",
    404: "unknown user or item id",
    409: "the served model cannot answer this, or the run folder cannot be loaded",
    413: "request body too large",
    422: "the request does not follow this schema",
}


def error_responses(*codes: int) -> dict:
    """OpenAPI ``responses`` entries for the error statuses an operation can answer."""
    return {code: {"model": ErrorBody, "description": _WHY[code]} for code in codes}
