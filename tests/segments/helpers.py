"""Helpers of the segments tests: plain functions over the REST client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tests.factories import create_user


def search(api: TestClient, filter: Any = None, **body: Any) -> Any:
    return api.post("/api/v1/users/search", json={"filter": filter, **body})


def found(api: TestClient, filter: Any, **body: Any) -> set[str]:
    """Ids of the users a filter finds (all pages' worth: per_page 150)."""
    response = search(api, filter, per_page=150, **body)
    assert response.status_code == 200, response.text
    return {user["id"] for user in response.json()["users"]}


def matches(api: TestClient, field: str, op: str, value: Any = ..., **body: Any) -> set[str]:
    condition: dict[str, Any] = {"field": field, "op": op}
    if value is not ...:
        condition["value"] = value
    return found(api, condition, **body)


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error.list", body
    return dict(body["errors"][0])


def define(api: TestClient, name: str, type_: str, model: str = "user") -> None:
    response = api.post(
        "/api/v1/data_attributes", json={"model": model, "name": name, "type": type_}
    )
    assert response.status_code == 200, response.text


def user(api: TestClient, **fields: Any) -> str:
    return str(create_user(api, **fields)["id"])


def ago(**delta: float) -> int:
    """Unix seconds `delta` before now."""
    return int((datetime.now(UTC) - timedelta(**delta)).timestamp())


def track(api: TestClient, user_id: str, name: str = "Signed Up", **fields: Any) -> None:
    response = api.post(f"/api/v1/users/{user_id}/events", json={"name": name, **fields})
    assert response.status_code == 200, response.text
