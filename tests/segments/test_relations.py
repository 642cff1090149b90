"""Company, tag and list conditions; segment conditions wait for segments."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.factories import create_company
from tests.segments.helpers import define, error_of, found, matches, search, user


def join(api: TestClient, user_id: str, company: dict[str, Any]) -> None:
    response = api.post(f"/api/v1/users/{user_id}/companies", json={"id": company["id"]})
    assert response.status_code == 200, response.text


def tag(api: TestClient, user_id: str, name: str) -> str:
    response = api.post(f"/api/v1/users/{user_id}/tags", json={"name": name})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def add_to_list(api: TestClient, user_id: str, name: str) -> str:
    response = api.post("/api/v1/lists", json={"name": name})
    list_id = response.json()["id"] if response.status_code == 200 else None
    if list_id is None:
        listing = api.get("/api/v1/lists", params={"q": name}).json()["lists"]
        list_id = next(item["id"] for item in listing if item["name"] == name)
    added = api.post(f"/api/v1/users/{user_id}/lists", json={"id": list_id})
    assert added.status_code == 200, added.text
    return str(list_id)


# --- companies -------------------------------------------------------------------------------


@pytest.fixture
def staff(api: TestClient) -> dict[str, str]:
    define(api, "mrr", "number", model="company")
    define(api, "segment", "string", model="company")
    pro = create_company(api, plan="Pro", size=50, custom_attributes={"mrr": 900, "segment": "b2b"})
    free = create_company(api, plan="free", size=3, custom_attributes={"mrr": 0})
    people = {"pro": user(api), "free": user(api), "both": user(api), "none": user(api)}
    join(api, people["pro"], pro)
    join(api, people["free"], free)
    join(api, people["both"], pro)
    join(api, people["both"], free)
    return people


@pytest.mark.parametrize(
    ("field", "op", "value", "expected"),
    [
        ("company.plan", "eq", "pro", {"pro", "both"}),
        ("company.plan", "ne", "pro", {"free", "both"}),  # any company that isn't on pro
        ("company.size", "gt", 10, {"pro", "both"}),
        ("company.size", "between", [1, 5], {"free", "both"}),
        ("company.mrr", "gte", 100, {"pro", "both"}),
        ("company.custom_attributes.mrr", "eq", 0, {"free", "both"}),
        ("company.segment", "exists", ..., {"pro", "both"}),
        ("company.segment", "not_exists", ..., {"free", "both"}),
        ("company.id", "exists", ..., {"pro", "free", "both"}),
        ("company.created_at", "within_last", {"days": 1}, {"pro", "free", "both"}),
        ("company.name", "starts_with", "acm", {"pro", "free", "both"}),
    ],
)
def test_company_conditions_match_when_any_company_does(
    api: TestClient, staff: dict[str, str], field: str, op: str, value: Any, expected: set[str]
) -> None:
    assert matches(api, field, op, value) == {staff[name] for name in expected}


def test_no_company_on_a_plan_is_a_not(api: TestClient, staff: dict[str, str]) -> None:
    condition = {"not": {"field": "company.plan", "op": "eq", "value": "pro"}}
    assert found(api, condition) == {staff["free"], staff["none"]}


def test_an_unknown_company_attribute_is_a_400(api: TestClient, staff: dict[str, str]) -> None:
    response = search(api, {"field": "company.nope", "op": "eq", "value": 1})
    assert response.status_code == 400
    assert error_of(response)["field"] == "filter.field"


# --- tags and lists --------------------------------------------------------------------------


@pytest.fixture
def tagged(api: TestClient) -> dict[str, str]:
    people = {"vip": user(api), "churn": user(api), "both": user(api), "none": user(api)}
    tag(api, people["vip"], "VIP")
    tag(api, people["churn"], "churn risk")
    tag(api, people["both"], "VIP")
    tag(api, people["both"], "churn risk")
    return people


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "VIP", {"vip", "both"}),
        ("=", {"name": "churn risk"}, {"churn", "both"}),
        ("ne", "VIP", {"churn", "none"}),
        ("in", ["VIP", "churn risk"], {"vip", "churn", "both"}),
        ("IN", ["nothing"], set()),
        ("nin", ["VIP", "churn risk"], {"none"}),
        ("NIN", ["churn risk"], {"vip", "none"}),
        ("exists", ..., {"vip", "churn", "both"}),
        ("not_exists", ..., {"none"}),
    ],
)
def test_tag_conditions(
    api: TestClient, tagged: dict[str, str], op: str, value: Any, expected: set[str]
) -> None:
    assert matches(api, "tags", op, value) == {tagged[name] for name in expected}


def test_tags_by_id(api: TestClient, tagged: dict[str, str]) -> None:
    vip = api.get("/api/v1/tags", params={"q": "VIP"}).json()["tags"][0]["id"]
    assert matches(api, "tags", "eq", int(vip)) == {tagged["vip"], tagged["both"]}
    assert matches(api, "tags", "in", [{"id": vip}]) == {tagged["vip"], tagged["both"]}


def test_list_conditions(api: TestClient) -> None:
    on = user(api)
    other = user(api)
    off = user(api)
    list_id = add_to_list(api, on, "Beta")
    add_to_list(api, other, "Newsletter")
    assert matches(api, "lists", "eq", "Beta") == {on}
    assert matches(api, "lists", "in", [int(list_id), "Newsletter"]) == {on, other}
    assert matches(api, "lists", "nin", [{"id": list_id}]) == {other, off}
    assert matches(api, "lists", "not_exists") == {off}


def test_another_environments_tags_companies_and_events_never_match(
    api: TestClient, other_tenant: Tenant
) -> None:
    mine = user(api)
    tag(api, mine, "VIP")
    theirs = user(other_tenant.client)
    tag(other_tenant.client, theirs, "VIP")
    join(other_tenant.client, theirs, create_company(other_tenant.client, plan="pro"))
    response = other_tenant.client.post(
        f"/api/v1/users/{theirs}/events", json={"name": "Purchased"}
    )
    assert response.status_code == 200
    assert matches(api, "tags", "eq", "VIP") == {mine}
    assert found(api, {"field": "company.plan", "op": "eq", "value": "pro"}) == set()
    assert found(api, {"event": "Purchased"}) == set()
    assert found(other_tenant.client, {"field": "tags", "op": "eq", "value": "VIP"}) == {theirs}
