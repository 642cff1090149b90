"""Replaying failed messages: one, edited, many by id or by filter, and what dedupe makes of it."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from audience.db import Database
from tests.conftest import Tenant
from tests.factories import create_user
from tests.failed.helpers import by_email, events_named, fail, failed_list, waiting
from tests.processing.helpers import events_of, process

REPLAY = "/api/v1/failed-messages/{}/replay"
BULK = "/api/v1/failed-messages/replay"


def test_replay_after_fixing_the_cause_applies_the_message(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    (failed,) = fail(app, database, tenant, by_email("late@example.com"))
    user = create_user(api, email="late@example.com")
    response = api.post(REPLAY.format(failed["id"]))
    assert response.status_code == 200, response.text
    replayed = response.json()
    assert replayed["replayed_at"] is not None and replayed["replayed_at"] >= failed["failed_at"]
    assert waiting(database) == 1
    process(database)
    (event,) = events_of(api, user)
    assert (event["name"], event["message_id"]) == ("Upgraded", failed["message_id"])
    assert event["properties"] == {"email": "late@example.com", "plan": "pro"}
    assert event["timestamp"] == failed["received_at"]  # the message's own time, not the replay's
    after = api.get(f"/api/v1/failed-messages/{failed['id']}").json()
    assert after["replayed_at"] == replayed["replayed_at"]
    assert failed_list(api)["total_count"] == 1  # applied: no new failure


def test_replaying_an_applied_message_again_is_a_no_op(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    (failed,) = fail(app, database, tenant, by_email("twice@example.com"))
    user = create_user(api, email="twice@example.com")
    for _ in range(2):
        assert api.post(REPLAY.format(failed["id"])).status_code == 200
        process(database)
    assert len(events_of(api, user)) == 1
    assert failed_list(api)["total_count"] == 1


def test_a_replay_that_fails_again_is_a_new_failed_message(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    (failed,) = fail(app, database, tenant, by_email("still-nobody@example.com"))
    assert api.post(REPLAY.format(failed["id"])).status_code == 200
    process(database)
    newest, original = failed_list(api)["failed_messages"]
    assert original["id"] == failed["id"] and original["replayed_at"] is not None
    assert newest["message_id"] == failed["message_id"]
    assert (newest["error_code"], newest["replayed_at"]) == ("lookup_not_found", None)
    assert events_named(database, "Upgraded") == []


def test_replay_an_edited_payload(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    (failed,) = fail(app, database, tenant, by_email("typo@exmaple.com"))
    user = create_user(api, email="typo@example.com")
    payload = dict(failed["payload"])
    payload["properties"] = {"email": "typo@example.com", "plan": "team"}
    response = api.post(REPLAY.format(failed["id"]), json={"payload": payload})
    assert response.status_code == 200, response.text
    assert response.json()["payload"] == failed["payload"]  # the failed message stays as it was
    process(database)
    (event,) = events_of(api, user)
    assert event["properties"] == {"email": "typo@example.com", "plan": "team"}
    assert event["timestamp"] == failed["received_at"]


def test_replay_without_a_body_and_with_an_empty_one_use_the_stored_payload(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    first, second = fail(
        app, database, tenant, by_email("x@example.com"), by_email("y@example.com")
    )
    assert api.post(REPLAY.format(first["id"]), json={}).status_code == 200
    assert api.post(REPLAY.format(second["id"]), json={"payload": None}).status_code == 200
    assert waiting(database) == 2


def test_an_edited_payload_keeps_the_original_received_at(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    (failed,) = fail(app, database, tenant, by_email("clock@example.com"))
    user = create_user(api, email="clock@example.com")
    payload = {
        **failed["payload"],
        "originalTimestamp": "2024-05-01T12:00:00Z",
        "sentAt": "2024-05-01T12:00:10Z",  # sent 10 s after it happened, by the client's clock
        "receivedAt": "2001-01-01T00:00:00Z",  # server-stamped: not editable
    }
    assert api.post(REPLAY.format(failed["id"]), json={"payload": payload}).status_code == 200
    process(database)
    (event,) = events_of(api, user)
    received = datetime.fromisoformat(failed["payload"]["receivedAt"])
    expected = received - timedelta(seconds=10)
    assert event["timestamp_ms"] == int(expected.timestamp() * 1000)


def _edited(failed: dict[str, Any], **changes: Any) -> dict[str, Any]:
    payload = {**failed["payload"], **changes}
    return {key: value for key, value in payload.items() if value is not ...}


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"type": "identify"}, "payload.type", "invalid_value"),
        ({"type": ...}, "payload.type", "invalid_value"),
        ({"messageId": "another"}, "payload.messageId", "invalid_value"),
        ({"messageId": ...}, "payload.messageId", "invalid_value"),
        ({"event": ...}, "payload.event", "missing_event"),
        ({"event": ["a"]}, "payload.event", "invalid_event"),
        ({"userId": ..., "anonymousId": ...}, "payload.userId", "missing_id"),
        ({"properties": "nope"}, "payload.properties", "invalid_field"),
        ({"properties": {"blob": "x" * 33_000}}, "payload", "message_too_large"),
        ({"properties": {"s": "\ud800"}}, "payload", "invalid_string"),
    ],
)
def test_an_edited_payload_is_checked_like_a_v1_message(
    app: TestClient,
    database: Database,
    tenant: Tenant,
    api: TestClient,
    changes: dict[str, Any],
    field: str,
    code: str,
) -> None:
    (failed,) = fail(app, database, tenant, by_email("edit@example.com"))
    body = json.dumps({"payload": _edited(failed, **changes)})  # escapes the lone surrogate
    response = api.post(
        REPLAY.format(failed["id"]), content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert (error["field"], error["code"]) == (field, code)
    assert waiting(database) == 0
    assert api.get(f"/api/v1/failed-messages/{failed['id']}").json()["replayed_at"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"payload": "text"},
        {"payload": [1, 2]},
        {"payload": {"type": "track", "event": "a\u0000b"}},
        {"payload": {}, "extra": 1},
    ],
)
def test_a_replay_body_that_is_not_an_object_payload_is_422(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient, body: dict[str, Any]
) -> None:
    (failed,) = fail(app, database, tenant, by_email("body@example.com"))
    response = api.post(REPLAY.format(failed["id"]), json=body)
    assert response.status_code == 422, response.text
    assert waiting(database) == 0


def test_bulk_replay_by_ids_requeues_them_in_their_original_order(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    emails = ["p@example.com", "q@example.com", "r@example.com"]
    failed = fail(app, database, tenant, *[by_email(email) for email in emails])
    users = [create_user(api, email=email) for email in emails[:2]]
    ids = [failed[1]["id"], failed[0]["id"], int(failed[1]["id"])]  # unordered, repeated, a number
    response = api.post(BULK, json={"ids": ids})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "type": "failed_message.replay",
        "replayed": 2,
        "ids": [failed[0]["id"], failed[1]["id"]],
        "remaining": 0,
    }
    process(database)
    assert [len(events_of(api, user)) for user in users] == [1, 1]
    assert failed_list(api, replayed="false")["failed_messages"] == [failed[2]]


def test_bulk_replay_with_an_unknown_id_queues_nothing(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    (failed,) = fail(app, database, tenant, by_email("solo@example.com"))
    for unknown in ("999999", "abc"):
        response = api.post(BULK, json={"ids": [failed["id"], unknown]})
        assert response.status_code == 404, response.text
    assert waiting(database) == 0
    assert failed_list(api, replayed="true")["total_count"] == 0


def test_bulk_replay_by_filter_takes_the_matching_messages_not_replayed_yet(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    bad_lookup = by_email("f@example.com")
    bad_lookup["integrations"] = {"audience": {"lookup": "user_id"}}
    fail(app, database, tenant, by_email("d@example.com"), by_email("e@example.com"), bad_lookup)
    create_user(api, email="d@example.com")
    create_user(api, email="e@example.com")
    response = api.post(BULK, json={"filter": {"error_code": "lookup_not_found"}})
    assert response.status_code == 200, response.text
    assert (response.json()["replayed"], response.json()["remaining"]) == (2, 0)
    again = api.post(BULK, json={"filter": {"error_code": "lookup_not_found"}}).json()
    assert (again["replayed"], again["ids"]) == (0, [])
    process(database)
    assert len(events_named(database, "Upgraded")) == 2
    (left,) = failed_list(api, replayed="false")["failed_messages"]
    assert left["error_code"] == "lookup_invalid"


def test_bulk_replay_by_filter_reports_what_remains(
    app: TestClient,
    database: Database,
    tenant: Tenant,
    api: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from audience.failed import service

    monkeypatch.setattr(service, "BULK_LIMIT", 2)
    fail(app, database, tenant, *[by_email(f"m{n}@example.com") for n in range(3)])
    first = api.post(BULK, json={"filter": {"stage": "resolve"}}).json()
    assert (first["replayed"], first["remaining"]) == (2, 1)
    second = api.post(BULK, json={"filter": {"stage": "resolve"}}).json()
    assert (second["replayed"], second["remaining"]) == (1, 0)


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": []},
        {"ids": ["1"], "filter": {}},
        {"ids": [str(n) for n in range(1, 1002)]},
        {"ids": [None]},
        {"ids": "1"},
        {"filter": {"error_code": "x" * 51}},
        {"filter": {"replayed": True}},
        {"filter": {}, "all": True},
    ],
)
def test_bad_bulk_replay_bodies_are_422(api: TestClient, body: dict[str, Any]) -> None:
    response = api.post(BULK, json=body)
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "error.list"
