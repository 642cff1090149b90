"""/api/v1/mappings: set through the API, applied by the processor to /v1 messages (R-ING-2)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from audience.db import Database
from audience.environments.models import Environment
from tests.conftest import Tenant
from tests.processing.helpers import deliver, events_of, message, process, send, user_by

URL = "/api/v1/mappings"
EMPTY = {"traits": {}, "event_names": {}, "event_properties": {}, "company_traits": {}}
MAPPINGS = {
    "traits": {"mail": "email", "company_size": "size_bucket"},
    "event_names": {"login": "Signed In", "sign_in": "Signed In"},
    "event_properties": {"sku": "product_id", "qty": "quantity"},
    "company_traits": {"tier": "plan", "seats": "licensed_seats"},
}


def put(api: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = api.put(URL, json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def company(api: TestClient, company_id: str) -> dict[str, Any]:
    response = api.get("/api/v1/companies/lookup", params={"company_id": company_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_mappings_are_empty_until_set(api: TestClient) -> None:
    assert api.get(URL).json() == {"type": "mappings", **EMPTY}


def test_put_mappings_apply_to_users_events_and_companies(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    assert put(api, MAPPINGS) == {"type": "mappings", **MAPPINGS}
    assert api.get(URL).json() == {"type": "mappings", **MAPPINGS}
    deliver(
        app,
        database,
        tenant,
        message("identify", userId="u", traits={"mail": "ada@example.com", "company_size": "50"}),
        message("track", userId="u", event="login", properties={"sku": "A1", "qty": 2, "x": 1}),
        message("track", userId="u", event="sign_in"),
        message("track", userId="u", event="Other"),
        message("group", userId="u", groupId="acme", traits={"tier": "gold", "seats": 10}),
    )
    user = user_by(api, user_id="u")
    assert user["email"] == "ada@example.com"
    assert user["custom_attributes"]["size_bucket"] == "50"
    assert "company_size" not in user["custom_attributes"]
    events = events_of(api, user)
    assert sorted(event["name"] for event in events) == ["Other", "Signed In", "Signed In"]
    assert {"product_id": "A1", "quantity": 2, "x": 1} in [event["properties"] for event in events]
    acme = company(api, "acme")
    assert acme["plan"] == "gold"
    assert acme["custom_attributes"] == {"licensed_seats": 10}


def test_mappings_apply_to_messages_already_waiting(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    send(app, tenant, message("track", userId="u", event="login"))
    put(api, {"event_names": {"login": "Signed In"}})
    process(database)
    assert [event["name"] for event in events_of(api, user_by(api, user_id="u"))] == ["Signed In"]


def test_put_replaces_every_section(api: TestClient) -> None:
    put(api, MAPPINGS)
    body = put(api, {"event_names": {"signup": "Signed Up"}})
    assert body == {"type": "mappings", **EMPTY, "event_names": {"signup": "Signed Up"}}
    assert put(api, {}) == {"type": "mappings", **EMPTY}


def test_patch_merges_keys_and_null_removes_one(api: TestClient) -> None:
    put(api, MAPPINGS)
    response = api.patch(
        URL,
        json={
            "traits": {"company_size": None, "fname": "first_name"},
            "event_names": {"login": "Logged In"},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["traits"] == {"mail": "email", "fname": "first_name"}
    assert body["event_names"] == {"login": "Logged In", "sign_in": "Signed In"}
    assert body["event_properties"] == MAPPINGS["event_properties"]
    assert body["company_traits"] == MAPPINGS["company_traits"]
    assert api.get(URL).json() == body


def test_patch_with_a_null_section_empties_it(api: TestClient) -> None:
    put(api, MAPPINGS)
    body = api.patch(URL, json={"event_properties": None}).json()
    assert body["event_properties"] == {}
    assert body["traits"] == MAPPINGS["traits"]


def test_other_environment_settings_are_kept(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    with database.transaction() as session:
        environment = session.get(Environment, tenant.id)
        assert environment is not None
        environment.settings = {"company_membership": "single", "keep_tracking_data": True}
    put(api, MAPPINGS)
    api.patch(URL, json={"traits": {"mail": None}})
    with database.transaction(write=False) as session:
        environment = session.get(Environment, tenant.id)
        assert environment is not None
        settings = environment.settings
    assert settings["company_membership"] == "single" and settings["keep_tracking_data"] is True
    assert settings["traits"] == {"company_size": "size_bucket"}
    assert settings["event_properties"] == MAPPINGS["event_properties"]


def test_each_environment_has_its_own_mappings(
    app: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    put(tenant.client, MAPPINGS)
    assert other_tenant.client.get(URL).json() == {"type": "mappings", **EMPTY}
    deliver(app, database, other_tenant, message("track", userId="u", event="login"))
    theirs = other_tenant.client
    assert [event["name"] for event in events_of(theirs, user_by(theirs, user_id="u"))] == ["login"]


def _error(response: Any) -> dict[str, Any]:
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert len(errors) >= 1
    return dict(errors[0])


def test_two_properties_to_one_property_are_refused_naming_it(api: TestClient) -> None:
    error = _error(api.put(URL, json={"event_properties": {"sku": "product", "id": "product"}}))
    assert error["code"] == "duplicate_target"
    assert error["field"] == "event_properties.id"
    assert "'product'" in error["message"] and "'sku'" in error["message"]


def test_a_patch_that_breaks_one_to_one_properties_changes_nothing(api: TestClient) -> None:
    put(api, MAPPINGS)
    error = _error(api.patch(URL, json={"event_properties": {"item": "product_id"}}))
    assert error["code"] == "duplicate_target"
    assert api.get(URL).json()["event_properties"] == MAPPINGS["event_properties"]


def test_several_event_names_to_one_and_swapped_properties_are_fine(api: TestClient) -> None:
    body = {
        "event_names": {"a": "Same", "b": "Same", "c": "Same"},
        "event_properties": {"x": "y", "y": "x"},
    }
    assert put(api, body)["event_properties"] == {"x": "y", "y": "x"}


@pytest.mark.parametrize(
    "target",
    [
        "id",
        "created_at",
        "updated_at",
        "user_key",
        "environment_id",
        "merged_into_id",
        "session_count",
        "page_views",
        "first_seen_at",
        "last_seen_at",
    ],
)
def test_traits_cannot_map_to_system_fields(api: TestClient, target: str) -> None:
    error = _error(api.put(URL, json={"traits": {"t": target}}))
    assert error["field"] == "traits.t"
    assert "system field" in error["message"]


@pytest.mark.parametrize(
    "target", ["user_id", "tags", "custom_attributes", "utm_source", "a.b", "$x"]
)
def test_traits_cannot_map_to_what_a_trait_cannot_write(api: TestClient, target: str) -> None:
    assert _error(api.put(URL, json={"traits": {"t": target}}))["field"] == "traits.t"


@pytest.mark.parametrize(
    "target", ["email", "first_name", "signed_up_at", "plan", "Lifetime Value"]
)
def test_traits_map_to_standard_and_custom_attributes(api: TestClient, target: str) -> None:
    assert put(api, {"traits": {"t": target}})["traits"] == {"t": target}


@pytest.mark.parametrize(
    "target", ["id", "groupId", "company_id", "updated_at", "phone_numbers", "remote_created_at"]
)
def test_group_traits_cannot_map_to_what_names_or_is_the_company(
    api: TestClient, target: str
) -> None:
    assert _error(api.put(URL, json={"company_traits": {"t": target}}))["field"] == (
        "company_traits.t"
    )


@pytest.mark.parametrize(
    "body",
    [
        {"traits": {"": "email"}},
        {"traits": {"t": ""}},
        {"traits": {"x" * 256: "email"}},
        {"event_names": {"a": "x" * 256}},
        {"event_names": {"a": "   "}},
        {"event_names": {"a\u0000": "b"}},
        {"event_properties": {"a": "b\u0000"}},
        {"event_properties": {"a": "\ud800"}},
        {"event_properties": {"a": 1}},
        {"event_properties": ["a"]},
        {"traits": {f"t{n}": f"c{n}" for n in range(501)}},
        {"segments": {}},
        {"type": "mappings"},
    ],
)
@pytest.mark.parametrize("method", ["PUT", "PATCH"])
def test_bad_bodies_are_422_and_change_nothing(
    api: TestClient, body: dict[str, Any], method: str
) -> None:
    put(api, MAPPINGS)
    response = api.request(
        method, URL, content=json.dumps(body), headers={"content-type": "application/json"}
    )
    _error(response)
    assert api.get(URL).json() == {"type": "mappings", **MAPPINGS}


def test_a_patch_may_not_grow_a_section_past_the_limit(api: TestClient) -> None:
    put(api, {"traits": {f"t{n}": f"c{n}" for n in range(300)}})
    error = _error(api.patch(URL, json={"traits": {f"u{n}": f"d{n}" for n in range(300)}}))
    assert (error["field"], error["code"]) == ("traits", "limit_exceeded")


def test_put_null_values_are_refused(api: TestClient) -> None:
    _error(api.put(URL, json={"traits": {"mail": None}}))
    _error(api.put(URL, json={"traits": None}))


def test_mappings_need_an_api_key(app: TestClient, tenant: Tenant) -> None:
    assert app.get(URL).status_code == 401
    assert app.put(URL, json={}).status_code == 401
