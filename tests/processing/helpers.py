"""Send tracking messages through /v1 and run the processor over them, synchronously."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from fastapi.testclient import TestClient

from audience.db import Database
from audience.ingest import effects
from audience.ingest.processor import Processor
from tests.conftest import Tenant

_ids = itertools.count(1)


def message(kind: str, **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"type": kind, "messageId": f"m-{next(_ids)}"}
    body.update(fields)
    return body


def send(app: TestClient, tenant: Tenant, *messages: dict[str, Any]) -> dict[str, Any]:
    response = app.post("/v1/batch", json={"batch": list(messages)}, auth=(tenant.app_token, ""))
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    assert reply["rejected"] == [], reply
    return reply


def process(database: Database) -> int:
    return Processor(database).drain()


def deliver(app: TestClient, database: Database, tenant: Tenant, *messages: dict[str, Any]) -> None:
    send(app, tenant, *messages)
    process(database)


def user_by(api: TestClient, **key: str) -> dict[str, Any]:
    response = api.get("/api/v1/users/lookup", params=key)
    assert response.status_code == 200, response.text
    return dict(response.json())


def events_of(api: TestClient, user: dict[str, Any]) -> list[dict[str, Any]]:
    body = api.get(f"/api/v1/users/{user['id']}/events", params={"per_page": 150}).json()
    return list(body["events"])


def crash_on_event(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Make applying a track of event `name` raise, as a bug would (an unexpected error)."""
    original = effects.touch

    def touch(environment: Any, user: Any, message: effects.Message) -> None:
        if message.payload.get("event") == name:
            raise RuntimeError("boom")
        original(environment, user, message)

    monkeypatch.setattr(effects, "touch", touch)
