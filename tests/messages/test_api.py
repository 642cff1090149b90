"""/api/v1/messages/{message_id} and /api/v1/message-warnings, with messages sent through /v1."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from audience.db import Database
from audience.ingest.models import ProcessedMessage
from tests.conftest import Tenant
from tests.factories import create_user
from tests.failed.helpers import by_email
from tests.processing.helpers import deliver, message, process, send


def status_of(api: TestClient, message_id: str) -> dict[str, Any]:
    response = api.get(f"/api/v1/messages/{quote(message_id, safe='')}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == "message" and body["message_id"] == message_id
    return body


def warned(api: TestClient, **params: Any) -> dict[str, Any]:
    response = api.get("/api/v1/message-warnings", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == "message.list"
    return body


def ids(listing: dict[str, Any]) -> list[str]:
    return [item["message_id"] for item in listing["messages"]]


def bad_trait() -> dict[str, Any]:
    """An identify whose `email` trait can't be stored: skipped with an invalid_value warning."""
    return message("identify", userId="u-bad", traits={"email": "not an email", "plan": "pro"})


def assert_error(response: httpx.Response, status: int, code: str, field: str | None) -> None:
    assert response.status_code == status, response.text
    (error,) = response.json()["errors"]
    assert error["code"] == code and error["message"]
    assert error.get("field") == field


def test_a_skipped_trait_is_a_processed_message_with_its_warning(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    sent = bad_trait()
    deliver(app, database, tenant, sent)
    found = status_of(api, sent["messageId"])
    assert found["status"] == "processed" and found["kind"] == "identify"
    assert found["processed_at"] > 0
    (warning,) = found["warnings"]
    assert (warning["code"], warning["field"]) == ("invalid_value", "email")
    assert "email" in warning["message"]
    assert found["event_id"] is None and found["user"] is None and found["position"] is None
    assert found["failed_message_id"] is None and found["error_code"] is None


def test_a_track_becomes_an_event_with_its_user(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    plain = message("track", userId="u-1", event="Signed Up")
    # context.traits apply with every kind: a bad one leaves a warning next to the event.
    warned_track = message(
        "track", userId="u-1", event="Paid", context={"traits": {"email": "nope"}}
    )
    deliver(app, database, tenant, plain, warned_track)
    first = status_of(api, plain["messageId"])
    assert first["status"] == "processed" and first["kind"] == "track"
    assert first["warnings"] == [] and first["processed_at"] is None
    assert first["event_id"] and first["received_at"] > 0
    assert first["user"]["user_id"] == "u-1"
    event = api.get(f"/api/v1/events/{first['event_id']}").json()
    assert event["message_id"] == plain["messageId"] and event["user"] == first["user"]
    second = status_of(api, warned_track["messageId"])
    assert second["user"] == first["user"] and second["event_id"] != first["event_id"]
    assert [w["code"] for w in second["warnings"]] == ["invalid_value"]
    assert second["processed_at"] > 0


def test_a_message_not_processed_yet_is_pending_with_its_position(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    first, second = message("track", userId="u", event="A"), message("alias", userId="u")
    second["previousId"] = "anon-1"
    send(app, tenant, first, second)
    pending = status_of(api, second["messageId"])
    assert pending["status"] == "pending" and pending["kind"] == "alias"
    assert pending["position"] == 1 and pending["received_at"] > 0
    assert pending["processed_at"] is None and pending["event_id"] is None
    assert status_of(api, first["messageId"])["position"] == 0
    process(database)
    assert status_of(api, second["messageId"])["status"] == "processed"


def test_a_failed_message_then_its_replay(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    sent = by_email("later@example.com")
    deliver(app, database, tenant, sent)
    failed = status_of(api, sent["messageId"])
    assert failed["status"] == "failed" and failed["kind"] == "track"
    assert (failed["error_code"], failed["stage"]) == ("lookup_not_found", "resolve")
    assert "later@example.com" in failed["error_message"]
    assert failed["failed_at"] >= failed["received_at"] > 0
    stored = api.get(f"/api/v1/failed-messages/{failed['failed_message_id']}")
    assert stored.json()["message_id"] == sent["messageId"]

    create_user(api, email="later@example.com")
    assert api.post(f"/api/v1/failed-messages/{failed['failed_message_id']}/replay").is_success
    assert status_of(api, sent["messageId"])["status"] == "pending"
    process(database)
    assert status_of(api, sent["messageId"])["status"] == "processed"


def test_unknown_and_other_environments_messages_are_404(
    app: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = bad_trait()
    waiting = message("track", userId="u", event="Waiting")
    deliver(app, database, tenant, mine, by_email("x@example.com"))
    send(app, tenant, waiting)
    theirs = other_tenant.client
    for message_id in ["nope", mine["messageId"], waiting["messageId"], "x" * 300, " "]:
        response = theirs.get(f"/api/v1/messages/{quote(message_id, safe='')}")
        assert_error(response, 404, "message_not_found", None)
    assert warned(theirs)["total_count"] == 0
    assert ids(warned(tenant.client)) == [mine["messageId"]]


@pytest.mark.parametrize("message_id", ["warnings", "a/b", "with space", "ünï?#%", "42"])
def test_any_message_id_can_be_asked_for(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient, message_id: str
) -> None:
    sent = message("identify", userId="u", traits={"plan": "pro"})
    sent["messageId"] = message_id
    deliver(app, database, tenant, sent)
    assert status_of(api, message_id)["status"] == "processed"


def test_warnings_list_is_newest_first_with_page_and_cursor_pagination(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    for _ in range(5):  # one at a time: processed_at grows
        deliver(app, database, tenant, bad_trait())
    deliver(app, database, tenant, message("identify", userId="fine", traits={"plan": "x"}))
    everything = warned(api)
    assert everything["total_count"] == 5
    times = [(m["processed_at"], m["message_id"]) for m in everything["messages"]]
    assert times == sorted(times, reverse=True)
    newest_first = ids(everything)

    seen: list[str] = []
    params: dict[str, Any] = {"per_page": 2}
    for page in (1, 2, 3):
        listing = warned(api, **params)
        assert listing["pages"]["page"] == page and listing["pages"]["total_pages"] == 3
        seen += ids(listing)
        if listing["pages"]["next"] is None:
            break
        params["starting_after"] = listing["pages"]["next"]["starting_after"]
    assert seen == newest_first and page == 3
    assert ids(warned(api, per_page=2, page=2)) == newest_first[2:4]


def test_warnings_list_cursor_walk_visits_every_message_once_across_tied_times(
    database: Database, tenant: Tenant, other_tenant: Tenant, api: TestClient
) -> None:
    start = datetime(2026, 3, 1, 12, 0, 0, 500_000, tzinfo=UTC)
    times = [start, start + timedelta(microseconds=1), start + timedelta(days=1)]
    warning = [{"code": "invalid_value", "field": "email", "message": "x"}]
    rows = [
        {
            "environment_id": environment_id,
            "message_id": message_id,
            "kind": "identify",
            "warnings": warning if n % 5 else [],  # every fifth has none: not listed
            "processed_at": times[n % 3],  # long runs of equal processed_at
        }
        for environment_id in (tenant.id, other_tenant.id)
        for n, message_id in enumerate(
            [f"m-{n}" for n in range(30)] + ["M-1", "a b", "ünï", "z" * 100, "0"]
        )
    ]
    with database.transaction() as session:
        session.execute(insert(ProcessedMessage), rows)
    expected = {
        row["message_id"] for row in rows if row["environment_id"] == tenant.id and row["warnings"]
    }
    everything = warned(api, per_page=150)
    assert everything["total_count"] == len(expected) == 28
    assert sorted(ids(everything)) == sorted(expected)
    order = [(m["processed_at"], m["message_id"]) for m in everything["messages"]]
    assert [at for at, _ in order] == sorted((at for at, _ in order), reverse=True)

    for per_page in (1, 3, 4, 27):
        seen: list[str] = []
        params: dict[str, Any] = {"per_page": per_page}
        pages = -(-len(expected) // per_page)
        for page in range(1, pages + 1):
            listing = warned(api, **params)
            assert listing["pages"]["page"] == page
            assert listing["pages"]["total_pages"] == pages
            assert listing["total_count"] == len(expected)
            assert ids(listing) == ids(warned(api, per_page=per_page, page=page))
            seen += ids(listing)
            if page == pages:
                assert listing["pages"]["next"] is None
            else:
                params["starting_after"] = listing["pages"]["next"]["starting_after"]
        assert len(seen) == len(set(seen)) == len(expected)
        assert seen == ids(everything)


def test_warnings_list_filters(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    identify = bad_trait()
    track = message("track", userId="u", event="E", context={"traits": {"email": "nope"}})
    conflict_a = message("identify", userId="a", anonymousId="anon-shared")
    conflict_b = message("identify", userId="b", anonymousId="anon-shared")
    deliver(app, database, tenant, identify, track, conflict_a, conflict_b)
    codes = {m["message_id"]: {w["code"] for w in m["warnings"]} for m in warned(api)["messages"]}
    assert codes == {
        identify["messageId"]: {"invalid_value"},
        track["messageId"]: {"invalid_value"},
        conflict_b["messageId"]: {"identity_conflict"},  # anon-shared is a's already
    }
    assert ids(warned(api, code="identity_conflict")) == [conflict_b["messageId"]]

    assert set(ids(warned(api, code="invalid_value"))) == {
        identify["messageId"],
        track["messageId"],
    }
    assert warned(api, code="no_such_code")["total_count"] == 0
    assert ids(warned(api, kind="track")) == [track["messageId"]]
    assert ids(warned(api, kind="track", code="invalid_value")) == [track["messageId"]]
    listed = warned(api, kind="track")["messages"][0]
    assert listed["event_id"] and listed["user"]["user_id"] == "u"
    newest = max(m["processed_at"] for m in warned(api)["messages"])
    assert warned(api, since=newest + 1)["total_count"] == 0
    assert warned(api, until=newest + 1)["total_count"] == warned(api)["total_count"]
    assert warned(api, since="2000-01-01T00:00:00Z")["total_count"] == len(codes)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"starting_after": "garbage"}, "starting_after"),
        ({"starting_after": "WyJpZCIsdHJ1ZSwxLDEsMV0"}, "starting_after"),  # another list's
        ({"since": "yesterday"}, "since"),
        ({"until": "2020-13-45"}, "until"),
        ({"kind": "purchase"}, "kind"),
        ({"code": "x" * 51}, "code"),
        ({"per_page": 151}, "per_page"),
        ({"page": 0}, "page"),
    ],
)
def test_bad_listing_parameters_are_400_naming_the_parameter(
    api: TestClient, params: dict[str, Any], field: str
) -> None:
    response = api.get("/api/v1/message-warnings", params=params)
    code = "invalid_cursor" if field == "starting_after" else "parameter_invalid"
    assert_error(response, 400, code, field)


def test_forged_cursors_are_400(api: TestClient) -> None:
    import base64

    import orjson

    at = {"dt": "2026-01-01T00:00:00+00:00"}
    forged = [
        ["processed_at", True, {"dt": "0001-01-01T00:00:00+05:00"}, "m", 1],
        ["processed_at", True, {"dt": "2026-01-01T00:00:00"}, "m", 1],
        ["processed_at", True, {"dt": "yesterday"}, "m", 1],
        ["processed_at", True, "2026-01-01T00:00:00+00:00", "m", 1],
        ["processed_at", True, None, "m", 1],
        ["processed_at", True, at, "m\x00", 1],
        ["processed_at", True, at, "m" * 101, 1],
        ["processed_at", True, at, 5, 1],
        ["processed_at", True, at, None, 1],
        ["processed_at", True, at, "m", True],
        ["processed_at", True, at, "m", 0],
        ["processed_at", True, at, "m", "2"],
        ["processed_at", False, at, "m", 1],
        ["timestamp", True, at, "m", 1],
        ["processed_at", True, at, "m"],
        ["message_warnings", "2026-01-01T00:00:00+00:00", "m", 1],  # the format before
        {"not": "a list"},
    ]
    for value in forged:
        cursor = base64.urlsafe_b64encode(orjson.dumps(value)).decode()
        response = api.get("/api/v1/message-warnings", params={"starting_after": cursor})
        assert_error(response, 400, "invalid_cursor", "starting_after")
    good = ["processed_at", True, at, "m" * 100, 1]
    cursor = base64.urlsafe_b64encode(orjson.dumps(good)).decode()
    assert api.get("/api/v1/message-warnings", params={"starting_after": cursor}).is_success


def test_the_api_key_is_required(app: TestClient) -> None:
    for path in ("/api/v1/messages/m-1", "/api/v1/message-warnings"):
        assert app.get(path).status_code == 401


def test_routes_are_in_the_openapi_document(app: TestClient) -> None:
    paths = app.get("/api/v1/openapi.json").json()["paths"]
    assert set(paths["/api/v1/messages/{message_id}"]) == {"get"}
    assert set(paths["/api/v1/message-warnings"]) == {"get"}


@pytest.mark.parametrize("raw", ["%ED%A0%80", "%C0%80", "%FF", "%F0%9F%98%80", "a%2F..%2Fb"])
def test_odd_ids_and_codes_are_answered_never_a_500(api: TestClient, raw: str) -> None:
    assert_error(api.get(f"/api/v1/messages/{raw}"), 404, "message_not_found", None)
    response = api.get(f"/api/v1/message-warnings?code={raw}")
    assert response.status_code == 200, response.text
