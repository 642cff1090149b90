"""The Segment/RudderStack-compatible tracking API: `POST /v1/<kind>` and `/v1/batch` (R-ING-1).

This is the accept path only: authenticate, read and validate, append the accepted messages to
the inbox and commit (TransactionRoute) before answering. The processor applies them later.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from weakref import WeakKeyDictionary

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.routing import APIRoute
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from audience.db import Database, TransactionRoute, WriterTurns, request_session, utcnow
from audience.environments.service import environment_for_app_token
from audience.errors import AudienceError, error_body
from audience.ingest import inbox
from audience.ingest.body import parse_json, read_body
from audience.ingest.messages import (
    KINDS,
    MAX_BATCH_MESSAGES,
    Defaults,
    Outcome,
    validate_all,
)

log = logging.getLogger("audience.ingest")

# Browsers post from any site, without cookies: `*` and no Allow-Credentials.
CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}
_PREFLIGHT = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "POST, OPTIONS",
    "Access-Control-Max-Age": "86400",
}
_DEFAULT_ALLOWED_HEADERS = "Content-Type, Content-Encoding, Authorization"
TOKEN_CACHE_SECONDS = 5.0


class Unauthorized(AudienceError):
    def __init__(self, message: str) -> None:
        super().__init__("unauthorized", message, status=401)


def _error(
    status: int, code: str, message: str, field: str | None = None, **headers: str
) -> Response:
    """The R-API-7 error shape, plus `code` and `message` at the top level: the Segment and
    RudderStack SDKs read those two to give up on a 4xx instead of retrying it."""
    error = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    body = {**error_body([error]), "code": code, "message": message}
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )


class IngestRoute(TransactionRoute):
    """TransactionRoute plus: CORS headers on every answer, and a store failure is a 503."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                response = await handler(request)  # TransactionRoute: commits or rolls back
            except AudienceError as exc:
                response = _error(exc.status, exc.code, exc.message, exc.field, **exc.headers)
            except DBAPIError as exc:  # raised by the insert or the commit: nothing was stored
                log.warning("inbox store failed: %s", type(exc.orig or exc).__name__)
                response = _error(
                    503,
                    "store_unavailable",
                    "the message store is unavailable; nothing was stored, retry later",
                    **{"Retry-After": "1"},
                )
            finally:
                _release_write_lock(request)
            response.headers.update(CORS_HEADERS)
            return response

        return run


router = APIRouter(prefix="/v1", route_class=IngestRoute, include_in_schema=False)


@dataclass(slots=True)
class _Validated:
    environment_id: int
    received_at: datetime
    outcome: Outcome


async def _accept(request: Request, kind: str | None) -> Response:
    body = await read_body(request)
    # Parsing and validating are CPU work, the insert blocking I/O: both in the thread pool.
    validated = await run_in_threadpool(_validate, request, body, kind)
    if validated.outcome.accepted:
        await _hold_write_lock(request)
        await run_in_threadpool(
            inbox.append,
            request_session(request),
            environment_id=validated.environment_id,
            received_at=validated.received_at,
            messages=[(m.message_id, m.payload) for m in validated.outcome.accepted],
        )
    return Response(orjson.dumps(validated.outcome.reply()), media_type="application/json")


def _validate(request: Request, body: bytes, kind: str | None) -> _Validated:
    document = parse_json(body)
    environment_id = _environment_id(request, _app_token(request, document))
    request.app.state.rate_limits.hit_ingest(environment_id)
    items, defaults = _messages(document, kind)
    received_at = utcnow()
    outcome = validate_all(items, kind=kind, defaults=defaults, received_at=received_at)
    if kind is not None and outcome.rejected:
        _, _, rejection = outcome.rejected[0]
        raise AudienceError(rejection.code, rejection.message, field=rejection.field)
    return _Validated(environment_id, received_at, outcome)


async def _hold_write_lock(request: Request) -> None:
    """On SQLite, queue this request's write behind the others of this process.

    SQLite has one writer at a time. Left to it, concurrent writers wait in its busy handler,
    which sleeps up to 100 ms between tries while the lock sits free. Requests queue on an
    asyncio lock, which hands over at once; the one at its head then takes the writer from
    `Database.writer_turns`, which the processor of this process shares and yields to queued
    requests. IngestRoute releases both after the commit.
    """
    database: Database = request.app.state.database
    turns = database.writer_turns
    if turns is None:
        return
    # One lock per event loop: an asyncio lock can't be awaited from another loop (the test
    # client runs one loop per request thread; uvicorn has one).
    locks: WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
        getattr(request.app.state, "ingest_write_locks", None) or WeakKeyDictionary()
    )
    request.app.state.ingest_write_locks = locks
    lock = locks.setdefault(asyncio.get_running_loop(), asyncio.Lock())
    turns.queue()
    try:
        await lock.acquire()
    except BaseException:
        turns.leave()
        raise
    request.state.ingest_write_lock = lock
    # Not cancellable (anyio waits for the thread), so the writer is never taken and lost.
    await run_in_threadpool(turns.acquire)
    request.state.writer_turns = turns


def _release_write_lock(request: Request) -> None:
    turns: WriterTurns | None = getattr(request.state, "writer_turns", None)
    if turns is not None:
        turns.release()
    lock: asyncio.Lock | None = getattr(request.state, "ingest_write_lock", None)
    if lock is not None:
        lock.release()


def _messages(document: Any, kind: str | None) -> tuple[list[Any], Defaults]:
    """The items to validate: the body itself on a single route, `batch` on /v1/batch."""
    if kind is not None:
        return [document], Defaults()
    if not isinstance(document, dict):
        raise AudienceError("invalid_batch", "the body must be an object with a batch array")
    items = document.get("batch")
    if not isinstance(items, list):
        raise AudienceError(
            "invalid_batch", "the body needs a batch array of messages", field="batch"
        )
    if len(items) > MAX_BATCH_MESSAGES:
        raise AudienceError(
            "too_many_messages",
            f"a batch holds at most {MAX_BATCH_MESSAGES} messages; this one has {len(items)}",
            status=413,
            field="batch",
        )
    context, integrations = document.get("context"), document.get("integrations")
    for name, value in (("context", context), ("integrations", integrations)):
        if value is not None and not isinstance(value, dict):
            raise AudienceError("invalid_batch", f"{name} must be an object", field=name)
    return items, Defaults(context, integrations, document.get("sentAt"))


def _app_token(request: Request, document: Any) -> str:
    """The app token: Basic username, else `writeKey` in the body, else `?writeKey=`."""
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("the Basic credentials are not valid base64") from None
        username = decoded.partition(":")[0]
        if username:
            return username
    if isinstance(document, dict):
        write_key = document.get("writeKey")
        if isinstance(write_key, str) and write_key:
            return write_key
    write_key = request.query_params.get("writeKey")
    if write_key:
        return write_key
    raise Unauthorized(
        "missing app token: send it as the Basic username, as writeKey in the body or as ?writeKey="
    )


def _environment_id(request: Request, token: str) -> int:
    """The environment of an app token; known tokens are cached for a few seconds per app."""
    cache: dict[str, tuple[int, float]] | None = getattr(request.app.state, "app_tokens", None)
    if cache is None:
        cache = request.app.state.app_tokens = {}
    now = time.monotonic()
    cached = cache.get(token)
    if cached is not None and cached[1] > now:
        return cached[0]
    # A read session of its own: on SQLite the request's session would take the write lock.
    database: Database = request.app.state.database
    with database.session(write=False) as session:
        environment = environment_for_app_token(session, token)
        if environment is None:
            raise Unauthorized("unknown app token")
        environment_id = environment.id
    if len(cache) > 10_000:  # tokens are few; this only bounds a pathological case
        cache.clear()
    cache[token] = (environment_id, now + TOKEN_CACHE_SECONDS)
    return environment_id


def _route(kind: str | None) -> Callable[[Request], Coroutine[Any, Any, Response]]:
    async def endpoint(request: Request) -> Response:
        return await _accept(request, kind)

    endpoint.__name__ = f"ingest_{kind or 'batch'}"
    return endpoint


async def preflight(request: Request) -> Response:
    requested = request.headers.get("access-control-request-headers")
    headers = {**_PREFLIGHT, "Access-Control-Allow-Headers": requested or _DEFAULT_ALLOWED_HEADERS}
    headers["Vary"] = "Access-Control-Request-Headers"
    return Response(status_code=204, headers=headers)


for _kind in (*KINDS, "batch"):
    router.add_api_route(f"/{_kind}", _route(None if _kind == "batch" else _kind), methods=["POST"])
    router.add_api_route(f"/{_kind}", preflight, methods=["OPTIONS"], route_class_override=APIRoute)
