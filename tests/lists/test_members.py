"""List members through HTTP on the real database, and the user-side list routes."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from audience.db import Database
from audience.users.models import User
from tests.factories import create_user
from tests.lists.helpers import LONG_AGO, add_users, age, create_list, error_of, member_ids

# --- members -------------------------------------------------------------------------------


def test_add_users_by_id_user_id_and_email(api: TestClient, database: Database) -> None:
    created = create_list(api)
    age(database, created["id"])
    a, b, c = create_user(api), create_user(api), create_user(api)
    response = add_users(
        api,
        created["id"],
        {"id": a["id"]},
        {"user_id": b["user_id"]},
        {"email": c["email"].upper()},
    )
    assert response.status_code == 200
    assert response.json()["user_count"] == 3
    assert response.json()["updated_at"] > int(LONG_AGO.timestamp())
    assert member_ids(database, created["id"]) == {int(a["id"]), int(b["id"]), int(c["id"])}


def test_adding_users_twice_is_idempotent_and_keeps_updated_at(
    api: TestClient, database: Database
) -> None:
    created = create_list(api)
    user = create_user(api)
    add_users(api, created["id"], {"id": user["id"]})
    age(database, created["id"])
    response = add_users(api, created["id"], {"id": user["id"]}, {"user_id": user["user_id"]})
    assert response.status_code == 200
    assert response.json()["user_count"] == 1
    assert response.json()["updated_at"] == int(LONG_AGO.timestamp())
    assert member_ids(database, created["id"]) == {int(user["id"])}


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"id": "424242"}, "user 424242 not found"),
        ({"id": "x1"}, "user x1 not found"),
        ({"user_id": "nobody"}, "user with user_id 'nobody' not found"),
        ({"email": "no@example.com"}, "user with email 'no@example.com' not found"),
    ],
)
def test_add_users_with_an_unknown_user_is_404_naming_it_and_adds_nobody(
    api: TestClient, database: Database, ref: dict[str, str], message: str
) -> None:
    created = create_list(api)
    known = create_user(api)
    response = add_users(api, created["id"], {"id": known["id"]}, ref)
    assert response.status_code == 404
    assert error_of(response)["message"] == message
    assert error_of(response)["field"] == "users.1"
    assert member_ids(database, created["id"]) == set()


def test_add_users_does_not_find_merged_away_users(api: TestClient, database: Database) -> None:
    created = create_list(api)
    survivor, merged = create_user(api), create_user(api)
    with database.transaction() as session:
        session.execute(
            update(User)
            .where(User.id == int(merged["id"]))
            .values(merged_into_id=int(survivor["id"]))
        )
    assert add_users(api, created["id"], {"user_id": merged["user_id"]}).status_code == 404
    assert member_ids(database, created["id"]) == set()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"users": [{"id": "1", "user_id": "u"}]}, "users.0"),
        ({"users": [{"phone": "+1"}]}, "users.0.phone"),
        ({"users": [{"email": None}]}, "users.0"),
        ({"users": [{"id": "1"}] * 1001}, "users"),
        ({"users": []}, "users"),
        ({"users": {"id": "1"}}, "users"),
    ],
)
def test_add_users_with_a_bad_body_is_422_naming_the_field(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    created = create_list(api)
    response = api.post(f"/api/v1/lists/{created['id']}/users", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_add_more_than_1000_users_is_422_naming_the_limit(api: TestClient) -> None:
    created = create_list(api)
    response = add_users(api, created["id"], *({"id": str(n)} for n in range(1001)))
    assert response.status_code == 422
    assert "1000" in error_of(response)["message"]


def test_add_users_to_an_unknown_list_is_404(api: TestClient) -> None:
    user = create_user(api)
    assert add_users(api, "424242", {"id": user["id"]}).status_code == 404


def test_remove_user(api: TestClient, database: Database) -> None:
    created = create_list(api)
    a, b = create_user(api), create_user(api)
    add_users(api, created["id"], {"id": a["id"]}, {"id": b["id"]})
    age(database, created["id"])
    response = api.delete(f"/api/v1/lists/{created['id']}/users/{a['id']}")
    assert response.status_code == 200
    assert response.json()["user_count"] == 1
    assert response.json()["updated_at"] > int(LONG_AGO.timestamp())
    assert member_ids(database, created["id"]) == {int(b["id"])}


def test_removing_a_user_not_on_the_list_is_idempotent(api: TestClient, database: Database) -> None:
    created = create_list(api)
    user = create_user(api)
    age(database, created["id"])
    response = api.delete(f"/api/v1/lists/{created['id']}/users/{user['id']}")
    assert response.status_code == 200
    assert response.json()["updated_at"] == int(LONG_AGO.timestamp())


@pytest.mark.parametrize(("list_id", "user_id"), [("424242", None), (None, "424242"), (None, "u")])
def test_remove_user_with_unknown_list_or_user_is_404(
    api: TestClient, list_id: str | None, user_id: str | None
) -> None:
    created, user = create_list(api), create_user(api)
    path = f"/api/v1/lists/{list_id or created['id']}/users/{user_id or user['id']}"
    assert api.delete(path).status_code == 404


def test_list_members_is_a_user_list(api: TestClient) -> None:
    created = create_list(api)
    a, b = create_user(api), create_user(api)
    create_user(api)
    add_users(api, created["id"], {"id": b["id"]}, {"id": a["id"]})
    body = api.get(f"/api/v1/lists/{created['id']}/users").json()
    assert body["type"] == "user.list" and body["total_count"] == 2
    assert [u["id"] for u in body["users"]] == [a["id"], b["id"]]
    assert body["users"][0]["type"] == "user"
    assert body["pages"]["type"] == "pages"


def test_list_members_of_an_unknown_list_is_404(api: TestClient) -> None:
    assert api.get("/api/v1/lists/424242/users").status_code == 404


def test_deleting_a_user_removes_their_memberships(api: TestClient, database: Database) -> None:
    created = create_list(api)
    gone, kept = create_user(api), create_user(api)
    add_users(api, created["id"], {"id": gone["id"]}, {"id": kept["id"]})
    assert api.delete(f"/api/v1/users/{gone['id']}").status_code == 200
    assert member_ids(database, created["id"]) == {int(kept["id"])}
    assert api.get(f"/api/v1/lists/{created['id']}").json()["user_count"] == 1


# --- the user-side shortcuts ---------------------------------------------------------------


def test_user_lists_lists_the_lists_a_user_is_on_by_name(api: TestClient) -> None:
    user, other = create_user(api), create_user(api)
    zeta, alpha, elsewhere = create_list(api, "zeta"), create_list(api, "alpha"), create_list(api)
    for item in (zeta, alpha):
        add_users(api, item["id"], {"id": user["id"]})
    add_users(api, elsewhere["id"], {"id": other["id"]})
    body = api.get(f"/api/v1/users/{user['id']}/lists").json()
    assert body["type"] == "list.list" and body["total_count"] == 2
    assert [item["name"] for item in body["lists"]] == ["alpha", "zeta"]
    assert body["lists"][0]["user_count"] == 1


@pytest.mark.parametrize("user_id", ["424242", "me"])
def test_user_lists_of_an_unknown_user_is_404(api: TestClient, user_id: str) -> None:
    assert api.get(f"/api/v1/users/{user_id}/lists").status_code == 404


def test_add_a_user_to_a_list_by_the_shortcut(api: TestClient, database: Database) -> None:
    created = create_list(api)
    user = create_user(api)
    response = api.post(f"/api/v1/users/{user['id']}/lists", json={"id": created["id"]})
    assert response.status_code == 200
    assert response.json()["id"] == created["id"] and response.json()["user_count"] == 1
    again = api.post(f"/api/v1/users/{user['id']}/lists", json={"id": created["id"]})
    assert again.status_code == 200 and again.json()["user_count"] == 1
    assert member_ids(database, created["id"]) == {int(user["id"])}


@pytest.mark.parametrize(
    ("body", "field"), [({}, "id"), ({"id": 5}, "id"), ({"id": "1", "name": "x"}, "name")]
)
def test_add_a_user_to_a_list_with_a_bad_body_is_422(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    user = create_user(api)
    response = api.post(f"/api/v1/users/{user['id']}/lists", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


def test_add_a_user_to_an_unknown_list_or_an_unknown_user_to_a_list_is_404(
    api: TestClient,
) -> None:
    created, user = create_list(api), create_user(api)
    missing_list = api.post(f"/api/v1/users/{user['id']}/lists", json={"id": "424242"})
    assert missing_list.status_code == 404
    missing_user = api.post("/api/v1/users/424242/lists", json={"id": created["id"]})
    assert missing_user.status_code == 404


def test_remove_a_user_from_a_list_by_the_shortcut(api: TestClient, database: Database) -> None:
    created = create_list(api)
    user = create_user(api)
    add_users(api, created["id"], {"id": user["id"]})
    response = api.delete(f"/api/v1/users/{user['id']}/lists/{created['id']}")
    assert response.status_code == 200 and response.json()["user_count"] == 0
    assert member_ids(database, created["id"]) == set()
    assert api.delete(f"/api/v1/users/{user['id']}/lists/424242").status_code == 404
