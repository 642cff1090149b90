"""/api/v1/failed-messages: listing, filters, one message, delete, isolation and bad input."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from audience.db import Database
from tests.conftest import Tenant
from tests.factories import create_user
from tests.failed.helpers import by_email, fail, failed_list
from tests.processing.helpers import crash_on_event, deliver, message


def test_a_lookup_that_matches_nobody_is_a_failed_message_with_its_payload(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    sent = by_email("nobody@example.com")
    (failed,) = fail(app, database, tenant, sent)
    assert failed["type"] == "failed_message"
    assert failed["message_id"] == sent["messageId"]
    assert (failed["error_code"], failed["stage"]) == ("lookup_not_found", "resolve")
    assert "nobody@example.com" in failed["error_message"]
    assert failed["replayed_at"] is None
    assert failed["failed_at"] >= failed["received_at"] > 0
    assert failed["payload"]["properties"] == {"email": "nobody@example.com", "plan": "pro"}
    assert failed["payload"]["messageId"] == sent["messageId"]
    assert api.get(f"/api/v1/failed-messages/{failed['id']}").json() == failed


def test_list_is_newest_first_with_page_and_cursor_pagination(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    oldest_first = fail(app, database, tenant, *[by_email(f"n{n}@example.com") for n in range(3)])
    ids = [failed["id"] for failed in reversed(oldest_first)]
    first = failed_list(api, per_page=2)
    assert first["type"] == "failed_message.list"
    assert first["total_count"] == 3
    assert first["pages"]["total_pages"] == 2
    assert [f["id"] for f in first["failed_messages"]] == ids[:2]
    cursor = first["pages"]["next"]["starting_after"]
    second = failed_list(api, per_page=2, starting_after=cursor)
    assert [f["id"] for f in second["failed_messages"]] == ids[2:]
    assert second["pages"]["next"] is None
    assert [f["id"] for f in failed_list(api, per_page=2, page=2)["failed_messages"]] == ids[2:]


def test_list_filters_by_error_code_stage_and_message_id(
    app: TestClient,
    database: Database,
    tenant: Tenant,
    api: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    create_user(api, email="twin@example.com")
    create_user(api, email="twin@example.com")
    crash_on_event(monkeypatch, "poison")
    missing = by_email("nobody@example.com")
    deliver(
        app,
        database,
        tenant,
        missing,
        by_email("twin@example.com"),
        message("track", userId="u", event="poison"),
    )

    def codes(**params: Any) -> list[str]:
        return [f["error_code"] for f in failed_list(api, **params)["failed_messages"]]

    assert codes() == ["internal_error", "lookup_ambiguous", "lookup_not_found"]
    assert codes(error_code="lookup_ambiguous") == ["lookup_ambiguous"]
    assert codes(stage="resolve") == ["lookup_ambiguous", "lookup_not_found"]
    assert codes(stage="apply") == ["internal_error"]
    assert codes(message_id=missing["messageId"]) == ["lookup_not_found"]
    assert codes(error_code="lookup_not_found", stage="apply") == []
    assert failed_list(api, error_code="nothing")["total_count"] == 0


def test_list_filters_by_replayed(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    first, second = fail(
        app, database, tenant, by_email("a@example.com"), by_email("b@example.com")
    )
    assert api.post(f"/api/v1/failed-messages/{first['id']}/replay").status_code == 200
    replayed = failed_list(api, replayed="true")["failed_messages"]
    assert [f["id"] for f in replayed] == [first["id"]]
    assert [f["id"] for f in failed_list(api, replayed="false")["failed_messages"]] == [
        second["id"]
    ]
    assert failed_list(api)["total_count"] == 2


def test_delete_removes_the_failed_message(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    (failed,) = fail(app, database, tenant, by_email("gone@example.com"))
    response = api.delete(f"/api/v1/failed-messages/{failed['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": failed["id"], "object": "failed_message", "deleted": True}
    assert api.get(f"/api/v1/failed-messages/{failed['id']}").status_code == 404
    assert api.delete(f"/api/v1/failed-messages/{failed['id']}").status_code == 404
    assert failed_list(api)["total_count"] == 0


def test_another_environment_sees_none_of_them(
    app: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    (failed,) = fail(app, database, tenant, by_email("mine@example.com"))
    theirs = other_tenant.client
    base = f"/api/v1/failed-messages/{failed['id']}"
    assert failed_list(theirs)["total_count"] == 0
    assert theirs.get(base).status_code == 404
    assert theirs.post(f"{base}/replay").status_code == 404
    assert (
        theirs.post("/api/v1/failed-messages/replay", json={"ids": [failed["id"]]}).status_code
        == 404
    )
    filtered = theirs.post("/api/v1/failed-messages/replay", json={"filter": {}})
    assert filtered.json()["replayed"] == 0
    assert theirs.delete(base).status_code == 404
    still = tenant.client.get(base).json()
    assert still["replayed_at"] is None


@pytest.mark.parametrize("bad", ["abc", "999999", "-1", "1.5", "0x1", "9" * 40])
def test_unknown_or_malformed_ids_are_404(api: TestClient, bad: str) -> None:
    base = f"/api/v1/failed-messages/{bad}"
    for response in (api.get(base), api.post(f"{base}/replay"), api.delete(base)):
        assert response.status_code == 404, response.text
        assert response.json()["errors"][0]["code"] == "not_found"


@pytest.mark.parametrize(
    "params",
    [{"replayed": "maybe"}, {"starting_after": "garbage"}, {"per_page": 151}, {"stage": "x" * 51}],
)
def test_bad_query_parameters_are_400(api: TestClient, params: dict[str, Any]) -> None:
    response = api.get("/api/v1/failed-messages", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["type"] == "error.list"


def test_routes_are_in_the_openapi_document(app: TestClient) -> None:
    paths = app.get("/api/v1/openapi.json").json()["paths"]
    assert set(paths["/api/v1/failed-messages"]) == {"get"}
    assert set(paths["/api/v1/failed-messages/{id}"]) == {"get", "delete"}
    assert set(paths["/api/v1/failed-messages/{id}/replay"]) == {"post"}
    assert set(paths["/api/v1/failed-messages/replay"]) == {"post"}
