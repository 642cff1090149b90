"""Request authentication: secret API keys for /api/v1 (app tokens for /v1 come with ingestion)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from audience.db import Database, request_session
from audience.environments.models import Environment
from audience.environments.service import (
    environment_for_api_key,
    last_use_is_stale,
    record_api_key_use,
)
from audience.errors import AudienceError

log = logging.getLogger("audience")

DbSession = Annotated[Session, Depends(request_session)]


class Unauthorized(AudienceError):
    def __init__(self, message: str) -> None:
        super().__init__("unauthorized", message, status=401)


def _bearer_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if not header:
        raise Unauthorized("Missing Authorization header: use 'Bearer <api key>'")
    if scheme.lower() not in ("bearer", "token") or not key.strip():
        raise Unauthorized("Authorization must be 'Bearer <api key>' or 'Token <api key>'")
    return key.strip()


_KEY_USE = "api_key_use"  # request.state: the id of a key whose last use is to be written


def _record_use(database: Database, key_id: int) -> None:
    try:
        with database.transaction() as session:
            record_api_key_use(session, key_id=key_id)
    except SQLAlchemyError as exc:  # after the response: log, never raise into the server
        log.warning("could not record the use of API key %s: %s", key_id, type(exc).__name__)


class RecordKeyUse:
    """After the response, write `last_used_at` of the API key that `api_environment` marked.

    At most about once a minute per key (environments.service.LAST_USED_RESOLUTION), and in its
    own short transaction rather than the request's: a GET's session stays read-only, a request
    answered with an error (which rolls back) still counts as a use, and on SQLite a write
    request, whose session holds the one write lock until it commits, is never made to wait for
    a second connection's write.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # the dict request.state writes to
        await self.app(scope, receive, send)
        key_id = state.get(_KEY_USE)
        if key_id is not None:
            await run_in_threadpool(_record_use, scope["app"].state.database, key_id)


def api_environment(request: Request, session: DbSession) -> Environment:
    found = environment_for_api_key(session, _bearer_key(request))
    if found is None:
        raise Unauthorized("Unknown or revoked API key")
    environment, key_id, last_used_at = found
    if last_use_is_stale(last_used_at):
        setattr(request.state, _KEY_USE, key_id)  # written by RecordKeyUse after the response
    request.app.state.rate_limits.hit_api(key_id)
    request.state.actor = f"api_key:{key_id}"
    return environment


CurrentEnvironment = Annotated[Environment, Depends(api_environment)]
