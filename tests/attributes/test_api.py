"""Attribute definitions and typed custom attributes (R-ATTR-1, R-ATTR-2)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import create_user


def definitions(api: TestClient, **params: Any) -> dict[str, dict[str, Any]]:
    body = api.get("/api/v1/data_attributes", params=params).json()
    return {item["name"]: item for item in body["data_attributes"]}


def define(api: TestClient, **body: Any) -> dict[str, Any]:
    response = api.post("/api/v1/data_attributes", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_first_value_infers_the_definition(api: TestClient) -> None:
    create_user(
        api,
        custom_attributes={
            "plan": "pro",
            "mrr": 500,
            "is_admin": True,
            "trial_ends": "2025-02-01",
            "last_login": "2025-01-15T10:30:00Z",
            "features": ["a", "b"],
        },
    )
    found = definitions(api)
    types = {name: item["data_type"] for name, item in found.items()}
    assert types == {
        "plan": "string",
        "mrr": "number",
        "is_admin": "boolean",
        "trial_ends": "date",
        "last_login": "datetime",
        "features": "list",
    }
    assert {item["origin"] for item in found.values()} == {"inferred"}
    assert found["plan"]["full_name"] == "custom_attributes.plan"


@pytest.mark.parametrize(
    ("type_", "given", "stored"),
    [
        ("number", "42", 42),
        ("number", "4.5", 4.5),
        ("string", 42, "42"),
        ("boolean", "true", True),
        ("boolean", 0, False),
        ("datetime", 1704164645, "2024-01-02T03:04:05Z"),
        ("datetime", "2024-01-02T04:04:05+01:00", "2024-01-02T03:04:05Z"),
        ("date", "2024-01-02T00:00:00Z", "2024-01-02"),
        ("list", "solo", ["solo"]),
    ],
)
def test_values_are_coerced_when_lossless(
    api: TestClient, type_: str, given: Any, stored: Any
) -> None:
    define(api, name="field", type=type_)
    user = create_user(api, custom_attributes={"field": given})
    assert user["custom_attributes"]["field"] == stored


@pytest.mark.parametrize(
    ("type_", "given"),
    [
        ("number", "abc"),
        ("number", True),
        ("boolean", "perhaps"),
        ("date", "2024-13-01"),
        ("datetime", "soon"),
        ("date", "2024-01-02T10:00:00Z"),
        ("list", [{"a": 1}]),
    ],
)
def test_values_that_would_lose_data_are_rejected(api: TestClient, type_: str, given: Any) -> None:
    define(api, name="field", type=type_)
    response = api.post("/api/v1/users", json={"custom_attributes": {"field": given}})
    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert error["field"] == "custom_attributes.field"


def test_definition_crud(api: TestClient) -> None:
    created = define(api, name="tier", type="string", label="Tier", options=["gold", "silver"])
    assert created["origin"] == "manual" and created["options"] == ["gold", "silver"]
    fetched = api.get(f"/api/v1/data_attributes/{created['id']}").json()
    assert fetched == created
    patched = api.patch(
        f"/api/v1/data_attributes/{created['id']}",
        json={"label": "Customer tier", "options": ["gold", "silver", "bronze"]},
    )
    assert patched.json()["label"] == "Customer tier"
    assert patched.json()["options"] == ["gold", "silver", "bronze"]
    deleted = api.delete(f"/api/v1/data_attributes/{created['id']}")
    assert deleted.json()["deleted"] is True
    assert api.get(f"/api/v1/data_attributes/{created['id']}").status_code == 404


def test_options_restrict_values(api: TestClient) -> None:
    define(api, name="tier", type="string", options=["gold", "silver"])
    assert create_user(api, custom_attributes={"tier": "gold"})["custom_attributes"] == {
        "tier": "gold"
    }
    response = api.post("/api/v1/users", json={"custom_attributes": {"tier": "platinum"}})
    assert response.status_code == 422
    assert "gold" in response.json()["errors"][0]["message"]


def test_archived_attributes_cannot_be_written(api: TestClient) -> None:
    created = define(api, name="legacy", type="string")
    api.patch(f"/api/v1/data_attributes/{created['id']}", json={"archived": True})
    response = api.post("/api/v1/users", json={"custom_attributes": {"legacy": "x"}})
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "archived"
    assert set(definitions(api, archived=True)) == {"legacy"}
    assert definitions(api, archived=False) == {}


def test_list_filters_by_model(api: TestClient) -> None:
    define(api, name="a", type="string", model="user")
    define(api, name="b", type="number", model="company")
    assert set(definitions(api, model="company")) == {"b"}


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"name": "x", "type": "colour"}, 422, "type"),
        ({"name": "", "type": "string"}, 422, "name"),
        ({"name": "a.b", "type": "string"}, 422, "name"),
        ({"name": "$a", "type": "string"}, 422, "name"),
        ({"name": "x", "type": "string", "model": "planet"}, 422, "model"),
        ({"name": "x", "type": "boolean", "options": ["y"]}, 422, "options"),
        ({"name": "x", "type": "number", "options": ["ten"]}, 422, "options"),
        ({"name": "x", "type": "string", "id": 3}, 422, "id"),
    ],
)
def test_bad_definitions_are_rejected(
    api: TestClient, body: dict[str, Any], status: int, field: str
) -> None:
    response = api.post("/api/v1/data_attributes", json=body)
    assert response.status_code == status, response.text
    assert response.json()["errors"][0]["field"] == field


def test_duplicate_definition_is_a_conflict(api: TestClient) -> None:
    define(api, name="plan", type="string")
    response = api.post("/api/v1/data_attributes", json={"name": "plan", "type": "number"})
    assert response.status_code == 409


def test_type_cannot_be_changed(api: TestClient) -> None:
    created = define(api, name="plan", type="string")
    response = api.patch(f"/api/v1/data_attributes/{created['id']}", json={"type": "number"})
    assert response.status_code == 422
