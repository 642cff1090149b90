"""Helpers shared by the events tests."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.db import Database
from audience.events.models import Event
from audience.users.models import User

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def track(api: TestClient, user: dict[str, Any], **fields: Any) -> dict[str, Any]:
    body = {"name": "Signed Up", **fields}
    response = api.post(f"/api/v1/users/{user['id']}/events", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def event_rows(database: Database, **where: Any) -> list[Event]:
    with database.transaction() as session:
        return list(session.scalars(select(Event).filter_by(**where).order_by(Event.id)))


def user_row(database: Database, id: str) -> User:
    with database.transaction() as session:
        user = session.get(User, int(id))
        assert user is not None
        return user


def names(listing: dict[str, Any]) -> list[str]:
    return [event["name"] for event in listing["events"]]


def error_fields(response: Any) -> list[str]:
    return [error.get("field") for error in response.json()["errors"]]
