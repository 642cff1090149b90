"""API keys reach exactly one environment (R-SEC-1); every route filters by environment."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from audience.db import Database
from audience.environments import service as environments
from tests.conftest import Tenant
from tests.factories import create_user


def test_missing_authorization_is_401(app: TestClient, tenant: Tenant) -> None:
    response = app.get("/api/v1/users")
    assert response.status_code == 401
    assert response.json()["errors"][0]["code"] == "unauthorized"


@pytest.mark.parametrize("header", ["Bearer nope", "Basic abc", "Bearer ", "sk_123"])
def test_bad_authorization_is_401(app: TestClient, tenant: Tenant, header: str) -> None:
    response = app.get("/api/v1/users", headers={"Authorization": header})
    assert response.status_code == 401


def test_token_scheme_is_accepted(app: TestClient, tenant: Tenant) -> None:
    response = app.get("/api/v1/users", headers={"Authorization": f"Token {tenant.api_key}"})
    assert response.status_code == 200


def test_app_token_does_not_open_the_rest_api(app: TestClient, tenant: Tenant) -> None:
    response = app.get("/api/v1/users", headers={"Authorization": f"Bearer {tenant.app_token}"})
    assert response.status_code == 401


def test_revoked_key_is_401(app: TestClient, database: Database, tenant: Tenant) -> None:
    with database.transaction() as session:
        key = environments.list_api_keys(session, environment_id=tenant.id)[0]
        environments.revoke_api_key(session, environment_id=tenant.id, key_id=key.id)
    assert tenant.client.get("/api/v1/users").status_code == 401


@pytest.fixture
def twins(tenant: Tenant, other_tenant: Tenant) -> tuple[dict[str, Any], dict[str, Any]]:
    """The same person (user_id, email, phone) in two environments."""
    same = {"user_id": "same-1", "email": "same@example.com", "phone": "+12025550199"}
    return create_user(tenant.client, **same), create_user(other_tenant.client, **same)


def test_overlapping_user_ids_live_apart(
    tenant: Tenant, other_tenant: Tenant, twins: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    mine, theirs = twins
    assert mine["id"] != theirs["id"]
    for key in ("user_id", "email", "phone"):
        found = tenant.client.get("/api/v1/users/lookup", params={key: mine[key]})
        assert found.json()["id"] == mine["id"]
        found = other_tenant.client.get("/api/v1/users/lookup", params={key: mine[key]})
        assert found.json()["id"] == theirs["id"]


def test_another_environments_user_is_not_found_by_any_route(
    tenant: Tenant, other_tenant: Tenant, twins: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    _, theirs = twins
    client = tenant.client
    assert client.get(f"/api/v1/users/{theirs['id']}").status_code == 404
    assert client.patch(f"/api/v1/users/{theirs['id']}", json={"city": "x"}).status_code == 404
    assert client.get(f"/api/v1/users/{theirs['id']}/history").status_code == 404
    assert client.delete(f"/api/v1/users/{theirs['id']}").status_code == 404
    user_key = client.get("/api/v1/users/lookup", params={"user_key": theirs["user_key"]})
    assert user_key.status_code == 404
    assert other_tenant.client.get(f"/api/v1/users/{theirs['id']}").json()["city"] is None


def test_listing_and_search_show_only_this_environment(
    tenant: Tenant, other_tenant: Tenant, twins: tuple[dict[str, Any], dict[str, Any]]
) -> None:
    mine, _ = twins
    body = tenant.client.get("/api/v1/users", params={"q": "same"}).json()
    assert body["total_count"] == 1 and body["users"][0]["id"] == mine["id"]


def test_attribute_definitions_are_per_environment(tenant: Tenant, other_tenant: Tenant) -> None:
    create_user(tenant.client, custom_attributes={"plan": "pro"})
    create_user(other_tenant.client, custom_attributes={"plan": 5})
    mine = tenant.client.get("/api/v1/data_attributes").json()["data_attributes"]
    theirs = other_tenant.client.get("/api/v1/data_attributes").json()["data_attributes"]
    assert [(d["name"], d["data_type"]) for d in mine] == [("plan", "string")]
    assert [(d["name"], d["data_type"]) for d in theirs] == [("plan", "number")]
    response = tenant.client.get(f"/api/v1/data_attributes/{theirs[0]['id']}")
    assert response.status_code == 404


def test_healthz_reports_the_database(app: TestClient) -> None:
    response = app.get("/healthz")
    assert response.status_code == 200
    assert response.json()["database"] == "ok"


def test_openapi_document_lists_the_routes(app: TestClient) -> None:
    document = app.get("/api/v1/openapi.json").json()
    for path in (
        "/api/v1/users",
        "/api/v1/users/lookup",
        "/api/v1/users/{id}",
        "/api/v1/users/{id}/history",
        "/api/v1/data_attributes",
    ):
        assert path in document["paths"], path
    assert app.get("/api/v1/docs").status_code == 200


def test_unknown_route_is_404_in_the_error_shape(api: TestClient) -> None:
    response = api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["type"] == "error.list"


def test_wrong_method_is_405_in_the_error_shape(api: TestClient) -> None:
    response = api.put("/api/v1/users")
    assert response.status_code == 405
    assert response.json()["type"] == "error.list"
