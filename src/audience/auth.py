"""Request authentication: secret API keys for /api/v1 (app tokens for /v1 come with ingestion)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from audience.db import request_session
from audience.environments.models import Environment
from audience.environments.service import environment_for_api_key
from audience.errors import AudienceError

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


def api_environment(request: Request, session: DbSession) -> Environment:
    found = environment_for_api_key(session, _bearer_key(request))
    if found is None:
        raise Unauthorized("Unknown or revoked API key")
    environment, key_id = found
    request.app.state.rate_limits.hit_api(key_id)
    request.state.actor = f"api_key:{key_id}"
    return environment


CurrentEnvironment = Annotated[Environment, Depends(api_environment)]
