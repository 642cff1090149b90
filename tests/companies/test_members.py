"""Company membership from both sides, the single-company mode, and environment isolation."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.companies.models import Company, Membership
from audience.db import Database
from audience.environments.models import Environment
from tests.conftest import Tenant
from tests.factories import create_company, create_user


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error.list"
    return dict(body["errors"][0])


def memberships(database: Database) -> set[tuple[int, int]]:
    with database.transaction() as session:
        rows = session.execute(select(Membership.company_id, Membership.user_id)).all()
        return set(rows)


def member_since(database: Database, company: dict[str, Any], user: dict[str, Any]) -> Any:
    with database.transaction() as session:
        membership = session.get(Membership, (int(company["id"]), int(user["id"])))
        assert membership is not None
        return membership.member_since


def user_companies(api: TestClient, user: dict[str, Any]) -> list[str]:
    body = api.get(f"/api/v1/users/{user['id']}").json()
    return [company["company_id"] for company in body["companies"]["companies"]]


def set_membership_mode(database: Database, tenant: Tenant, mode: str) -> None:
    with database.transaction() as session:
        environment = session.get(Environment, tenant.id)
        assert environment is not None
        environment.settings = {**environment.settings, "company_membership": mode}


def join(api: TestClient, company: dict[str, Any], **ref: str) -> Any:
    return api.post(f"/api/v1/companies/{company['id']}/users", json=ref)


def test_add_user_to_company_by_id(api: TestClient, database: Database) -> None:
    company = create_company(api, company_id="acme")
    user = create_user(api)
    response = join(api, company, id=user["id"])
    assert response.status_code == 200
    assert (response.json()["id"], response.json()["user_count"]) == (company["id"], 1)
    assert memberships(database) == {(int(company["id"]), int(user["id"]))}
    assert user_companies(api, user) == ["acme"]


def test_add_user_to_company_by_user_id(api: TestClient, database: Database) -> None:
    company = create_company(api)
    user = create_user(api, user_id="customer-7")
    assert join(api, company, user_id="customer-7").status_code == 200
    assert memberships(database) == {(int(company["id"]), int(user["id"]))}


def test_adding_a_member_twice_keeps_member_since(api: TestClient, database: Database) -> None:
    company = create_company(api)
    user = create_user(api)
    join(api, company, id=user["id"])
    since = member_since(database, company, user)
    response = join(api, company, id=user["id"])
    assert (response.status_code, response.json()["user_count"]) == (200, 1)
    assert member_since(database, company, user) == since


def test_add_user_to_company_by_email(api: TestClient, database: Database) -> None:
    company = create_company(api)
    user = create_user(api, email="Ann@Example.com")
    assert join(api, company, email="ann@example.com").status_code == 200
    assert memberships(database) == {(int(company["id"]), int(user["id"]))}


def test_add_member_by_an_email_several_users_share_is_a_conflict(
    api: TestClient, database: Database
) -> None:
    company = create_company(api)
    create_user(api, email="shared@example.com")
    create_user(api, email="shared@example.com")
    assert join(api, company, email="shared@example.com").status_code == 409
    assert memberships(database) == set()


@pytest.mark.parametrize(
    "body", [{}, {"id": "1", "user_id": "u"}, {"user_id": None}, {"user_id": "a\x00"}]
)
def test_add_member_needs_exactly_one_usable_reference(
    api: TestClient, body: dict[str, Any]
) -> None:
    company = create_company(api)
    response = api.post(f"/api/v1/companies/{company['id']}/users", json=body)
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_field"


def test_add_member_rejects_unknown_fields(api: TestClient) -> None:
    company = create_company(api)
    user = create_user(api)
    response = join(api, company, id=user["id"], member_since="2020-01-01")
    assert response.status_code == 422
    assert error_of(response)["field"] == "member_since"


@pytest.mark.parametrize("ref", [{"id": "999999"}, {"id": "abc"}, {"user_id": "nobody"}])
def test_add_unknown_user_is_404(api: TestClient, database: Database, ref: dict[str, str]) -> None:
    company = create_company(api)
    response = join(api, company, **ref)
    assert response.status_code == 404
    assert memberships(database) == set()


def test_add_member_to_unknown_company_is_404(api: TestClient) -> None:
    user = create_user(api)
    response = api.post("/api/v1/companies/999999/users", json={"id": user["id"]})
    assert response.status_code == 404


def test_list_company_users_returns_a_user_list(api: TestClient) -> None:
    company = create_company(api)
    members = [create_user(api) for _ in range(3)]
    create_user(api)  # not a member
    for user in members:
        join(api, company, id=user["id"])
    body = api.get(
        f"/api/v1/companies/{company['id']}/users", params={"sort": "id", "order": "asc"}
    ).json()
    assert body["type"] == "user.list" and body["total_count"] == 3
    assert [user["id"] for user in body["users"]] == [user["id"] for user in members]
    assert body["users"][0]["companies"]["companies"][0]["id"] == company["id"]


def test_list_company_users_pages_with_a_cursor(api: TestClient) -> None:
    company = create_company(api)
    for _ in range(3):
        join(api, company, id=create_user(api)["id"])
    first = api.get(f"/api/v1/companies/{company['id']}/users", params={"per_page": 2}).json()
    cursor = first["pages"]["next"]["starting_after"]
    rest = api.get(
        f"/api/v1/companies/{company['id']}/users",
        params={"per_page": 2, "starting_after": cursor},
    ).json()
    assert (len(first["users"]), len(rest["users"]), rest["pages"]["page"]) == (2, 1, 2)
    assert {u["id"] for u in first["users"]}.isdisjoint(u["id"] for u in rest["users"])


@pytest.mark.parametrize(("id", "params"), [("999999", {}), ("x", {}), (None, {"sort": "nope"})])
def test_bad_company_users_listing_is_rejected(
    api: TestClient, id: str | None, params: dict[str, str]
) -> None:
    id = id or create_company(api)["id"]
    response = api.get(f"/api/v1/companies/{id}/users", params=params)
    assert response.status_code == (400 if params else 404)


def test_remove_user_from_company(api: TestClient, database: Database) -> None:
    company = create_company(api)
    user = create_user(api)
    join(api, company, id=user["id"])
    response = api.delete(f"/api/v1/companies/{company['id']}/users/{user['id']}")
    assert (response.status_code, response.json()["user_count"]) == (200, 0)
    assert memberships(database) == set()


@pytest.mark.parametrize("who", ["not-a-member", "999999", "abc"])
def test_remove_user_who_is_not_a_member_is_404(api: TestClient, who: str) -> None:
    company = create_company(api)
    user_id = create_user(api)["id"] if who == "not-a-member" else who
    response = api.delete(f"/api/v1/companies/{company['id']}/users/{user_id}")
    assert response.status_code == 404


def test_user_joins_a_company_by_company_id(api: TestClient, database: Database) -> None:
    company = create_company(api, company_id="globex")
    user = create_user(api)
    response = api.post(f"/api/v1/users/{user['id']}/companies", json={"company_id": "globex"})
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == user["id"]
    assert [c["company_id"] for c in body["companies"]["companies"]] == ["globex"]
    assert memberships(database) == {(int(company["id"]), int(user["id"]))}


def test_user_joins_a_company_by_id(api: TestClient) -> None:
    company = create_company(api, company_id="initech")
    user = create_user(api)
    response = api.post(f"/api/v1/users/{user['id']}/companies", json={"id": company["id"]})
    assert response.status_code == 200
    assert user_companies(api, user) == ["initech"]


@pytest.mark.parametrize(
    ("user", "body", "status"),
    [
        ("999999", {"company_id": "known"}, 404),
        ("abc", {"company_id": "known"}, 404),
        (None, {"company_id": "unknown"}, 404),
        (None, {"id": "999999"}, 404),
        (None, {}, 422),
        (None, {"id": "1", "company_id": "known"}, 422),
        (None, {"name": "known"}, 422),
    ],
)
def test_bad_user_side_join_is_rejected(
    api: TestClient, database: Database, user: str | None, body: dict[str, Any], status: int
) -> None:
    create_company(api, company_id="known")
    user = user or create_user(api)["id"]
    response = api.post(f"/api/v1/users/{user}/companies", json=body)
    assert response.status_code == status
    assert memberships(database) == set()


def test_user_leaves_a_company(api: TestClient, database: Database) -> None:
    company = create_company(api)
    user = create_user(api)
    join(api, company, id=user["id"])
    response = api.delete(f"/api/v1/users/{user['id']}/companies/{company['id']}")
    assert response.status_code == 200
    assert response.json()["companies"]["companies"] == []
    assert memberships(database) == set()


def test_user_leaving_a_company_they_are_not_in_is_404(api: TestClient) -> None:
    company = create_company(api)
    user = create_user(api)
    for path in (
        f"/api/v1/users/{user['id']}/companies/{company['id']}",
        f"/api/v1/users/{user['id']}/companies/999999",
        f"/api/v1/users/999999/companies/{company['id']}",
    ):
        assert api.delete(path).status_code == 404, path


def test_list_the_companies_of_a_user(api: TestClient) -> None:
    user = create_user(api)
    companies = [create_company(api) for _ in range(2)]
    create_company(api)
    for company in companies:
        join(api, company, id=user["id"])
    body = api.get(f"/api/v1/users/{user['id']}/companies").json()
    assert body["type"] == "company.list" and body["total_count"] == 2
    assert [c["id"] for c in body["companies"]] == [c["id"] for c in companies]
    assert api.get("/api/v1/users/999999/companies").status_code == 404


def test_users_belong_to_many_companies_by_default(api: TestClient) -> None:
    user = create_user(api)
    for company_id in ("one", "two"):
        join(api, create_company(api, company_id=company_id), id=user["id"])
    assert sorted(user_companies(api, user)) == ["one", "two"]


def test_single_membership_mode_moves_the_user_to_the_new_company(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    set_membership_mode(database, tenant, "single")
    old, new = create_company(api, company_id="old"), create_company(api, company_id="new")
    user, colleague = create_user(api), create_user(api)
    join(api, old, id=user["id"])
    join(api, old, id=colleague["id"])
    response = join(api, new, id=user["id"])
    assert response.json()["user_count"] == 1
    assert user_companies(api, user) == ["new"]
    assert user_companies(api, colleague) == ["old"]
    assert api.get(f"/api/v1/companies/{old['id']}").json()["user_count"] == 1


def test_single_membership_mode_applies_to_the_user_side_route(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    set_membership_mode(database, tenant, "single")
    create_company(api, company_id="first")
    create_company(api, company_id="second")
    user = create_user(api)
    for company_id in ("first", "second"):
        api.post(f"/api/v1/users/{user['id']}/companies", json={"company_id": company_id})
    assert user_companies(api, user) == ["second"]


def test_single_membership_mode_rejoining_keeps_member_since(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    set_membership_mode(database, tenant, "single")
    company = create_company(api)
    user = create_user(api)
    join(api, company, id=user["id"])
    since = member_since(database, company, user)
    join(api, company, id=user["id"])
    assert member_since(database, company, user) == since


def test_deleting_a_user_removes_their_memberships(api: TestClient) -> None:
    company = create_company(api)
    user = create_user(api)
    join(api, company, id=user["id"])
    api.delete(f"/api/v1/users/{user['id']}")
    assert api.get(f"/api/v1/companies/{company['id']}").json()["user_count"] == 0


def test_same_company_id_lives_apart_in_two_environments(
    tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    mine = create_company(tenant.client, company_id="shared", name="Mine")
    theirs = create_company(other_tenant.client, company_id="shared", name="Theirs")
    assert mine["id"] != theirs["id"]
    found = other_tenant.client.get("/api/v1/companies/lookup", params={"company_id": "shared"})
    assert found.json()["name"] == "Theirs"
    with database.transaction() as session:
        assert session.get(Company, int(mine["id"])).name == "Mine"  # type: ignore[union-attr]


def test_another_environments_company_is_not_found_by_any_route(
    tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    theirs = create_company(other_tenant.client, company_id="private", name="Theirs")
    member = create_user(other_tenant.client)
    join(other_tenant.client, theirs, id=member["id"])
    mine = create_user(tenant.client)
    client, path = tenant.client, f"/api/v1/companies/{theirs['id']}"
    responses = [
        client.get(path),
        client.patch(path, json={"name": "Hacked"}),
        client.delete(path),
        client.get("/api/v1/companies/lookup", params={"company_id": "private"}),
        client.patch("/api/v1/companies/lookup?company_id=private", json={"name": "Hacked"}),
        client.delete("/api/v1/companies/lookup?company_id=private"),
        client.get(f"{path}/users"),
        client.post(f"{path}/users", json={"id": mine["id"]}),
        client.delete(f"{path}/users/{member['id']}"),
        client.post(f"/api/v1/users/{mine['id']}/companies", json={"id": theirs["id"]}),
        client.post(f"/api/v1/users/{mine['id']}/companies", json={"company_id": "private"}),
        client.delete(f"/api/v1/users/{member['id']}/companies/{theirs['id']}"),
    ]
    assert [response.status_code for response in responses] == [404] * len(responses)
    assert client.get("/api/v1/companies").json()["total_count"] == 0
    untouched = other_tenant.client.get(path).json()
    assert (untouched["name"], untouched["user_count"]) == ("Theirs", 1)


def test_another_environments_user_cannot_be_added_to_a_company(
    tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    mine = create_company(tenant.client)
    theirs = create_user(other_tenant.client, user_id="foreign")
    for ref in ({"id": theirs["id"]}, {"user_id": "foreign"}):
        assert join(tenant.client, mine, **ref).status_code == 404
    path = f"/api/v1/users/{theirs['id']}/companies"
    assert tenant.client.post(path, json={"id": mine["id"]}).status_code == 404
    assert tenant.client.get(path).status_code == 404
    assert memberships(database) == set()
