"""The tags REST API through HTTP on the real database: tags themselves, and environments."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.db import Database
from audience.tags.models import Tag
from tests.conftest import Tenant
from tests.factories import create_user
from tests.tags.helpers import (
    create_company,
    create_tag,
    error_of,
    tag_users,
    tagged_company_ids,
    tagged_user_ids,
)

# --- create, read, rename, delete ----------------------------------------------------------


def test_create_tag_returns_the_tag_object(api: TestClient, database: Database) -> None:
    tag = create_tag(api, "VIP")
    assert tag["type"] == "tag"
    assert tag["id"].isdigit()
    assert tag["name"] == "VIP"
    assert isinstance(tag["created_at"], int) and tag["created_at"] > 0
    assert tag["user_count"] == 0 and tag["company_count"] == 0
    with database.transaction() as session:
        row = session.get(Tag, int(tag["id"]))
        assert row is not None and row.name == "VIP"


def test_create_tag_trims_the_name(api: TestClient) -> None:
    assert create_tag(api, "  churn risk \n")["name"] == "churn risk"


def test_create_tag_with_a_name_in_use_is_409(api: TestClient, database: Database) -> None:
    create_tag(api, "VIP")
    response = api.post("/api/v1/tags", json={"name": " VIP "})
    assert response.status_code == 409
    error = error_of(response)
    assert error["code"] == "conflict" and "'VIP'" in error["message"]
    assert error["field"] == "name"
    with database.transaction() as session:
        assert len(list(session.scalars(select(Tag)))) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 256}, "name"),
        ({"name": 12}, "name"),
        ({"name": None}, "name"),
        ({"name": "a\x00b"}, "name"),
        ({}, "name"),
        ({"name": "ok", "id": "5"}, "id"),
        ({"name": "ok", "created_at": 1}, "created_at"),
        ({"name": "ok", "environment_id": 2}, "environment_id"),
    ],
)
def test_create_tag_with_a_bad_body_is_422_naming_the_field(
    api: TestClient, database: Database, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/tags", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field
    with database.transaction() as session:
        assert session.scalar(select(Tag)) is None


def test_create_tag_accepts_a_name_of_255_characters(api: TestClient) -> None:
    assert create_tag(api, "x" * 255)["name"] == "x" * 255


def test_create_tag_with_invalid_json_is_400(api: TestClient) -> None:
    response = api.post(
        "/api/v1/tags", content=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400


def test_get_tag(api: TestClient) -> None:
    tag = create_tag(api, "VIP")
    response = api.get(f"/api/v1/tags/{tag['id']}")
    assert response.status_code == 200
    assert response.json() == tag


@pytest.mark.parametrize("id", ["999999", "abc", "-1", "1.0", "9" * 30])
def test_get_unknown_tag_is_404(api: TestClient, id: str) -> None:
    response = api.get(f"/api/v1/tags/{id}")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_list_tags_sorted_by_name_with_counts(api: TestClient) -> None:
    b, a = create_tag(api, "beta"), create_tag(api, "alpha")
    user = create_user(api)
    tag_users(api, b["id"], {"id": user["id"]})
    response = api.get("/api/v1/tags")
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "tag.list"
    assert body["total_count"] == 2
    assert [t["name"] for t in body["tags"]] == ["alpha", "beta"]
    assert [t["user_count"] for t in body["tags"]] == [0, 1]
    assert body["tags"][0]["id"] == a["id"]
    assert body["pages"] == {
        "type": "pages",
        "next": None,
        "page": 1,
        "per_page": 50,
        "total_pages": 1,
    }


def test_list_tags_q_keeps_names_starting_with_it_in_any_case(api: TestClient) -> None:
    for name in ("Premium", "premium-trial", "not premium", "Pro"):
        create_tag(api, name)
    body = api.get("/api/v1/tags", params={"q": "PREM"}).json()
    assert [t["name"] for t in body["tags"]] == ["Premium", "premium-trial"]
    assert body["total_count"] == 2


def test_list_tags_q_takes_like_wildcards_literally(api: TestClient) -> None:
    create_tag(api, "50% off")
    create_tag(api, "500 club")
    create_tag(api, "a_b")
    create_tag(api, "axb")
    assert [t["name"] for t in api.get("/api/v1/tags?q=50%25").json()["tags"]] == ["50% off"]
    assert [t["name"] for t in api.get("/api/v1/tags?q=a_").json()["tags"]] == ["a_b"]


def test_list_tags_paginates_by_page_and_by_cursor(api: TestClient) -> None:
    for name in ("a", "b", "c", "d", "e"):
        create_tag(api, name)
    first = api.get("/api/v1/tags", params={"per_page": 2}).json()
    assert [t["name"] for t in first["tags"]] == ["a", "b"]
    assert first["pages"]["total_pages"] == 3 and first["total_count"] == 5
    cursor = first["pages"]["next"]["starting_after"]
    second = api.get("/api/v1/tags", params={"per_page": 2, "starting_after": cursor}).json()
    assert [t["name"] for t in second["tags"]] == ["c", "d"]
    third = api.get("/api/v1/tags", params={"per_page": 2, "page": 3}).json()
    assert [t["name"] for t in third["tags"]] == ["e"]
    assert third["pages"]["next"] is None


@pytest.mark.parametrize(
    "params", [{"per_page": 151}, {"page": 0}, {"starting_after": "zz"}, {"q": "a\x00"}]
)
def test_list_tags_with_bad_paging_is_400(api: TestClient, params: dict[str, Any]) -> None:
    assert api.get("/api/v1/tags", params=params).status_code == 400


def test_rename_tag(api: TestClient, database: Database) -> None:
    tag = create_tag(api, "old")
    response = api.patch(f"/api/v1/tags/{tag['id']}", json={"name": " new "})
    assert response.status_code == 200
    assert response.json()["name"] == "new" and response.json()["id"] == tag["id"]
    with database.transaction() as session:
        row = session.get(Tag, int(tag["id"]))
        assert row is not None and row.name == "new"


def test_rename_tag_to_a_name_in_use_is_409(api: TestClient, database: Database) -> None:
    create_tag(api, "taken")
    tag = create_tag(api, "mine")
    response = api.patch(f"/api/v1/tags/{tag['id']}", json={"name": "taken"})
    assert response.status_code == 409
    assert error_of(response)["field"] == "name"
    with database.transaction() as session:
        row = session.get(Tag, int(tag["id"]))
        assert row is not None and row.name == "mine"


def test_rename_tag_to_its_own_name_is_a_no_op(api: TestClient) -> None:
    tag = create_tag(api, "same")
    response = api.patch(f"/api/v1/tags/{tag['id']}", json={"name": "same"})
    assert response.status_code == 200 and response.json() == tag


def test_rename_tag_with_a_bad_body_is_422(api: TestClient) -> None:
    tag = create_tag(api)
    response = api.patch(f"/api/v1/tags/{tag['id']}", json={"name": "x", "user_count": 3})
    assert response.status_code == 422
    assert error_of(response)["field"] == "user_count"


def test_rename_unknown_tag_is_404(api: TestClient) -> None:
    assert api.patch("/api/v1/tags/424242", json={"name": "x"}).status_code == 404


def test_delete_tag_removes_it_and_its_links(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    tag = create_tag(api)
    user = create_user(api)
    company = create_company(database, tenant)
    tag_users(api, tag["id"], {"id": user["id"]})
    api.post(f"/api/v1/tags/{tag['id']}/companies", json={"companies": [{"id": company["id"]}]})
    response = api.delete(f"/api/v1/tags/{tag['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": tag["id"], "object": "tag", "deleted": True}
    assert api.get(f"/api/v1/tags/{tag['id']}").status_code == 404
    assert tagged_user_ids(database, tag["id"]) == set()
    assert tagged_company_ids(database, tag["id"]) == set()
    assert api.get(f"/api/v1/users/{user['id']}").json()["tags"]["tags"] == []


def test_delete_unknown_tag_is_404(api: TestClient) -> None:
    assert api.delete("/api/v1/tags/424242").status_code == 404


# --- environments --------------------------------------------------------------------------


def test_tags_of_another_environment_are_invisible(tenant: Tenant, other_tenant: Tenant) -> None:
    theirs = create_tag(other_tenant.client, "secret")
    mine = create_tag(tenant.client, "mine")
    assert tenant.client.get(f"/api/v1/tags/{theirs['id']}").status_code == 404
    names = [t["name"] for t in tenant.client.get("/api/v1/tags").json()["tags"]]
    assert names == [mine["name"]]
    assert tenant.client.get(f"/api/v1/tags/{theirs['id']}/users").status_code == 404
    assert tenant.client.get(f"/api/v1/tags/{theirs['id']}/companies").status_code == 404


def test_tags_of_another_environment_cannot_be_changed(
    tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    theirs = create_tag(other_tenant.client, "secret")
    their_user = create_user(other_tenant.client)
    tag_users(other_tenant.client, theirs["id"], {"id": their_user["id"]})
    mine = create_user(tenant.client)
    client, tag_id = tenant.client, theirs["id"]
    assert client.patch(f"/api/v1/tags/{tag_id}", json={"name": "x"}).status_code == 404
    assert tag_users(client, tag_id, {"id": mine["id"]}).status_code == 404
    assert client.delete(f"/api/v1/tags/{tag_id}/users/{their_user['id']}").status_code == 404
    assert client.post(f"/api/v1/users/{mine['id']}/tags", json={"id": tag_id}).status_code == 404
    assert client.delete(f"/api/v1/tags/{tag_id}").status_code == 404
    assert other_tenant.client.get(f"/api/v1/tags/{tag_id}").json()["name"] == "secret"
    assert tagged_user_ids(database, tag_id) == {int(their_user["id"])}


def test_a_user_of_another_environment_cannot_be_tagged(
    tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    tag = create_tag(tenant.client)
    same = {"user_id": "twin", "email": "twin@example.com"}
    theirs = create_user(other_tenant.client, **same)
    for ref in ({"id": theirs["id"]}, {"user_id": "twin"}, {"email": "twin@example.com"}):
        assert tag_users(tenant.client, tag["id"], ref).status_code == 404
    shortcut = tenant.client.post(f"/api/v1/users/{theirs['id']}/tags", json={"id": tag["id"]})
    assert shortcut.status_code == 404
    assert tagged_user_ids(database, tag["id"]) == set()


def test_a_company_of_another_environment_cannot_be_tagged(
    tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    tag = create_tag(tenant.client)
    theirs = create_company(database, other_tenant)
    for ref in ({"id": theirs["id"]}, {"company_id": theirs["company_id"]}):
        body = {"companies": [ref]}
        response = tenant.client.post(f"/api/v1/tags/{tag['id']}/companies", json=body)
        assert response.status_code == 404
    assert (
        tenant.client.delete(f"/api/v1/tags/{tag['id']}/companies/{theirs['id']}").status_code
        == 404
    )
    assert tagged_company_ids(database, tag["id"]) == set()


def test_the_same_tag_name_lives_apart_in_two_environments(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    mine, theirs = create_tag(tenant.client, "VIP"), create_tag(other_tenant.client, "VIP")
    assert mine["id"] != theirs["id"]
    user = create_user(tenant.client)
    response = tenant.client.post(f"/api/v1/users/{user['id']}/tags", json={"name": "VIP"})
    assert response.json()["id"] == mine["id"]
    assert other_tenant.client.get(f"/api/v1/tags/{theirs['id']}").json()["user_count"] == 0


def test_tag_routes_need_an_api_key(app: TestClient, tenant: Tenant) -> None:
    tag = create_tag(tenant.client)
    assert app.get("/api/v1/tags").status_code == 401
    assert app.post("/api/v1/tags", json={"name": "x"}).status_code == 401
    assert app.get(f"/api/v1/tags/{tag['id']}").status_code == 401
