"""The accept path of /v1/*: routes, auth, body formats, CORS, whole-request limits, the inbox."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from audience.db import Database
from audience.ingest import inbox
from audience.ingest.body import MAX_BODY_BYTES
from audience.ingest.messages import MAX_BATCH_MESSAGES
from tests.conftest import Tenant
from tests.ingest.helpers import assert_error, batch, inbox_rows, post, stored, track

SINGLE: dict[str, dict[str, Any]] = {
    "identify": {"userId": "u-1", "traits": {"email": "ann@example.com"}},
    "track": {"userId": "u-1", "event": "Signed Up", "properties": {"plan": "pro"}},
    "page": {"anonymousId": "a-1", "name": "Home", "properties": {"path": "/"}},
    "screen": {"anonymousId": "a-1", "name": "Settings"},
    "group": {"userId": "u-1", "groupId": "acme", "traits": {"name": "Acme"}},
    "alias": {"userId": "u-1", "previousId": "a-1"},
}


@pytest.mark.parametrize("kind", list(SINGLE))
def test_single_route_stores_one_message_of_its_kind(
    kind: str, app: TestClient, tenant: Tenant, database: Database
) -> None:
    response = post(app, f"/v1/{kind}", SINGLE[kind], token=tenant.app_token)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "rejected": []}
    [row] = inbox_rows(database)
    assert row.environment_id == tenant.id
    assert row.payload["type"] == kind
    assert row.payload["messageId"] == row.message_id
    for key, value in SINGLE[kind].items():
        assert row.payload[key] == value


def test_single_route_sets_the_type_from_the_route(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    body = {"type": "identify", "userId": "u-1", "event": "Clicked"}
    assert post(app, "/v1/track", body, token=tenant.app_token).status_code == 200
    assert inbox_rows(database)[0].payload["type"] == "track"


def test_batch_stores_its_messages_in_order(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    messages = [
        track(),
        {"type": "identify", "userId": "u-1", "messageId": "m-identify"},
        {"type": "page", "anonymousId": "a-1", "messageId": "m-page"},
        {"type": "screen", "anonymousId": "a-1", "messageId": "m-screen"},
        {"type": "group", "userId": "u-1", "groupId": "g", "messageId": "m-group"},
        {"type": "alias", "userId": "u-1", "previousId": "a-1", "messageId": "m-alias"},
    ]
    response = batch(app, messages, token=tenant.app_token)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 6, "rejected": []}
    rows = inbox_rows(database)
    assert [row.message_id for row in rows] == [m["messageId"] for m in messages]
    assert [row.payload["type"] for row in rows] == [m["type"] for m in messages]
    assert all(row.environment_id == tenant.id for row in rows)


def test_empty_batch_is_accepted_and_stores_nothing(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    response = batch(app, [], token=tenant.app_token)
    assert response.json() == {"accepted": 0, "rejected": []}
    assert inbox_rows(database) == []


def test_batch_envelope_context_and_integrations_merge_into_each_message(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    own = track(context={"ip": "10.0.0.1", "locale": "de"}, integrations={"All": False})
    bare = track()
    response = batch(
        app,
        [own, bare],
        token=tenant.app_token,
        context={"ip": "1.2.3.4", "library": {"name": "x"}},
        integrations={"All": True, "audience": True},
    )
    assert response.status_code == 200
    rows = stored(database)
    assert rows[own["messageId"]]["context"] == {
        "ip": "10.0.0.1",
        "locale": "de",
        "library": {"name": "x"},
    }
    assert rows[own["messageId"]]["integrations"] == {"All": False, "audience": True}
    assert rows[bare["messageId"]]["context"] == {"ip": "1.2.3.4", "library": {"name": "x"}}
    assert rows[bare["messageId"]]["integrations"] == {"All": True, "audience": True}


# --- authentication -----------------------------------------------------------------------------


def test_basic_auth_username_is_the_app_token(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    credentials = base64.b64encode(f"{tenant.app_token}:".encode()).decode()
    response = app.post(
        "/v1/track", json=track(), headers={"Authorization": f"Basic {credentials}"}
    )
    assert response.status_code == 200, response.text
    assert len(inbox_rows(database)) == 1


@pytest.mark.parametrize("path", ["/v1/track", "/v1/batch"])
def test_write_key_in_the_body_authenticates(
    path: str, app: TestClient, tenant: Tenant, database: Database
) -> None:
    body: dict[str, Any] = {"batch": [track()]} if path == "/v1/batch" else track()
    body["writeKey"] = tenant.app_token
    response = post(app, path, body, token=None)
    assert response.status_code == 200, response.text
    [row] = inbox_rows(database)
    assert "writeKey" not in row.payload  # the key is used, never stored


def test_write_key_in_the_query_authenticates(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    response = post(app, f"/v1/track?writeKey={tenant.app_token}", track(), token=None)
    assert response.status_code == 200, response.text
    assert len(inbox_rows(database)) == 1


@pytest.mark.parametrize(
    "how",
    ["none", "unknown basic", "unknown body", "unknown query", "api key", "bad base64", "bearer"],
)
def test_missing_or_wrong_app_token_is_401_and_stores_nothing(
    how: str, app: TestClient, tenant: Tenant, database: Database
) -> None:
    body, headers, path = track(), {}, "/v1/track"
    if how == "unknown basic":
        headers["Authorization"] = "Basic " + base64.b64encode(b"pk_nope:").decode()
    elif how == "unknown body":
        body["writeKey"] = "pk_nope"
    elif how == "unknown query":
        path += "?writeKey=pk_nope"
    elif how == "api key":  # a secret REST key is not an app token
        headers["Authorization"] = (
            "Basic " + base64.b64encode(f"{tenant.api_key}:".encode()).decode()
        )
    elif how == "bad base64":
        headers["Authorization"] = "Basic !!!not-base64"
    elif how == "bearer":
        headers["Authorization"] = f"Bearer {tenant.app_token}"
    response = app.post(path, json=body, headers=headers)
    assert_error(response, 401, "unauthorized")
    assert response.headers["access-control-allow-origin"] == "*"
    assert inbox_rows(database) == []


def test_other_environments_token_stores_under_its_own_environment(
    app: TestClient, tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    mine, theirs = track(), track()
    assert batch(app, [mine], token=tenant.app_token).status_code == 200
    assert batch(app, [theirs], token=other_tenant.app_token).status_code == 200
    by_message = {row.message_id: row.environment_id for row in inbox_rows(database)}
    assert by_message == {mine["messageId"]: tenant.id, theirs["messageId"]: other_tenant.id}


# --- body formats -------------------------------------------------------------------------------


def test_gzip_body_is_decompressed(app: TestClient, tenant: Tenant, database: Database) -> None:
    message = track()
    response = app.post(
        "/v1/batch",
        content=gzip.compress(orjson.dumps({"batch": [message]})),
        headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
        auth=(tenant.app_token, ""),
    )
    assert response.status_code == 200, response.text
    assert list(stored(database)) == [message["messageId"]]


def test_corrupt_gzip_is_400(app: TestClient, tenant: Tenant, database: Database) -> None:
    truncated = gzip.compress(orjson.dumps({"batch": [track()]}))[:-12]
    for content in (b"not gzip at all", truncated):
        response = app.post(
            "/v1/batch",
            content=content,
            headers={"Content-Encoding": "gzip"},
            auth=(tenant.app_token, ""),
        )
        assert_error(response, 400, "invalid_body")
    assert inbox_rows(database) == []


def test_unknown_content_encoding_is_415(app: TestClient, tenant: Tenant) -> None:
    response = app.post(
        "/v1/track",
        content=zlib.compress(orjson.dumps(track())),
        headers={"Content-Encoding": "br"},
        auth=(tenant.app_token, ""),
    )
    assert_error(response, 415, "unsupported_encoding")


def test_text_plain_body_from_send_beacon_is_parsed_as_json(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    # navigator.sendBeacon can't set headers: text/plain and the writeKey in the body.
    body = {"batch": [track()], "writeKey": tenant.app_token}
    response = app.post(
        "/v1/batch", content=json.dumps(body), headers={"Content-Type": "text/plain;charset=UTF-8"}
    )
    assert response.status_code == 200, response.text
    assert len(inbox_rows(database)) == 1


def test_invalid_json_is_400(app: TestClient, tenant: Tenant, database: Database) -> None:
    for content in (b"{not json", b"", b'{"batch": [1]} trailing', b'{"n": NaN}', b"\xff\xfe"):
        response = app.post("/v1/batch", content=content, auth=(tenant.app_token, ""))
        assert_error(response, 400, "invalid_json")
    assert inbox_rows(database) == []


@pytest.mark.parametrize(
    "body", [[], "batch", {"batch": {"type": "track"}}, {}, {"batch": [], "context": "x"}]
)
def test_batch_body_without_a_batch_array_is_400(
    body: object, app: TestClient, tenant: Tenant
) -> None:
    assert_error(post(app, "/v1/batch", body, token=tenant.app_token), 400, "invalid_batch")


# --- CORS ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [*SINGLE, "batch"])
def test_cors_preflight_is_answered_without_credentials(kind: str, app: TestClient) -> None:
    response = app.options(
        f"/v1/{kind}",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        },
    )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "content-type, authorization"
    assert "access-control-allow-credentials" not in response.headers


def test_cors_header_is_on_accepted_and_failed_answers(app: TestClient, tenant: Tenant) -> None:
    headers = {"Origin": "https://shop.example"}
    ok = post(app, "/v1/track", track(), token=tenant.app_token, headers=headers)
    bad = app.post("/v1/track", content=b"{", headers=headers, auth=(tenant.app_token, ""))
    for response in (ok, bad):
        assert response.headers["access-control-allow-origin"] == "*"


def test_rest_api_gets_no_cors_headers(app: TestClient, tenant: Tenant) -> None:
    headers = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    preflight = app.options("/api/v1/users", headers=headers)
    listed = tenant.client.get("/api/v1/users", headers={"Origin": "https://evil.example"})
    for response in (preflight, listed):
        assert "access-control-allow-origin" not in response.headers


# --- whole-request limits -----------------------------------------------------------------------


def _oversize_body() -> bytes:
    padding = "x" * 30_000
    count = MAX_BODY_BYTES // 30_000 + 2
    body = orjson.dumps({"batch": [track(properties={"p": padding}) for _ in range(count)]})
    assert len(body) > MAX_BODY_BYTES
    return body


def test_body_over_4_mb_is_413(app: TestClient, tenant: Tenant, database: Database) -> None:
    response = app.post("/v1/batch", content=_oversize_body(), auth=(tenant.app_token, ""))
    error = assert_error(response, 413, "payload_too_large")
    assert str(MAX_BODY_BYTES) in error["message"]
    assert inbox_rows(database) == []


def test_gzip_body_over_4_mb_once_decompressed_is_413(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    compressed = gzip.compress(_oversize_body())
    assert len(compressed) < MAX_BODY_BYTES // 10
    response = app.post(
        "/v1/batch",
        content=compressed,
        headers={"Content-Encoding": "gzip"},
        auth=(tenant.app_token, ""),
    )
    assert_error(response, 413, "payload_too_large")
    assert inbox_rows(database) == []


def test_gzip_bomb_is_cut_off(app: TestClient, tenant: Tenant) -> None:
    bomb = gzip.compress(b" " * (64 * 1024 * 1024), compresslevel=9)  # 64 MB -> ~64 KB
    response = app.post(
        "/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"}, auth=(tenant.app_token, "")
    )
    assert_error(response, 413, "payload_too_large")


def test_batch_of_more_than_1000_messages_is_413_naming_the_limit(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    messages = [{"type": "track", "userId": "u", "event": "e"}] * (MAX_BATCH_MESSAGES + 1)
    error = assert_error(batch(app, messages, token=tenant.app_token), 413, "too_many_messages")
    assert "1000" in error["message"]
    assert inbox_rows(database) == []


def test_batch_of_1000_messages_is_accepted_in_one_go(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    messages = [track() for _ in range(MAX_BATCH_MESSAGES)]
    response = batch(app, messages, token=tenant.app_token)
    assert response.json() == {"accepted": MAX_BATCH_MESSAGES, "rejected": []}
    assert len(inbox_rows(database)) == MAX_BATCH_MESSAGES


# --- the store ----------------------------------------------------------------------------------


def test_store_failure_is_503_and_nothing_is_acknowledged(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    assert post(app, "/v1/track", track(), token=tenant.app_token).status_code == 200  # warm
    with database.engine.begin() as connection:
        connection.execute(text("ALTER TABLE inbox RENAME TO inbox_away"))
    try:
        response = batch(app, [track(), track()], token=tenant.app_token)
    finally:
        with database.engine.begin() as connection:
            connection.execute(text("ALTER TABLE inbox_away RENAME TO inbox"))
    assert_error(response, 503, "store_unavailable")
    assert response.headers["retry-after"] == "1"
    assert response.headers["access-control-allow-origin"] == "*"
    assert len(inbox_rows(database)) == 1


def test_take_batch_returns_the_oldest_messages_in_order_and_delete_removes_them(
    app: TestClient, tenant: Tenant, database: Database
) -> None:
    messages = [track() for _ in range(5)]
    batch(app, messages[:3], token=tenant.app_token)
    batch(app, messages[3:], token=tenant.app_token)
    with database.transaction() as session:
        first = inbox.take_batch(session, 2)
        assert [row.message_id for row in first] == [m["messageId"] for m in messages[:2]]
        inbox.delete(session, [row.id for row in first])
    with database.transaction() as session:
        rest = inbox.take_batch(session, 10)
    assert [row.message_id for row in rest] == [m["messageId"] for m in messages[2:]]
    assert rest[0].received_at is not None
