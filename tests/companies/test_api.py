"""The companies REST API through HTTP on the real database: objects, writes, lookup, listing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audience.attributes.models import AttributeDefinition
from audience.companies.models import Company, Membership
from audience.db import Database
from audience.tags.models import CompanyTag, Tag
from tests.conftest import Tenant
from tests.factories import create_company, create_user


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error.list"
    return dict(body["errors"][0])


def company_count(database: Database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(Company)) or 0


def row(database: Database, id: str) -> Company:
    with database.transaction() as session:
        company = session.get(Company, int(id))
        assert company is not None
        return company


FULL = {
    "company_id": "acme-1",
    "name": "Acme Inc.",
    "email": "hello@acme.example",
    "address": "1 Main St",
    "city": "Dublin",
    "region": "Leinster",
    "country": "Ireland",
    "postal_code": "D01",
    "phone_numbers": ["+353 1 234 5678", "+1 202 555 0100"],
    "size": 85,
    "description": "Makes everything",
    "website": "https://acme.example",
    "industry": "Manufacturing",
    "plan": "pro",
    "remote_created_at": 1394531169,
    "custom_attributes": {"seats": 12},
}


def test_create_company_returns_the_intercom_shaped_object(api: TestClient) -> None:
    company = create_company(api, **FULL)
    expected = {key: value for key, value in FULL.items()}
    assert {key: company[key] for key in expected} == expected
    assert company["type"] == "company"
    assert company["id"].isdigit()
    assert isinstance(company["created_at"], int) and isinstance(company["updated_at"], int)
    assert company["user_count"] == 0
    assert company["tags"] == {"type": "tag.list", "tags": []}


def test_create_company_stores_the_row(api: TestClient, database: Database, tenant: Tenant) -> None:
    company = create_company(api, company_id="row-1", size=3, remote_created_at=1394531169)
    stored = row(database, company["id"])
    assert (stored.environment_id, stored.company_id, stored.size) == (tenant.id, "row-1", 3)
    assert stored.remote_created_at == datetime.fromtimestamp(1394531169, UTC)


def test_create_company_with_only_company_id_has_empty_values(api: TestClient) -> None:
    response = api.post("/api/v1/companies", json={"company_id": "bare"})
    assert response.status_code == 200
    company = response.json()
    assert company["name"] is None and company["size"] is None
    assert company["phone_numbers"] == [] and company["custom_attributes"] == {}


def test_create_company_with_existing_company_id_updates_it(
    api: TestClient, database: Database
) -> None:
    first = create_company(api, company_id="same", name="Old", plan="free", size=5)
    second = create_company(api, company_id="same", name="New", size=None)
    assert second["id"] == first["id"]
    assert (second["name"], second["plan"], second["size"]) == ("New", "free", None)
    assert second["created_at"] == first["created_at"]
    assert company_count(database) == 1


def test_remote_created_at_accepts_iso_8601(api: TestClient) -> None:
    company = create_company(api, remote_created_at="2014-03-11T09:46:09Z")
    assert company["remote_created_at"] == 1394531169


def test_remote_created_at_that_cannot_be_expressed_in_utc_is_422(api: TestClient) -> None:
    body = {"company_id": "x", "remote_created_at": "0001-01-01T00:00:00+01:00"}
    response = api.post("/api/v1/companies", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == "remote_created_at"


@pytest.mark.parametrize(
    "field", ["id", "type", "created_at", "updated_at", "user_count", "environment_id", "tags"]
)
def test_system_fields_cannot_be_written(api: TestClient, database: Database, field: str) -> None:
    response = api.post("/api/v1/companies", json={"company_id": "x", field: 5})
    assert response.status_code == 422
    assert error_of(response)["field"] == field
    assert company_count(database) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"company_id": None}, "company_id"),
        ({"company_id": ""}, "company_id"),
        ({"company_id": 5}, "company_id"),
        ({"company_id": " padded "}, "company_id"),
        ({"company_id": "x" * 256}, "company_id"),
        ({"name": "x" * 256}, "name"),
        ({"email": "not-an-email"}, "email"),
        ({"email": " a@b.co"}, "email"),
        ({"address": "x" * 1025}, "address"),
        ({"postal_code": "x" * 65}, "postal_code"),
        ({"size": "many"}, "size"),
        ({"size": -1}, "size"),
        ({"size": True}, "size"),
        ({"size": 1.5}, "size"),
        ({"size": 2**31}, "size"),
        ({"phone_numbers": "+1 202 555 0100"}, "phone_numbers"),
        ({"phone_numbers": [5]}, "phone_numbers.0"),
        ({"phone_numbers": [""]}, "phone_numbers.0"),
        ({"phone_numbers": ["  "]}, "phone_numbers.0"),
        ({"phone_numbers": ["1"] * 21}, "phone_numbers"),
        ({"website": "https://" + "x" * 2041}, "website"),
        ({"description": "x" * 65_536}, "description"),
        ({"remote_created_at": "yesterday"}, "remote_created_at"),
        ({"remote_created_at": 10**20}, "remote_created_at"),
        ({"name": "nul\x00byte"}, "name"),
        ({"custom_attributes": []}, "custom_attributes"),
        ({"custom_attributes": {"nested": {"a": 1}}}, "custom_attributes.nested"),
        ({"custom_attributes": {"bad.name": 1}}, "custom_attributes.bad.name"),
        ({"custom_attributes": {"note": "nul\x00"}}, "custom_attributes.note"),
        ({"custom_attributes": {"long": "x" * 65_536}}, "custom_attributes.long"),
    ],
)
def test_bad_company_fields_are_rejected_naming_the_field(
    api: TestClient, database: Database, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/companies", json={"company_id": "c-1", **body})
    assert response.status_code == 422, response.text
    assert error_of(response)["field"] == field
    assert company_count(database) == 0


def test_create_company_without_company_id_is_422(api: TestClient, database: Database) -> None:
    response = api.post("/api/v1/companies", json={"name": "Nameless"})
    assert response.status_code == 422
    assert error_of(response)["field"] == "company_id"
    assert company_count(database) == 0


def test_invalid_json_is_a_400(api: TestClient) -> None:
    response = api.post(
        "/api/v1/companies",
        content=b'{"company_id": ',
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"


def test_custom_attribute_types_are_inferred_for_companies(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    company = create_company(
        api, custom_attributes={"seats": 5, "paid": True, "tags": ["a"], "since": "2024-01-02"}
    )
    assert company["custom_attributes"] == {
        "seats": 5,
        "paid": True,
        "tags": ["a"],
        "since": "2024-01-02",
    }
    with database.transaction() as session:
        types = dict(
            session.execute(
                select(AttributeDefinition.name, AttributeDefinition.type).where(
                    AttributeDefinition.environment_id == tenant.id,
                    AttributeDefinition.model == "company",
                )
            ).all()
        )
    assert types == {"seats": "number", "paid": "boolean", "tags": "list", "since": "date"}


def test_custom_attribute_values_are_coerced_to_the_defined_type(api: TestClient) -> None:
    create_company(api, custom_attributes={"seats": 5})
    company = create_company(api, custom_attributes={"seats": "7"})
    assert company["custom_attributes"] == {"seats": 7}


def test_custom_attribute_of_the_wrong_type_is_422_and_nothing_is_applied(
    api: TestClient, database: Database
) -> None:
    company = create_company(api, name="Kept", custom_attributes={"seats": 5})
    response = api.patch(
        f"/api/v1/companies/{company['id']}",
        json={"name": "Changed", "custom_attributes": {"seats": "lots"}},
    )
    assert response.status_code == 422
    assert error_of(response)["field"] == "custom_attributes.seats"
    stored = row(database, company["id"])
    assert (stored.name, stored.custom_attributes) == ("Kept", {"seats": 5})


def test_company_and_user_attributes_are_typed_separately(api: TestClient) -> None:
    create_user(api, custom_attributes={"plan": 5})
    company = create_company(api, custom_attributes={"plan": "enterprise"})
    assert company["custom_attributes"] == {"plan": "enterprise"}


def test_custom_attribute_operations_apply(api: TestClient) -> None:
    company = create_company(api, custom_attributes={"seats": 5, "regions": ["eu"], "old": 1})
    changed = api.patch(
        f"/api/v1/companies/{company['id']}",
        json={
            "custom_attributes": {
                "seats": {"$add": 2},
                "regions": {"$union": ["us", "eu"]},
                "old": None,
                "first": {"$set_once": "x"},
            }
        },
    ).json()
    assert changed["custom_attributes"] == {"seats": 7, "regions": ["eu", "us"], "first": "x"}


def test_get_company(api: TestClient) -> None:
    company = create_company(api, name="Got")
    response = api.get(f"/api/v1/companies/{company['id']}")
    assert response.status_code == 200
    assert response.json() == company


@pytest.mark.parametrize("id", ["999999", "abc", "-1", "1e3", "99999999999999999999999"])
def test_unknown_company_ids_are_404(api: TestClient, id: str) -> None:
    for method in ("get", "patch", "delete"):
        kwargs = {"json": {"name": "x"}} if method == "patch" else {}
        response = getattr(api, method)(f"/api/v1/companies/{id}", **kwargs)
        assert response.status_code == 404, (method, response.text)
        assert error_of(response)["code"] == "not_found"


def test_company_shows_its_tags(api: TestClient, database: Database, tenant: Tenant) -> None:
    company = create_company(api)
    with database.transaction() as session:
        tags = [Tag(environment_id=tenant.id, name=name) for name in ("vip", "beta")]
        session.add_all(tags)
        session.flush()
        session.add_all(CompanyTag(tag_id=tag.id, company_id=int(company["id"])) for tag in tags)
        ids = {tag.name: str(tag.id) for tag in tags}
    got = api.get(f"/api/v1/companies/{company['id']}").json()
    assert got["tags"] == {
        "type": "tag.list",
        "tags": [
            {"type": "tag", "id": ids["beta"], "name": "beta"},
            {"type": "tag", "id": ids["vip"], "name": "vip"},
        ],
    }


def test_patch_updates_only_the_given_fields(api: TestClient) -> None:
    company = create_company(api, name="Acme", plan="free", size=5)
    changed = api.patch(f"/api/v1/companies/{company['id']}", json={"plan": "pro"}).json()
    assert (changed["name"], changed["plan"], changed["size"]) == ("Acme", "pro", 5)


def test_patch_with_null_removes_a_value(api: TestClient, database: Database) -> None:
    company = create_company(api, name="Acme", phone_numbers=["1"], remote_created_at=5)
    changed = api.patch(
        f"/api/v1/companies/{company['id']}",
        json={"name": None, "phone_numbers": None, "remote_created_at": None},
    ).json()
    assert (changed["name"], changed["phone_numbers"], changed["remote_created_at"]) == (
        None,
        [],
        None,
    )
    stored = row(database, company["id"])
    assert (stored.name, stored.phone_numbers, stored.remote_created_at) == (None, None, None)


def test_patch_that_changes_something_moves_updated_at(api: TestClient, database: Database) -> None:
    company = create_company(api, name="Acme")
    past = datetime(2020, 1, 1, tzinfo=UTC)
    with database.transaction() as session:
        stored = session.get(Company, int(company["id"]))
        assert stored is not None
        stored.updated_at = past
    same = api.patch(f"/api/v1/companies/{company['id']}", json={"name": "Acme"}).json()
    assert same["updated_at"] == int(past.timestamp())
    changed = api.patch(f"/api/v1/companies/{company['id']}", json={"name": "Other"}).json()
    assert changed["updated_at"] > int(past.timestamp())


def test_patch_can_change_the_company_id(api: TestClient) -> None:
    company = create_company(api, company_id="before")
    changed = api.patch(f"/api/v1/companies/{company['id']}", json={"company_id": "after"})
    assert changed.json()["company_id"] == "after"
    found = api.get("/api/v1/companies/lookup", params={"company_id": "after"})
    assert found.json()["id"] == company["id"]


def test_patch_to_a_taken_company_id_is_a_conflict(api: TestClient) -> None:
    create_company(api, company_id="taken")
    company = create_company(api, company_id="mine")
    response = api.patch(f"/api/v1/companies/{company['id']}", json={"company_id": "taken"})
    assert response.status_code == 409
    assert error_of(response)["field"] == "company_id"


def test_patch_cannot_remove_the_company_id(api: TestClient) -> None:
    company = create_company(api)
    response = api.patch(f"/api/v1/companies/{company['id']}", json={"company_id": None})
    assert response.status_code == 422
    assert error_of(response)["field"] == "company_id"


def test_patch_rejects_unknown_fields(api: TestClient) -> None:
    company = create_company(api)
    response = api.patch(f"/api/v1/companies/{company['id']}", json={"user_count": 9})
    assert response.status_code == 422
    assert error_of(response)["field"] == "user_count"


def test_delete_company_removes_it_with_its_memberships_and_tags(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    company = create_company(api)
    user = create_user(api)
    api.post(f"/api/v1/companies/{company['id']}/users", json={"id": user["id"]})
    with database.transaction() as session:
        tag = Tag(environment_id=tenant.id, name="vip")
        session.add(tag)
        session.flush()
        session.add(CompanyTag(tag_id=tag.id, company_id=int(company["id"])))
    response = api.delete(f"/api/v1/companies/{company['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": company["id"], "object": "company", "deleted": True}
    assert api.get(f"/api/v1/companies/{company['id']}").status_code == 404
    with database.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Membership)) == 0
        assert session.scalar(select(func.count()).select_from(CompanyTag)) == 0
    assert api.get(f"/api/v1/users/{user['id']}").json()["companies"]["companies"] == []


def test_lookup_finds_a_company_by_company_id(api: TestClient) -> None:
    company = create_company(api, company_id="ext-42")
    response = api.get("/api/v1/companies/lookup", params={"company_id": "ext-42"})
    assert response.status_code == 200
    assert response.json()["id"] == company["id"]


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_lookup_of_an_unknown_company_id_is_404(api: TestClient, method: str) -> None:
    kwargs = {"json": {"name": "x"}} if method == "patch" else {}
    response = getattr(api, method)("/api/v1/companies/lookup?company_id=nope", **kwargs)
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


@pytest.mark.parametrize("query", ["", "?company_id=", "?company_id=%00"])
def test_lookup_without_a_usable_company_id_is_400(api: TestClient, query: str) -> None:
    response = api.get(f"/api/v1/companies/lookup{query}")
    assert response.status_code == 400
    assert error_of(response)["field"] == "company_id"


def test_update_by_company_id(api: TestClient) -> None:
    company = create_company(api, company_id="ext-7", plan="free")
    response = api.patch("/api/v1/companies/lookup?company_id=ext-7", json={"plan": "pro"})
    assert response.status_code == 200
    assert (response.json()["id"], response.json()["plan"]) == (company["id"], "pro")


def test_update_by_company_id_rejects_bad_fields(api: TestClient) -> None:
    create_company(api, company_id="ext-8")
    response = api.patch("/api/v1/companies/lookup?company_id=ext-8", json={"size": -5})
    assert response.status_code == 422
    assert error_of(response)["field"] == "size"


def test_delete_by_company_id(api: TestClient, database: Database) -> None:
    company = create_company(api, company_id="ext-9")
    response = api.delete("/api/v1/companies/lookup?company_id=ext-9")
    assert response.json() == {"id": company["id"], "object": "company", "deleted": True}
    assert company_count(database) == 0
