"""The lists REST API through HTTP on the real database: lists themselves, and environments."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.db import Database
from audience.lists.models import UserList
from tests.conftest import Tenant
from tests.factories import create_user
from tests.lists.helpers import LONG_AGO, add_users, age, create_list, error_of, member_ids

# --- create, read, update, delete ----------------------------------------------------------


def test_create_list_returns_the_list_object(api: TestClient, database: Database) -> None:
    created = create_list(api, " Beta testers ", description="Early access")
    assert created["type"] == "list"
    assert created["id"].isdigit()
    assert created["name"] == "Beta testers"
    assert created["description"] == "Early access"
    assert created["user_count"] == 0
    assert created["created_at"] == created["updated_at"] > 0
    with database.transaction() as session:
        row = session.get(UserList, int(created["id"]))
        assert row is not None and row.name == "Beta testers"


def test_create_list_without_description_leaves_it_null(api: TestClient) -> None:
    assert create_list(api)["description"] is None


def test_create_list_with_a_name_in_use_is_409(api: TestClient, database: Database) -> None:
    create_list(api, "Beta")
    response = api.post("/api/v1/lists", json={"name": "Beta"})
    assert response.status_code == 409
    assert error_of(response)["field"] == "name"
    with database.transaction() as session:
        assert len(list(session.scalars(select(UserList)))) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": " "}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": ["a"]}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({"name": "ok", "description": "\x00"}, "description"),
        ({}, "name"),
        ({"name": "ok", "description": 5}, "description"),
        ({"name": "ok", "description": "x" * 65_536}, "description"),
        ({"name": "ok", "id": "1"}, "id"),
        ({"name": "ok", "created_at": 1}, "created_at"),
        ({"name": "ok", "environment_id": 1}, "environment_id"),
        ({"name": "ok", "user_count": 1}, "user_count"),
    ],
)
def test_create_list_with_a_bad_body_is_422_naming_the_field(
    api: TestClient, database: Database, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/lists", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field
    with database.transaction() as session:
        assert session.scalar(select(UserList)) is None


def test_get_list(api: TestClient) -> None:
    created = create_list(api)
    response = api.get(f"/api/v1/lists/{created['id']}")
    assert response.status_code == 200 and response.json() == created


@pytest.mark.parametrize("id", ["424242", "abc", "-3", "9" * 30])
def test_get_unknown_list_is_404(api: TestClient, id: str) -> None:
    response = api.get(f"/api/v1/lists/{id}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_list_lists_sorted_by_name_with_counts(api: TestClient) -> None:
    b, a = create_list(api, "beta"), create_list(api, "Alpha")
    add_users(api, b["id"], {"id": create_user(api)["id"]}, {"id": create_user(api)["id"]})
    body = api.get("/api/v1/lists").json()
    assert body["type"] == "list.list" and body["total_count"] == 2
    assert [item["id"] for item in body["lists"]] == [a["id"], b["id"]]
    assert [item["user_count"] for item in body["lists"]] == [0, 2]
    assert body["pages"]["type"] == "pages" and body["pages"]["total_pages"] == 1


def test_list_lists_q_keeps_names_starting_with_it_in_any_case(api: TestClient) -> None:
    for name in ("Newsletter", "newsroom", "Old news"):
        create_list(api, name)
    body = api.get("/api/v1/lists", params={"q": "NEWS"}).json()
    assert [item["name"] for item in body["lists"]] == ["Newsletter", "newsroom"]


@pytest.mark.parametrize("params", [{"per_page": 0}, {"q": "x" * 256}, {"q": "\x00"}])
def test_list_lists_with_bad_parameters_is_400(api: TestClient, params: dict[str, Any]) -> None:
    response = api.get("/api/v1/lists", params=params)
    assert response.status_code == 400
    assert error_of(response)["field"] == next(iter(params))


def test_list_lists_paginates(api: TestClient) -> None:
    for name in ("a", "b", "c"):
        create_list(api, name)
    first = api.get("/api/v1/lists", params={"per_page": 2}).json()
    assert [item["name"] for item in first["lists"]] == ["a", "b"]
    cursor = first["pages"]["next"]["starting_after"]
    rest = api.get("/api/v1/lists", params={"per_page": 2, "starting_after": cursor}).json()
    assert [item["name"] for item in rest["lists"]] == ["c"]
    assert rest["pages"]["next"] is None


def test_update_list_name_and_description(api: TestClient, database: Database) -> None:
    created = create_list(api, "old", description="before")
    age(database, created["id"])
    response = api.patch(
        f"/api/v1/lists/{created['id']}", json={"name": " new ", "description": "after"}
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated["name"] == "new" and updated["description"] == "after"
    assert updated["updated_at"] > updated["created_at"] == int(LONG_AGO.timestamp())


def test_update_list_leaves_omitted_fields_alone(api: TestClient) -> None:
    created = create_list(api, "keep", description="kept")
    response = api.patch(f"/api/v1/lists/{created['id']}", json={"description": "changed"})
    assert response.json()["name"] == "keep" and response.json()["description"] == "changed"
    response = api.patch(f"/api/v1/lists/{created['id']}", json={"name": "renamed"})
    assert response.json()["description"] == "changed"


def test_update_list_with_null_description_clears_it(api: TestClient) -> None:
    created = create_list(api, description="text")
    response = api.patch(f"/api/v1/lists/{created['id']}", json={"description": None})
    assert response.status_code == 200 and response.json()["description"] is None


def test_update_list_without_changes_keeps_updated_at(api: TestClient, database: Database) -> None:
    created = create_list(api, "same", description="same")
    age(database, created["id"])
    response = api.patch(f"/api/v1/lists/{created['id']}", json={"name": "same"})
    assert response.json()["updated_at"] == int(LONG_AGO.timestamp())


def test_update_list_to_a_name_in_use_is_409(api: TestClient, database: Database) -> None:
    create_list(api, "taken")
    created = create_list(api, "mine")
    response = api.patch(f"/api/v1/lists/{created['id']}", json={"name": "taken"})
    assert response.status_code == 409
    with database.transaction() as session:
        row = session.get(UserList, int(created["id"]))
        assert row is not None and row.name == "mine"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"id": "7"}, "id"),
        ({"updated_at": 1}, "updated_at"),
    ],
)
def test_update_list_with_a_bad_body_is_422(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    created = create_list(api)
    response = api.patch(f"/api/v1/lists/{created['id']}", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_update_unknown_list_is_404(api: TestClient) -> None:
    assert api.patch("/api/v1/lists/424242", json={"name": "x"}).status_code == 404


def test_delete_list_removes_it_and_its_memberships_but_not_the_users(
    api: TestClient, database: Database
) -> None:
    created = create_list(api)
    user = create_user(api)
    add_users(api, created["id"], {"id": user["id"]})
    response = api.delete(f"/api/v1/lists/{created['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": created["id"], "object": "list", "deleted": True}
    assert api.get(f"/api/v1/lists/{created['id']}").status_code == 404
    assert member_ids(database, created["id"]) == set()
    assert api.get(f"/api/v1/users/{user['id']}").status_code == 200


def test_delete_unknown_list_is_404(api: TestClient) -> None:
    assert api.delete("/api/v1/lists/424242").status_code == 404


# --- environments --------------------------------------------------------------------------


def test_lists_of_another_environment_are_invisible(tenant: Tenant, other_tenant: Tenant) -> None:
    theirs = create_list(other_tenant.client, "secret")
    mine = create_list(tenant.client, "mine")
    client = tenant.client
    assert client.get(f"/api/v1/lists/{theirs['id']}").status_code == 404
    assert [item["id"] for item in client.get("/api/v1/lists").json()["lists"]] == [mine["id"]]
    assert client.get(f"/api/v1/lists/{theirs['id']}/users").status_code == 404


def test_lists_of_another_environment_cannot_be_changed(
    tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    theirs = create_list(other_tenant.client, "secret")
    their_user = create_user(other_tenant.client)
    add_users(other_tenant.client, theirs["id"], {"id": their_user["id"]})
    mine = create_user(tenant.client)
    client, list_id = tenant.client, theirs["id"]
    assert client.patch(f"/api/v1/lists/{list_id}", json={"name": "x"}).status_code == 404
    assert add_users(client, list_id, {"id": mine["id"]}).status_code == 404
    assert client.delete(f"/api/v1/lists/{list_id}/users/{their_user['id']}").status_code == 404
    assert client.post(f"/api/v1/users/{mine['id']}/lists", json={"id": list_id}).status_code == 404
    assert client.delete(f"/api/v1/users/{mine['id']}/lists/{list_id}").status_code == 404
    assert client.delete(f"/api/v1/lists/{list_id}").status_code == 404
    assert other_tenant.client.get(f"/api/v1/lists/{list_id}").json()["name"] == "secret"
    assert member_ids(database, list_id) == {int(their_user["id"])}


def test_a_user_of_another_environment_cannot_be_added(
    tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    created = create_list(tenant.client)
    theirs = create_user(other_tenant.client, user_id="twin", email="twin@example.com")
    for ref in ({"id": theirs["id"]}, {"user_id": "twin"}, {"email": "twin@example.com"}):
        assert add_users(tenant.client, created["id"], ref).status_code == 404
    shortcut = tenant.client.post(f"/api/v1/users/{theirs['id']}/lists", json={"id": created["id"]})
    assert shortcut.status_code == 404
    assert tenant.client.get(f"/api/v1/users/{theirs['id']}/lists").status_code == 404
    assert member_ids(database, created["id"]) == set()


def test_the_same_list_name_lives_apart_in_two_environments(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    mine, theirs = create_list(tenant.client, "Beta"), create_list(other_tenant.client, "Beta")
    assert mine["id"] != theirs["id"]


def test_list_routes_need_an_api_key(app: TestClient, tenant: Tenant) -> None:
    created = create_list(tenant.client)
    assert app.get("/api/v1/lists").status_code == 401
    assert app.get(f"/api/v1/lists/{created['id']}").status_code == 401
    assert app.post("/api/v1/lists", json={"name": "x"}).status_code == 401
