"""Shared helpers for the ingestion tests: posting tracking calls and reading the inbox."""

from __future__ import annotations

import itertools
from typing import Any

import httpx
from fastapi.testclient import TestClient

from audience.db import Database
from audience.ingest import inbox
from audience.ingest.models import InboxMessage

_counter = itertools.count(1)


def track(**fields: Any) -> dict[str, Any]:
    """A valid track message with a unique messageId; keyword fields override or add."""
    n = next(_counter)
    message = {
        "type": "track",
        "userId": f"user-{n}",
        "event": "Signed Up",
        "messageId": f"msg-{n}",
        "properties": {"plan": "pro"},
    }
    message.update(fields)
    return message


def post(
    app: TestClient, path: str, body: Any, *, token: str | None, **kwargs: Any
) -> httpx.Response:
    """POST a JSON body, authenticated with `token` as the Basic username when given."""
    auth = (token, "") if token is not None else None
    response: httpx.Response = app.post(path, json=body, auth=auth, **kwargs)
    return response


def batch(app: TestClient, messages: list[Any], *, token: str, **envelope: Any) -> httpx.Response:
    return post(app, "/v1/batch", {"batch": messages, **envelope}, token=token)


def inbox_rows(database: Database) -> list[InboxMessage]:
    with database.transaction(write=False) as session:
        return inbox.take_batch(session, 100_000)


def stored(database: Database) -> dict[str, dict[str, Any]]:
    """The stored payloads by messageId."""
    return {row.message_id: row.payload for row in inbox_rows(database)}


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """An R-API-7 error body with `code`; returns the error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error.list"
    assert body["code"] == code  # top level too, for the SDKs
    assert [error["code"] for error in body["errors"]] == [code]
    error: dict[str, Any] = body["errors"][0]
    assert error["message"]
    return error
