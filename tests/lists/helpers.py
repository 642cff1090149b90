"""Helpers of the lists tests: plain functions over the REST client and the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from audience.db import Database
from audience.lists.models import ListMember, UserList
from tests.factories import unique

LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error.list"
    return dict(body["errors"][0])


def create_list(api: TestClient, name: str | None = None, **fields: Any) -> dict[str, Any]:
    response = api.post("/api/v1/lists", json={"name": name or unique("list"), **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


def member_ids(database: Database, list_id: str) -> set[int]:
    with database.transaction() as session:
        rows = session.scalars(select(ListMember.user_id).where(ListMember.list_id == int(list_id)))
        return set(rows)


def add_users(api: TestClient, list_id: str, *refs: dict[str, str]) -> Any:
    return api.post(f"/api/v1/lists/{list_id}/users", json={"users": list(refs)})


def age(database: Database, list_id: str) -> None:
    """Move a list's timestamps into the past, so that a change of updated_at shows."""
    with database.transaction() as session:
        session.execute(
            update(UserList)
            .where(UserList.id == int(list_id))
            .values(created_at=LONG_AGO, updated_at=LONG_AGO)
        )
