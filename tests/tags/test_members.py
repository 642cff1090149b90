"""Tagging users and companies through HTTP on the real database, and the user-side routes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from audience.db import Database
from audience.tags.models import Tag
from audience.users.models import User
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

# --- tagging users -------------------------------------------------------------------------


def test_tag_users_by_id_user_id_and_email(api: TestClient, database: Database) -> None:
    tag = create_tag(api, "VIP")
    a, b, c = create_user(api), create_user(api), create_user(api, email="Carol@Example.com")
    response = tag_users(
        api, tag["id"], {"id": a["id"]}, {"user_id": b["user_id"]}, {"email": "carol@example.COM"}
    )
    assert response.status_code == 200
    assert response.json()["id"] == tag["id"] and response.json()["user_count"] == 3
    assert tagged_user_ids(database, tag["id"]) == {int(a["id"]), int(b["id"]), int(c["id"])}
    user_tags = api.get(f"/api/v1/users/{a['id']}").json()["tags"]
    assert user_tags == {
        "type": "tag.list",
        "tags": [{"type": "tag", "id": tag["id"], "name": "VIP"}],
    }


def test_tag_users_accepts_ids_with_leading_zeros_like_every_other_route(
    api: TestClient, database: Database
) -> None:
    tag = create_tag(api)
    user = create_user(api)
    assert tag_users(api, tag["id"], {"id": "00" + user["id"]}).status_code == 200
    assert tagged_user_ids(database, tag["id"]) == {int(user["id"])}


def test_tagging_users_twice_is_idempotent(api: TestClient, database: Database) -> None:
    tag = create_tag(api)
    user = create_user(api)
    first = tag_users(api, tag["id"], {"id": user["id"]})
    second = tag_users(api, tag["id"], {"id": user["id"]}, {"user_id": user["user_id"]})
    assert first.status_code == second.status_code == 200
    assert second.json()["user_count"] == 1
    assert tagged_user_ids(database, tag["id"]) == {int(user["id"])}


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"id": "999999"}, "user 999999 not found"),
        ({"id": "abc"}, "user abc not found"),
        ({"user_id": "nobody"}, "user with user_id 'nobody' not found"),
        ({"email": "nobody@example.com"}, "user with email 'nobody@example.com' not found"),
    ],
)
def test_tag_users_with_an_unknown_user_is_404_naming_it_and_tags_nobody(
    api: TestClient, database: Database, ref: dict[str, str], message: str
) -> None:
    tag = create_tag(api)
    known = create_user(api)
    response = tag_users(api, tag["id"], {"id": known["id"]}, ref)
    assert response.status_code == 404
    error = error_of(response)
    assert error["message"] == message
    assert error["field"] == "users.1"
    assert tagged_user_ids(database, tag["id"]) == set()


def test_tag_users_with_an_email_several_users_share_is_409(
    api: TestClient, database: Database
) -> None:
    tag = create_tag(api)
    create_user(api, email="shared@example.com")
    create_user(api, email="SHARED@example.com")
    response = tag_users(api, tag["id"], {"email": "shared@example.com"})
    assert response.status_code == 409
    assert error_of(response)["field"] == "users.0"
    assert tagged_user_ids(database, tag["id"]) == set()


def test_tag_users_does_not_find_merged_away_users(api: TestClient, database: Database) -> None:
    tag = create_tag(api)
    survivor, merged = create_user(api), create_user(api)
    with database.transaction() as session:
        session.execute(
            update(User)
            .where(User.id == int(merged["id"]))
            .values(merged_into_id=int(survivor["id"]))
        )
    for ref in ({"id": merged["id"]}, {"user_id": merged["user_id"]}, {"email": merged["email"]}):
        assert tag_users(api, tag["id"], ref).status_code == 404
    assert tagged_user_ids(database, tag["id"]) == set()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"users": [{"id": "1", "email": "a@b.c"}]}, "users.0"),
        ({"users": [{}]}, "users.0"),
        ({"users": [{"name": "x"}]}, "users.0.name"),
        ({"users": [{"id": 5}]}, "users.0.id"),
        ({"users": [{"id": ""}]}, "users.0.id"),
        ({"users": [{"email": "a\x00@b.c"}]}, "users.0.email"),
        ({"users": [{"user_id": "x" * 256}]}, "users.0.user_id"),
        ({"users": "everyone"}, "users"),
        ({"users": []}, "users"),
        ({}, "users"),
        ({"users": [{"id": "1"}], "tag_id": "2"}, "tag_id"),
    ],
)
def test_tag_users_with_a_bad_body_is_422_naming_the_field(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    tag = create_tag(api)
    response = api.post(f"/api/v1/tags/{tag['id']}/users", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_tag_users_with_more_than_1000_is_422_naming_the_limit(
    api: TestClient, database: Database
) -> None:
    tag = create_tag(api)
    response = tag_users(api, tag["id"], *({"id": str(n)} for n in range(1, 1002)))
    assert response.status_code == 422
    error = error_of(response)
    assert error["field"] == "users" and "1000" in error["message"]


def test_tag_users_accepts_1000_at_once(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    tag = create_tag(api)
    with database.transaction() as session:
        users = [
            User(environment_id=tenant.id, user_key=f"bulk-key-{n}", user_id=f"bulk-{n}")
            for n in range(1000)
        ]
        session.add_all(users)
    refs = [{"user_id": f"bulk-{n}"} for n in range(1000)]
    response = api.post(f"/api/v1/tags/{tag['id']}/users", json={"users": refs})
    assert response.status_code == 200, response.text
    assert response.json()["user_count"] == 1000


def test_tag_users_of_an_unknown_tag_is_404(api: TestClient) -> None:
    user = create_user(api)
    assert tag_users(api, "424242", {"id": user["id"]}).status_code == 404


def test_untag_user(api: TestClient, database: Database) -> None:
    tag = create_tag(api)
    a, b = create_user(api), create_user(api)
    tag_users(api, tag["id"], {"id": a["id"]}, {"id": b["id"]})
    response = api.delete(f"/api/v1/tags/{tag['id']}/users/{a['id']}")
    assert response.status_code == 200
    assert response.json()["user_count"] == 1
    assert tagged_user_ids(database, tag["id"]) == {int(b["id"])}


def test_untagging_a_user_without_the_tag_is_idempotent(api: TestClient) -> None:
    tag = create_tag(api)
    user = create_user(api)
    response = api.delete(f"/api/v1/tags/{tag['id']}/users/{user['id']}")
    assert response.status_code == 200 and response.json()["user_count"] == 0


@pytest.mark.parametrize("user_id", ["424242", "abc"])
def test_untag_unknown_user_is_404(api: TestClient, user_id: str) -> None:
    tag = create_tag(api)
    assert api.delete(f"/api/v1/tags/{tag['id']}/users/{user_id}").status_code == 404


def test_untag_user_of_an_unknown_tag_is_404(api: TestClient) -> None:
    user = create_user(api)
    assert api.delete(f"/api/v1/tags/424242/users/{user['id']}").status_code == 404


def test_tagged_users_is_a_user_list(api: TestClient) -> None:
    tag = create_tag(api)
    a, b = create_user(api), create_user(api)
    create_user(api)
    tag_users(api, tag["id"], {"id": b["id"]}, {"id": a["id"]})
    body = api.get(f"/api/v1/tags/{tag['id']}/users", params={"per_page": 1}).json()
    assert body["type"] == "user.list"
    assert body["total_count"] == 2
    assert [u["id"] for u in body["users"]] == [a["id"]]
    assert body["users"][0]["tags"]["tags"][0]["id"] == tag["id"]
    assert body["pages"]["total_pages"] == 2
    cursor = body["pages"]["next"]["starting_after"]
    rest = api.get(f"/api/v1/tags/{tag['id']}/users", params={"starting_after": cursor}).json()
    assert [u["id"] for u in rest["users"]] == [b["id"]]


def test_tagged_users_of_an_unknown_tag_is_404(api: TestClient) -> None:
    assert api.get("/api/v1/tags/424242/users").status_code == 404


def test_deleting_a_user_removes_their_tags(api: TestClient, database: Database) -> None:
    tag = create_tag(api)
    gone, kept = create_user(api), create_user(api)
    tag_users(api, tag["id"], {"id": gone["id"]}, {"id": kept["id"]})
    assert api.delete(f"/api/v1/users/{gone['id']}").status_code == 200
    assert tagged_user_ids(database, tag["id"]) == {int(kept["id"])}
    assert api.get(f"/api/v1/tags/{tag['id']}").json()["user_count"] == 1


# --- tagging companies ---------------------------------------------------------------------


def test_tag_companies_by_id_and_company_id(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    tag = create_tag(api)
    a, b = create_company(database, tenant), create_company(database, tenant)
    response = api.post(
        f"/api/v1/tags/{tag['id']}/companies",
        json={"companies": [{"id": a["id"]}, {"company_id": b["company_id"]}]},
    )
    assert response.status_code == 200
    assert response.json()["company_count"] == 2 and response.json()["user_count"] == 0
    assert tagged_company_ids(database, tag["id"]) == {int(a["id"]), int(b["id"])}


def test_tagging_companies_twice_is_idempotent(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    tag = create_tag(api)
    company = create_company(database, tenant)
    body = {"companies": [{"id": company["id"]}, {"company_id": company["company_id"]}]}
    assert api.post(f"/api/v1/tags/{tag['id']}/companies", json=body).status_code == 200
    response = api.post(f"/api/v1/tags/{tag['id']}/companies", json=body)
    assert response.status_code == 200 and response.json()["company_count"] == 1
    assert tagged_company_ids(database, tag["id"]) == {int(company["id"])}


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"id": "999999"}, "company 999999 not found"),
        ({"company_id": "nope"}, "company with company_id 'nope' not found"),
    ],
)
def test_tag_companies_with_an_unknown_company_is_404_and_tags_none(
    api: TestClient, database: Database, tenant: Tenant, ref: dict[str, str], message: str
) -> None:
    tag = create_tag(api)
    known = create_company(database, tenant)
    response = api.post(
        f"/api/v1/tags/{tag['id']}/companies", json={"companies": [{"id": known["id"]}, ref]}
    )
    assert response.status_code == 404
    assert error_of(response)["message"] == message
    assert error_of(response)["field"] == "companies.1"
    assert tagged_company_ids(database, tag["id"]) == set()


@pytest.mark.parametrize(
    "body",
    [
        {"companies": [{"id": "1", "company_id": "x"}]},
        {"companies": [{"email": "x@y.z"}]},
        {"companies": [{"id": "1"}] * 1001},
        {"companies": []},
    ],
)
def test_tag_companies_with_a_bad_body_is_422(api: TestClient, body: dict[str, Any]) -> None:
    tag = create_tag(api)
    response = api.post(f"/api/v1/tags/{tag['id']}/companies", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"].startswith("companies")


def test_untag_company(api: TestClient, database: Database, tenant: Tenant) -> None:
    tag = create_tag(api)
    company = create_company(database, tenant)
    api.post(f"/api/v1/tags/{tag['id']}/companies", json={"companies": [{"id": company["id"]}]})
    response = api.delete(f"/api/v1/tags/{tag['id']}/companies/{company['id']}")
    assert response.status_code == 200 and response.json()["company_count"] == 0
    assert tagged_company_ids(database, tag["id"]) == set()
    again = api.delete(f"/api/v1/tags/{tag['id']}/companies/{company['id']}")
    assert again.status_code == 200


@pytest.mark.parametrize("company_id", ["424242", "abc"])
def test_untag_unknown_company_is_404(api: TestClient, company_id: str) -> None:
    tag = create_tag(api)
    assert api.delete(f"/api/v1/tags/{tag['id']}/companies/{company_id}").status_code == 404


def test_tagged_companies_is_a_company_list(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    tag = create_tag(api)
    a, b = create_company(database, tenant), create_company(database, tenant)
    create_company(database, tenant)
    body = {"companies": [{"id": b["id"]}, {"id": a["id"]}]}
    api.post(f"/api/v1/tags/{tag['id']}/companies", json=body)
    listing = api.get(f"/api/v1/tags/{tag['id']}/companies").json()
    assert listing["type"] == "company.list" and listing["total_count"] == 2
    assert [c["id"] for c in listing["companies"]] == [a["id"], b["id"]]
    assert listing["companies"][0]["type"] == "company"
    assert listing["companies"][0]["company_id"] == a["company_id"]
    assert listing["pages"]["type"] == "pages"


def test_tagged_companies_of_an_unknown_tag_is_404(api: TestClient) -> None:
    assert api.get("/api/v1/tags/424242/companies").status_code == 404


# --- the user-side shortcuts ---------------------------------------------------------------


def test_tag_a_user_by_tag_id(api: TestClient, database: Database) -> None:
    tag = create_tag(api)
    user = create_user(api)
    response = api.post(f"/api/v1/users/{user['id']}/tags", json={"id": tag["id"]})
    assert response.status_code == 200
    assert response.json()["id"] == tag["id"] and response.json()["user_count"] == 1
    assert tagged_user_ids(database, tag["id"]) == {int(user["id"])}


def test_tag_a_user_by_name_creates_the_missing_tag(api: TestClient, database: Database) -> None:
    user = create_user(api)
    response = api.post(f"/api/v1/users/{user['id']}/tags", json={"name": " New tag "})
    assert response.status_code == 200
    tag = response.json()
    assert tag["name"] == "New tag" and tag["user_count"] == 1
    assert tagged_user_ids(database, tag["id"]) == {int(user["id"])}


def test_tag_a_user_by_name_reuses_the_existing_tag(api: TestClient, database: Database) -> None:
    tag = create_tag(api, "VIP")
    user = create_user(api)
    response = api.post(f"/api/v1/users/{user['id']}/tags", json={"name": "VIP"})
    assert response.status_code == 200 and response.json()["id"] == tag["id"]
    with database.transaction() as session:
        assert len(list(session.scalars(select(Tag)))) == 1


def test_tagging_a_user_twice_by_the_shortcut_is_idempotent(
    api: TestClient, database: Database
) -> None:
    tag = create_tag(api)
    user = create_user(api)
    api.post(f"/api/v1/users/{user['id']}/tags", json={"id": tag["id"]})
    response = api.post(f"/api/v1/users/{user['id']}/tags", json={"name": tag["name"]})
    assert response.status_code == 200 and response.json()["user_count"] == 1
    assert tagged_user_ids(database, tag["id"]) == {int(user["id"])}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "1", "name": "x"}, "body"),
        ({}, "body"),
        ({"name": "  "}, "name"),
        ({"id": 1}, "id"),
        ({"tag": "x"}, "tag"),
    ],
)
def test_tag_a_user_with_a_bad_body_is_422(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    user = create_user(api)
    response = api.post(f"/api/v1/users/{user['id']}/tags", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_tag_an_unknown_user_is_404_and_creates_no_tag(api: TestClient, database: Database) -> None:
    response = api.post("/api/v1/users/424242/tags", json={"name": "new"})
    assert response.status_code == 404
    with database.transaction() as session:
        assert session.scalar(select(Tag)) is None


@pytest.mark.parametrize("tag_id", ["424242", "abc"])
def test_tag_a_user_with_an_unknown_tag_id_is_404(api: TestClient, tag_id: str) -> None:
    user = create_user(api)
    assert api.post(f"/api/v1/users/{user['id']}/tags", json={"id": tag_id}).status_code == 404


def test_untag_a_user_by_the_shortcut(api: TestClient, database: Database) -> None:
    tag = create_tag(api)
    user = create_user(api)
    tag_users(api, tag["id"], {"id": user["id"]})
    response = api.delete(f"/api/v1/users/{user['id']}/tags/{tag['id']}")
    assert response.status_code == 200 and response.json()["user_count"] == 0
    assert tagged_user_ids(database, tag["id"]) == set()
    assert api.delete(f"/api/v1/users/{user['id']}/tags/424242").status_code == 404
    assert api.delete(f"/api/v1/users/424242/tags/{tag['id']}").status_code == 404


def test_user_tags_lists_the_tags_of_a_user_by_name(api: TestClient) -> None:
    user, other = create_user(api), create_user(api)
    for name in ("zeta", "alpha"):
        api.post(f"/api/v1/users/{user['id']}/tags", json={"name": name})
    api.post(f"/api/v1/users/{other['id']}/tags", json={"name": "other"})
    body = api.get(f"/api/v1/users/{user['id']}/tags").json()
    assert body["type"] == "tag.list" and body["total_count"] == 2
    assert [t["name"] for t in body["tags"]] == ["alpha", "zeta"]
    assert api.get("/api/v1/users/424242/tags").status_code == 404
