"""Per-message validation (R-ING-5, R-ID-6) and timestamps (R-ING-6), through /v1/*."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from audience.db import Database
from audience.ingest.timestamps import parse_timestamp
from tests.conftest import Tenant
from tests.ingest.helpers import assert_error, batch, inbox_rows, post, stored, track


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 2):  # the message and `properties` are two levels already
        value = {"n": value}
    return value


BAD_MESSAGES: dict[str, tuple[Any, str]] = {
    "number item": (42, "invalid_message"),
    "string item": ("track", "invalid_message"),
    "array item": ([{"type": "track"}], "invalid_message"),
    "null item": (None, "invalid_message"),
    "no type": ({"userId": "u", "event": "e"}, "invalid_type"),
    "unknown type": ({"type": "purchase", "userId": "u"}, "invalid_type"),
    "no ids": ({"type": "identify", "traits": {"email": "a@example.com"}}, "missing_id"),
    "null ids": ({"type": "identify", "userId": None, "anonymousId": None}, "missing_id"),
    "blocked user id": ({"type": "identify", "userId": "null"}, "missing_id"),
    "blocked ids": (
        {"type": "identify", "userId": " Guest ", "anonymousId": "'undefined'"},
        "missing_id",
    ),
    "object user id": ({"type": "identify", "userId": {"id": 1}}, "invalid_id"),
    "boolean anonymous id": ({"type": "identify", "anonymousId": True}, "invalid_id"),
    "user id too long": ({"type": "identify", "userId": "u" * 256}, "invalid_id"),
    "track without event": ({"type": "track", "userId": "u"}, "missing_event"),
    "track with blank event": ({"type": "track", "userId": "u", "event": "  "}, "missing_event"),
    "track with number event": ({"type": "track", "userId": "u", "event": 7}, "invalid_event"),
    "event too long": ({"type": "track", "userId": "u", "event": "e" * 256}, "invalid_event"),
    "group without groupId": ({"type": "group", "userId": "u"}, "missing_group_id"),
    "group with placeholder groupId": (
        {"type": "group", "userId": "u", "groupId": "undefined"},
        "missing_group_id",
    ),
    "group with object groupId": (
        {"type": "group", "userId": "u", "groupId": {}},
        "invalid_group_id",
    ),
    "alias without previousId": ({"type": "alias", "userId": "u"}, "missing_previous_id"),
    "alias with placeholder previousId": (
        {"type": "alias", "userId": "u", "previousId": "0"},
        "missing_previous_id",
    ),
    "oversize message": (track(properties={"blob": "x" * (32 * 1024)}), "message_too_large"),
    "too deep": (track(properties=_nested(33)), "too_deep"),
    "far too deep for orjson": (track(properties=_nested(300)), "too_deep"),
    "NUL in a value": (track(properties={"name": "a\x00b"}), "invalid_string"),
    "NUL in a key": (track(properties={"a\x00": 1}), "invalid_string"),
    "NUL in the event": (track(event="Signed\x00Up"), "invalid_string"),
    "messageId too long": (track(messageId="m" * 101), "invalid_message_id"),
    "messageId object": (track(messageId={"id": 1}), "invalid_message_id"),
    "properties not an object": (track(properties=[1, 2]), "invalid_field"),
    "context not an object": (track(context="web"), "invalid_field"),
}


@pytest.mark.parametrize("case", list(BAD_MESSAGES))
def test_bad_message_is_rejected_and_its_batch_neighbours_are_stored(
    case: str, app: TestClient, tenant: Tenant, database: Database
) -> None:
    bad, code = BAD_MESSAGES[case]
    before, after = track(), track()
    response = batch(app, [before, bad, after], token=tenant.app_token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    [rejection] = body["rejected"]
    assert set(rejection) == {"index", "messageId", "code", "message"}
    assert (rejection["index"], rejection["code"]) == (1, code), rejection
    assert rejection["message"]
    if isinstance(bad, dict) and isinstance(bad.get("messageId"), str):
        assert rejection["messageId"] == bad["messageId"][:100]
    assert sorted(stored(database)) == sorted([before["messageId"], after["messageId"]])


@pytest.mark.parametrize("case", ["no ids", "track without event", "too deep", "NUL in a value"])
def test_single_route_answers_400_for_a_rejected_message(
    case: str, app: TestClient, tenant: Tenant, database: Database
) -> None:
    bad, code = BAD_MESSAGES[case]
    kind = bad.get("type", "track")
    response = post(app, f"/v1/{kind}", bad, token=tenant.app_token)
    assert_error(response, 400, code)
    assert response.headers["access-control-allow-origin"] == "*"
    assert inbox_rows(database) == []


def test_single_route_with_a_non_object_body_is_400(app: TestClient, tenant: Tenant) -> None:
    assert_error(post(app, "/v1/identify", [1], token=tenant.app_token), 400, "invalid_message")


def test_lone_surrogate_escape_rejects_only_its_message(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    good = track()
    bad = '{"type": "track", "userId": "u", "event": "bad \\ud800 here"}'
    raw = f'{{"batch": [{json.dumps(good)}, {bad}]}}'
    response = app.post("/v1/batch", content=raw.encode(), auth=(tenant.app_token, ""))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["code"]) for r in body["rejected"]] == [(1, "invalid_string")]
    assert list(stored(database)) == [good["messageId"]]


def test_lone_surrogate_in_a_message_id_is_rejected_without_echoing_it(
    app: TestClient, tenant: Tenant
) -> None:
    raw = b'{"batch": [{"type": "track", "userId": "u", "event": "e", "messageId": "\\udfff"}]}'
    response = app.post("/v1/batch", content=raw, auth=(tenant.app_token, ""))
    assert response.json()["rejected"][0]["messageId"] is None


def test_placeholder_user_id_is_dropped_when_an_anonymous_id_remains(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    message = track(userId="undefined", anonymousId="a-1")
    body = batch(app, [message], token=tenant.app_token).json()
    assert body["accepted"] == 1
    assert [w["code"] for w in body["warnings"]] == ["blocked_id"]
    payload = stored(database)[message["messageId"]]
    assert "userId" not in payload
    assert payload["anonymousId"] == "a-1"
    assert [w["code"] for w in payload["warnings"]] == ["blocked_id"]


def test_numeric_ids_are_stored_as_strings(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    message = {"type": "group", "userId": 42, "anonymousId": 7.0, "groupId": 1001, "messageId": 9}
    assert batch(app, [message], token=tenant.app_token).json()["accepted"] == 1
    payload = stored(database)["9"]
    assert (payload["userId"], payload["anonymousId"], payload["groupId"]) == ("42", "7", "1001")


def test_message_id_is_assigned_when_missing_and_kept_when_given(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    given = track()
    missing = track()
    del missing["messageId"]
    blank = track(messageId="")
    batch(app, [given, missing, blank], token=tenant.app_token)
    rows = inbox_rows(database)
    assert rows[0].message_id == given["messageId"]
    for row in rows[1:]:
        assert uuid.UUID(row.message_id).version == 4
        assert row.payload["messageId"] == row.message_id
    assert rows[1].message_id != rows[2].message_id


def test_unknown_fields_are_kept(app: TestClient, tenant: Tenant, database: Database) -> None:
    message = track(channel="server", version=2, custom={"nested": [1, {"a": None}]})
    batch(app, [message], token=tenant.app_token)
    payload = stored(database)[message["messageId"]]
    assert (payload["channel"], payload["version"]) == ("server", 2)
    assert payload["custom"] == {"nested": [1, {"a": None}]}


# --- timestamps ---------------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _stamped(payload: dict[str, Any], name: str) -> datetime:
    parsed = parse_timestamp(payload[name])
    assert parsed is not None, payload[name]
    return parsed


def test_timestamp_is_corrected_for_the_client_clock(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    # The client's clock is 3 hours fast; the event happened 10 s before the batch was sent.
    client_now = datetime.now(UTC) + timedelta(hours=3)
    original = client_now - timedelta(seconds=10)
    message = track(originalTimestamp=_iso(original))
    batch(app, [message], token=tenant.app_token, sentAt=_iso(client_now))
    payload = stored(database)[message["messageId"]]
    received = _stamped(payload, "receivedAt")
    assert _stamped(payload, "timestamp") == received - timedelta(seconds=10)
    assert payload["originalTimestamp"] == _iso(original)
    assert payload["sentAt"] == _iso(client_now)
    assert "warnings" not in payload


def test_message_sent_at_wins_over_the_envelope(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    original = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    message = track(timestamp=_iso(original), sentAt=_iso(original + timedelta(minutes=1)))
    batch(app, [message], token=tenant.app_token, sentAt=_iso(original + timedelta(hours=5)))
    payload = stored(database)[message["messageId"]]
    received = _stamped(payload, "receivedAt")
    assert _stamped(payload, "timestamp") == received - timedelta(minutes=1)
    # A server library's `timestamp` is the event time the correction starts from.
    assert payload["originalTimestamp"] == _iso(original)


def test_timestamp_without_sent_at_is_kept_as_given(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    message = track(timestamp="2023-01-02T03:04:05.678+02:00")
    post(app, "/v1/track", message, token=tenant.app_token)
    payload = stored(database)[message["messageId"]]
    assert _stamped(payload, "timestamp") == datetime(2023, 1, 2, 1, 4, 5, 678000, tzinfo=UTC)
    assert payload["timestamp"].endswith("Z")


def test_message_without_a_timestamp_gets_the_server_time(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    message = track()
    post(app, "/v1/track", message, token=tenant.app_token)
    [row] = inbox_rows(database)
    assert _stamped(row.payload, "timestamp") == _stamped(row.payload, "receivedAt")
    assert _stamped(row.payload, "receivedAt") == row.received_at


def test_unparseable_timestamp_uses_the_server_time_and_warns(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    message = track(originalTimestamp="yesterday-ish")
    body = batch(app, [message], token=tenant.app_token, sentAt=_iso(datetime.now(UTC))).json()
    assert body["accepted"] == 1
    [warning] = body["warnings"]
    assert (warning["index"], warning["messageId"]) == (0, message["messageId"])
    assert warning["code"] == "invalid_timestamp"
    payload = stored(database)[message["messageId"]]
    assert _stamped(payload, "timestamp") == _stamped(payload, "receivedAt")
    assert payload["originalTimestamp"] == "yesterday-ish"
    assert payload["warnings"][0]["field"] == "originalTimestamp"


def test_unparseable_sent_at_leaves_the_timestamp_uncorrected_and_warns(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    message = track(timestamp="2024-05-01T12:00:00Z", sentAt=12345)
    body = batch(app, [message], token=tenant.app_token).json()
    assert [w["code"] for w in body["warnings"]] == ["invalid_timestamp"]
    payload = stored(database)[message["messageId"]]
    assert _stamped(payload, "timestamp") == datetime(2024, 5, 1, 12, tzinfo=UTC)


def test_timestamp_over_24_hours_in_the_future_is_kept_and_flagged(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    future = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    soon = datetime.now(UTC) + timedelta(hours=20)
    flagged, fine = track(timestamp=_iso(future)), track(timestamp=_iso(soon))
    body = batch(app, [flagged, fine], token=tenant.app_token).json()
    assert body["accepted"] == 2
    assert [(w["index"], w["code"]) for w in body["warnings"]] == [(0, "future_timestamp")]
    rows = stored(database)
    assert _stamped(rows[flagged["messageId"]], "timestamp") == future
    assert [w["code"] for w in rows[flagged["messageId"]]["warnings"]] == ["future_timestamp"]
    assert "warnings" not in rows[fine["messageId"]]


def test_a_client_warnings_field_is_replaced_with_a_warning(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    message = track(warnings="mine")
    body = batch(app, [message], token=tenant.app_token).json()
    assert [w["code"] for w in body["warnings"]] == ["reserved_field"]
    assert stored(database)[message["messageId"]]["warnings"][0]["code"] == "reserved_field"
