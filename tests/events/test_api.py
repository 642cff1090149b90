"""Events REST API: recording events and reading one, on the real database."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audience.db import Database
from audience.events.models import KINDS, Event
from audience.users.models import Identity
from tests.conftest import Tenant
from tests.events.helpers import T0, error_fields, event_rows, track, user_row
from tests.factories import create_user, unique

# --- create ---------------------------------------------------------------------------------


def test_create_event_returns_the_event_object(api: TestClient) -> None:
    user = create_user(api, user_id="u-42")
    body = {
        "user": {"id": user["id"]},
        "name": "Order Completed",
        "kind": "track",
        "timestamp": T0,
        "properties": {"total": 42.5, "items": ["a", "b"]},
        "message_id": "m-1",
        "page_url": "https://shop.example/checkout",
        "session_id": "s-1",
    }
    response = api.post("/api/v1/events", json=body)
    assert response.status_code == 200, response.text
    event = response.json()
    assert event == {
        "type": "event",
        "id": event["id"],
        "name": "Order Completed",
        "kind": "track",
        "timestamp": T0,
        "timestamp_ms": T0 * 1000,
        "received_at": event["received_at"],
        "message_id": "m-1",
        "user": {"type": "user", "id": user["id"], "user_id": "u-42"},
        "company_id": None,
        "properties": {"total": 42.5, "items": ["a", "b"]},
        "page_url": "https://shop.example/checkout",
        "session_id": "s-1",
        "source": "api",
        "library": None,
    }
    assert isinstance(event["id"], str)
    assert abs(event["received_at"] - time.time()) < 60


def test_create_event_stores_one_row_in_the_tenants_environment(
    api: TestClient, tenant: Tenant, database: Database
) -> None:
    user = create_user(api)
    event = track(api, user, name="Viewed", properties={"plan": "pro"}, timestamp=T0)
    (row,) = event_rows(database)
    assert row.id == int(event["id"])
    assert row.environment_id == tenant.id
    assert row.user_id == int(user["id"])
    assert (row.name, row.kind, row.source, row.properties) == (
        "Viewed",
        "track",
        "api",
        {"plan": "pro"},
    )
    assert row.timestamp == datetime.fromtimestamp(T0, UTC)


@pytest.mark.parametrize("key", ["user_id", "email", "phone", "user_key"])
def test_create_event_finds_the_user_by_an_identity(api: TestClient, key: str) -> None:
    user = create_user(api, phone="+14155550123")
    response = api.post("/api/v1/events", json={"user": {key: user[key]}, "name": "Clicked"})
    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] == user["id"]


def test_create_event_finds_the_user_by_anonymous_id(
    api: TestClient, tenant: Tenant, database: Database
) -> None:
    user = create_user(api)
    with database.transaction() as session:
        session.add(
            Identity(
                environment_id=tenant.id,
                user_id=int(user["id"]),
                kind="anonymous_id",
                value="anon-1",
            )
        )
    response = api.post("/api/v1/events", json={"user": {"anonymous_id": "anon-1"}, "name": "X"})
    assert response.status_code == 200, response.text
    assert response.json()["user"]["id"] == user["id"]


def test_create_event_defaults_to_track_now_and_a_generated_message_id(api: TestClient) -> None:
    before = int(time.time())
    event = track(api, create_user(api))
    assert event["kind"] == "track"
    assert before - 1 <= event["timestamp"] <= int(time.time()) + 1
    assert event["message_id"]
    assert event["properties"] == {}


def test_create_event_accepts_an_iso_timestamp_with_offset(api: TestClient) -> None:
    event = track(api, create_user(api), timestamp="2023-11-15T00:13:20.250+02:00")
    assert event["timestamp"] == T0
    assert event["timestamp_ms"] == T0 * 1000 + 250


def test_create_event_keeps_milliseconds_of_a_fractional_unix_timestamp(
    api: TestClient, database: Database
) -> None:
    event = track(api, create_user(api), timestamp=T0 + 0.123)
    assert (event["timestamp"], event["timestamp_ms"]) == (T0, T0 * 1000 + 123)
    (row,) = event_rows(database)
    assert row.timestamp == datetime.fromtimestamp(T0 + 0.123, UTC)


@pytest.mark.parametrize("kind", KINDS)
def test_create_event_accepts_every_kind(api: TestClient, kind: str) -> None:
    assert track(api, create_user(api), kind=kind)["kind"] == kind


def test_create_event_more_than_24_hours_ahead_is_rejected(
    api: TestClient, database: Database
) -> None:
    response = api.post(
        f"/api/v1/users/{create_user(api)['id']}/events",
        json={"name": "Late", "timestamp": int(time.time()) + 25 * 3600},
    )
    assert response.status_code == 422
    assert error_fields(response) == ["timestamp"]
    assert event_rows(database) == []


def test_create_event_less_than_24_hours_ahead_is_accepted(api: TestClient) -> None:
    ahead = int(time.time()) + 23 * 3600
    assert track(api, create_user(api), timestamp=ahead)["timestamp"] == ahead


def test_repeated_message_id_returns_the_stored_event_without_a_second_row(
    api: TestClient, database: Database
) -> None:
    user = create_user(api)
    first = track(api, user, name="Paid", message_id="msg-1", properties={"n": 1})
    again = track(api, user, name="Paid twice", message_id="msg-1", properties={"n": 2})
    assert again == first
    rows = event_rows(database)
    assert [(row.name, row.properties) for row in rows] == [("Paid", {"n": 1})]


def test_repeated_message_id_through_either_route_is_deduplicated(
    api: TestClient, database: Database
) -> None:
    user = create_user(api)
    first = track(api, user, message_id="msg-2")
    response = api.post(
        "/api/v1/events", json={"user": {"id": user["id"]}, "name": "Other", "message_id": "msg-2"}
    )
    assert response.status_code == 200
    assert response.json()["id"] == first["id"]
    assert len(event_rows(database)) == 1


def test_message_id_is_deduplicated_per_environment(
    api: TestClient, other_tenant: Tenant, database: Database
) -> None:
    mine = track(api, create_user(api), message_id="shared")
    theirs = track(other_tenant.client, create_user(other_tenant.client), message_id="shared")
    assert theirs["id"] != mine["id"]
    assert len(event_rows(database, message_id="shared")) == 2


def test_properties_over_10_kb_are_rejected_naming_the_limit(
    api: TestClient, database: Database
) -> None:
    response = api.post(
        f"/api/v1/users/{create_user(api)['id']}/events",
        json={"name": "Big", "properties": {"blob": "x" * 10_240}},
    )
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "properties"
    assert error["code"] == "limit_exceeded"
    assert "10 KB" in error["message"]
    assert event_rows(database) == []


def test_properties_of_exactly_10_kb_are_accepted(api: TestClient) -> None:
    padding = 10_240 - len('{"blob":""}')
    event = track(api, create_user(api), properties={"blob": "x" * padding})
    assert len(event["properties"]["blob"]) == padding


def test_properties_nested_deeper_than_10_levels_are_rejected(api: TestClient) -> None:
    nested: dict[str, Any] = {"leaf": 1}
    for _ in range(10):
        nested = {"n": nested}
    response = api.post(
        f"/api/v1/users/{create_user(api)['id']}/events",
        json={"name": "Deep", "properties": nested},
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "limit_exceeded"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "X", "properties": {"nul": "a\u0000b"}},
        {"name": "X", "properties": {"a\u0000": 1}},
        {"name": "X", "properties": {"x": "\ud800"}},
        {"name": "X\u0000"},
        {"name": "X", "message_id": "m\u0000"},
    ],
)
def test_unstorable_text_is_rejected_not_a_server_error(
    api: TestClient, body: dict[str, Any]
) -> None:
    # Sent escaped (\u0000, \ud800): valid JSON that neither database can store.
    response = api.post(
        f"/api/v1/users/{create_user(api)['id']}/events",
        content=json.dumps(body),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422


def test_non_finite_property_numbers_are_rejected(api: TestClient) -> None:
    user = create_user(api)
    response = api.post(
        f"/api/v1/users/{user['id']}/events",
        content='{"name": "X", "properties": {"x": NaN}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert error_fields(response) == ["properties.x"]


def test_unknown_fields_are_rejected(api: TestClient) -> None:
    user = create_user(api)
    for body in ({"name": "X", "environment_id": 2}, {"name": "X", "user": {"id": user["id"]}}):
        response = api.post(f"/api/v1/users/{user['id']}/events", json=body)
        assert response.status_code == 422
        assert response.json()["errors"][0]["code"] == "invalid_field"
    response = api.post(
        "/api/v1/events", json={"user": {"id": user["id"], "role": "x"}, "name": "X"}
    )
    assert response.status_code == 422
    assert error_fields(response) == ["user.role"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": 5}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 256}, "name"),
        ({}, "name"),
        ({"name": "X", "kind": "identify"}, "kind"),
        ({"name": "X", "timestamp": "yesterday"}, "timestamp"),
        ({"name": "X", "timestamp": True}, "timestamp"),
        ({"name": "X", "timestamp": 1e300}, "timestamp"),
        ({"name": "X", "timestamp": "0001-01-01T00:00:00+01:00"}, "timestamp"),
        ({"name": "X", "properties": [1, 2]}, "properties"),
        ({"name": "X", "properties": "text"}, "properties"),
        ({"name": "X", "message_id": "m" * 101}, "message_id"),
        ({"name": "X", "message_id": ""}, "message_id"),
        ({"name": "X", "page_url": 7}, "page_url"),
        ({"name": "X", "session_id": ["s"]}, "session_id"),
    ],
)
def test_invalid_body_is_a_422_naming_the_field(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    response = api.post(f"/api/v1/users/{create_user(api)['id']}/events", json=body)
    assert response.status_code == 422, response.text
    assert field in error_fields(response)


def test_body_that_is_not_json_is_a_400(api: TestClient) -> None:
    response = api.post(
        f"/api/v1/users/{create_user(api)['id']}/events",
        content="{",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400


@pytest.mark.parametrize(
    "user", [{}, {"id": "1", "email": "a@example.com"}, {"id": None}, "1", None]
)
def test_event_must_name_exactly_one_user_key(api: TestClient, user: Any) -> None:
    response = api.post("/api/v1/events", json={"user": user, "name": "X"})
    assert response.status_code == 422
    assert error_fields(response) == ["user"]


def test_event_without_user_is_rejected(api: TestClient) -> None:
    response = api.post("/api/v1/events", json={"name": "X"})
    assert response.status_code == 422
    assert error_fields(response) == ["user"]


@pytest.mark.parametrize(
    "user", [{"id": "999999"}, {"id": "abc"}, {"user_id": "nobody"}, {"email": "no@example.com"}]
)
def test_event_for_an_unknown_user_is_a_404(
    api: TestClient, database: Database, user: dict[str, str]
) -> None:
    create_user(api)
    response = api.post("/api/v1/events", json={"user": user, "name": "X"})
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"
    assert event_rows(database) == []


@pytest.mark.parametrize("id", ["999999", "abc", "-1"])
def test_user_event_for_an_unknown_user_is_a_404(api: TestClient, id: str) -> None:
    assert api.post(f"/api/v1/users/{id}/events", json={"name": "X"}).status_code == 404


def test_event_for_an_email_several_users_share_is_a_409(
    api: TestClient, database: Database
) -> None:
    create_user(api, email="shared@example.com")
    create_user(api, email="Shared@example.com")
    response = api.post(
        "/api/v1/events", json={"user": {"email": "shared@example.com"}, "name": "X"}
    )
    assert response.status_code == 409
    assert error_fields(response) == ["email"]
    assert event_rows(database) == []


def test_first_event_sets_first_and_last_seen(api: TestClient, database: Database) -> None:
    user = create_user(api)
    track(api, user, timestamp=T0)
    row = user_row(database, user["id"])
    assert row.first_seen_at == row.last_seen_at == datetime.fromtimestamp(T0, UTC)


def test_later_event_moves_last_seen_and_keeps_first_seen(
    api: TestClient, database: Database
) -> None:
    user = create_user(api)
    track(api, user, timestamp=T0)
    track(api, user, timestamp=T0 + 60)
    row = user_row(database, user["id"])
    assert row.first_seen_at == datetime.fromtimestamp(T0, UTC)
    assert row.last_seen_at == datetime.fromtimestamp(T0 + 60, UTC)


def test_older_event_does_not_move_last_seen_back(api: TestClient, database: Database) -> None:
    user = create_user(api)
    track(api, user, timestamp=T0)
    track(api, user, timestamp=T0 - 3600)
    row = user_row(database, user["id"])
    assert row.last_seen_at == datetime.fromtimestamp(T0, UTC)


def test_repeated_message_id_does_not_move_last_seen(api: TestClient, database: Database) -> None:
    user = create_user(api)
    track(api, user, timestamp=T0, message_id="once")
    track(api, user, timestamp=T0 + 600, message_id="once")
    assert user_row(database, user["id"]).last_seen_at == datetime.fromtimestamp(T0, UTC)


# --- read -------------------------------------------------------------------------------------


def test_get_event_returns_it(api: TestClient) -> None:
    created = track(api, create_user(api), properties={"a": 1})
    response = api.get(f"/api/v1/events/{created['id']}")
    assert response.status_code == 200
    assert response.json() == created


@pytest.mark.parametrize("id", ["999999", "abc", "1.5", "9" * 40])
def test_get_unknown_event_is_a_404(api: TestClient, id: str) -> None:
    track(api, create_user(api))
    response = api.get(f"/api/v1/events/{id}")
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "not_found"


# --- tenants, auth, deletion ------------------------------------------------------------------


def test_other_tenant_cannot_read_this_tenants_events(
    api: TestClient, other_tenant: Tenant
) -> None:
    user = create_user(api)
    event = track(api, user)
    other = other_tenant.client
    assert other.get(f"/api/v1/events/{event['id']}").status_code == 404
    assert other.get(f"/api/v1/users/{user['id']}/events").status_code == 404
    assert other.get("/api/v1/events", params={"user_id": user["id"]}).status_code == 404
    assert other.get("/api/v1/events").json()["total_count"] == 0


def test_other_tenant_cannot_create_events_for_this_tenants_users(
    api: TestClient, other_tenant: Tenant, database: Database
) -> None:
    user = create_user(api)
    other = other_tenant.client
    assert other.post(f"/api/v1/users/{user['id']}/events", json={"name": "X"}).status_code == 404
    for key in ("id", "user_id", "email", "user_key"):
        response = other.post("/api/v1/events", json={"user": {key: user[key]}, "name": "X"})
        assert response.status_code == 404, key
    assert event_rows(database) == []


def test_events_routes_require_an_api_key(app: TestClient) -> None:
    for method, url in (
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/events/1"),
        ("POST", "/api/v1/events"),
        ("GET", "/api/v1/users/1/events"),
        ("POST", "/api/v1/users/1/events"),
    ):
        response = app.request(method, url, json={"name": "X"})
        assert response.status_code == 401, url


def test_deleting_a_user_deletes_their_events(api: TestClient, database: Database) -> None:
    alice, bob = create_user(api), create_user(api)
    gone = track(api, alice, name=unique("event"))
    kept = track(api, bob)
    assert api.delete(f"/api/v1/users/{alice['id']}").status_code == 200
    assert api.get(f"/api/v1/events/{gone['id']}").status_code == 404
    assert [row.id for row in event_rows(database)] == [int(kept["id"])]
    with database.transaction() as session:
        count = session.scalar(
            select(func.count()).select_from(Event).where(Event.user_id == int(alice["id"]))
        )
    assert count == 0


def test_concurrent_events_with_one_message_id_store_one_row(
    api: TestClient, database: Database
) -> None:
    user = create_user(api)
    body = {"name": "Paid", "message_id": "race"}

    def post(_: int) -> Any:
        return api.post(f"/api/v1/users/{user['id']}/events", json=body)

    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(post, range(16)))
    assert {response.status_code for response in responses} == {200}
    assert len({response.json()["id"] for response in responses}) == 1
    assert len(event_rows(database)) == 1


def test_events_routes_are_in_the_openapi_document(api: TestClient) -> None:
    paths = api.get("/api/v1/openapi.json").json()["paths"]
    assert set(paths["/api/v1/events"]) == {"get", "post"}
    assert set(paths["/api/v1/users/{id}/events"]) == {"get", "post"}
    assert set(paths["/api/v1/events/{id}"]) == {"get"}
