"""The webhooks REST API through HTTP: CRUD, secrets, ping, retry, the log, and every failure."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from audience.db import Database
from audience.webhooks import service
from audience.webhooks.models import WebhookDelivery, WebhookSubscription
from tests.conftest import Tenant
from tests.webhooks.helpers import create_webhook, deliveries, error_of

PUBLIC = "https://93.184.215.14/hook"


def test_create_returns_the_webhook_with_its_secret(api: TestClient, database: Database) -> None:
    body = {"url": PUBLIC, "topics": ["user.created", "segment.entered", "user.created"]}
    response = api.post("/api/v1/webhooks", json=body)
    assert response.status_code == 200, response.text
    webhook = response.json()
    assert webhook["type"] == "webhook" and webhook["id"].isdigit()
    assert webhook["url"] == PUBLIC
    assert webhook["topics"] == ["user.created", "segment.entered"]
    assert webhook["active"] is True
    assert webhook["secret"].startswith("whsec_") and len(webhook["secret"]) > 40
    assert webhook["created_at"] > 0 and webhook["updated_at"] == webhook["created_at"]
    with database.transaction() as session:
        row = session.get(WebhookSubscription, int(webhook["id"]))
        assert row is not None and row.secret == webhook["secret"]


def test_secret_is_not_shown_after_creation(api: TestClient) -> None:
    webhook = create_webhook(api)
    shown = api.get(f"/api/v1/webhooks/{webhook['id']}").json()
    assert "secret" not in shown
    assert shown["url"] == webhook["url"]
    listed = api.get("/api/v1/webhooks").json()
    assert all("secret" not in item for item in listed["webhooks"])


def test_list_is_paginated_in_creation_order(api: TestClient) -> None:
    ids = [create_webhook(api)["id"] for _ in range(3)]
    first = api.get("/api/v1/webhooks", params={"per_page": 2}).json()
    assert first["type"] == "webhook.list" and first["total_count"] == 3
    assert [w["id"] for w in first["webhooks"]] == ids[:2]
    cursor = first["pages"]["next"]["starting_after"]
    second = api.get("/api/v1/webhooks", params={"per_page": 2, "starting_after": cursor}).json()
    assert [w["id"] for w in second["webhooks"]] == ids[2:]


def test_create_inactive_webhook(api: TestClient) -> None:
    assert create_webhook(api, active=False)["active"] is False


@pytest.mark.parametrize("topic", ["user.updated", "ping", "USER.CREATED", ""])
def test_unknown_topic_is_400_naming_it(api: TestClient, database: Database, topic: str) -> None:
    response = api.post("/api/v1/webhooks", json={"url": PUBLIC, "topics": ["user.created", topic]})
    assert response.status_code == 400
    error = error_of(response)
    assert error["code"] == "unknown_topic" and error["field"] == "topics"
    assert repr(topic) in error["message"]
    with database.transaction() as session:
        assert session.scalar(select(WebhookSubscription)) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"topics": ["user.created"]}, "url"),
        ({"url": PUBLIC}, "topics"),
        ({"url": PUBLIC, "topics": []}, "topics"),
        ({"url": PUBLIC, "topics": "user.created"}, "topics"),
        ({"url": "", "topics": ["user.created"]}, "url"),
        ({"url": "https://a.example/" + "x" * 2048, "topics": ["user.created"]}, "url"),
        ({"url": PUBLIC, "topics": ["user.created"], "secret": "mine"}, "secret"),
        ({"url": PUBLIC, "topics": ["user.created"], "id": "7"}, "id"),
        ({"url": PUBLIC, "topics": ["user.created"], "active": "maybe"}, "active"),
    ],
)
def test_invalid_create_body_is_422_naming_the_field(
    api: TestClient, body: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/webhooks", json=body)
    assert response.status_code == 422
    assert error_of(response)["field"] == field


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/hook",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "not a url",
        "http://",
        "//93.184.215.14/hook",
        "https://93.184.215.14/ho ok",
        "https://93.184.215.14/ho\nok",
    ],
)
def test_url_that_is_not_http_is_400_naming_url(api: TestClient, url: str) -> None:
    response = api.post("/api/v1/webhooks", json={"url": url, "topics": ["user.created"]})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "invalid_url" and error["field"] == "url"


def test_url_is_trimmed(api: TestClient) -> None:
    assert create_webhook(api, url=f"  {PUBLIC} ")["url"] == PUBLIC


def test_patch_changes_url_topics_and_active(api: TestClient) -> None:
    webhook = create_webhook(api)
    body = {"url": "https://93.184.215.15/other", "topics": ["user.merged"], "active": False}
    response = api.patch(f"/api/v1/webhooks/{webhook['id']}", json=body)
    assert response.status_code == 200, response.text
    changed = response.json()
    assert changed["url"] == body["url"] and changed["topics"] == ["user.merged"]
    assert changed["active"] is False and "secret" not in changed
    assert api.get(f"/api/v1/webhooks/{webhook['id']}").json() == changed


def test_patch_with_only_active_keeps_the_rest(api: TestClient) -> None:
    webhook = create_webhook(api)
    changed = api.patch(f"/api/v1/webhooks/{webhook['id']}", json={"active": False}).json()
    assert changed["url"] == webhook["url"] and changed["topics"] == webhook["topics"]


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"url": None}, 422, "body"),
        ({"topics": None}, 422, "body"),
        ({"topics": []}, 422, "topics"),
        ({"secret": "x"}, 422, "secret"),
        ({"topics": ["user.created", "nope"]}, 400, "topics"),
        ({"url": "gopher://93.184.215.14/"}, 400, "url"),
    ],
)
def test_invalid_patch_is_refused_and_changes_nothing(
    api: TestClient, body: dict[str, Any], status: int, field: str
) -> None:
    webhook = create_webhook(api)
    response = api.patch(f"/api/v1/webhooks/{webhook['id']}", json=body)
    assert response.status_code == status, response.text
    assert error_of(response)["field"] == field
    shown = api.get(f"/api/v1/webhooks/{webhook['id']}").json()
    assert shown["url"] == webhook["url"] and shown["topics"] == webhook["topics"]


def test_delete_removes_the_webhook_and_its_log(api: TestClient, database: Database) -> None:
    webhook = create_webhook(api)
    assert api.post(f"/api/v1/webhooks/{webhook['id']}/ping").status_code == 200
    response = api.delete(f"/api/v1/webhooks/{webhook['id']}")
    assert response.status_code == 200
    assert response.json() == {"id": webhook["id"], "object": "webhook", "deleted": True}
    assert api.get(f"/api/v1/webhooks/{webhook['id']}").status_code == 404
    assert deliveries(database) == []


@pytest.mark.parametrize("id", ["999999", "abc", "-1", "1.5", "9" * 30])
def test_unknown_webhook_is_404_on_every_route(api: TestClient, id: str) -> None:
    for method, path, body in [
        ("GET", f"/api/v1/webhooks/{id}", None),
        ("PATCH", f"/api/v1/webhooks/{id}", {"active": False}),
        ("DELETE", f"/api/v1/webhooks/{id}", None),
        ("POST", f"/api/v1/webhooks/{id}/ping", None),
        ("POST", f"/api/v1/webhooks/{id}/rotate-secret", None),
        ("GET", f"/api/v1/webhooks/{id}/deliveries", None),
        ("GET", f"/api/v1/webhook-deliveries/{id}", None),
        ("POST", f"/api/v1/webhook-deliveries/{id}/retry", None),
    ]:
        response = api.request(method, path, json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert error_of(response)["code"] == "not_found"


def test_another_environments_webhooks_are_out_of_reach(
    tenant: Tenant, other_tenant: Tenant
) -> None:
    theirs = create_webhook(other_tenant.client)
    delivery = other_tenant.client.post(f"/api/v1/webhooks/{theirs['id']}/ping").json()
    mine = tenant.client
    assert mine.get("/api/v1/webhooks").json()["total_count"] == 0
    assert mine.get(f"/api/v1/webhooks/{theirs['id']}").status_code == 404
    assert mine.patch(f"/api/v1/webhooks/{theirs['id']}", json={"active": False}).status_code == 404
    assert mine.post(f"/api/v1/webhooks/{theirs['id']}/ping").status_code == 404
    assert mine.post(f"/api/v1/webhooks/{theirs['id']}/rotate-secret").status_code == 404
    assert mine.get(f"/api/v1/webhooks/{theirs['id']}/deliveries").status_code == 404
    assert mine.get(f"/api/v1/webhook-deliveries/{delivery['id']}").status_code == 404
    assert mine.post(f"/api/v1/webhook-deliveries/{delivery['id']}/retry").status_code == 404
    assert mine.delete(f"/api/v1/webhooks/{theirs['id']}").status_code == 404
    assert other_tenant.client.get(f"/api/v1/webhooks/{theirs['id']}").json()["active"] is True


def test_rotate_secret_shows_a_new_secret_and_keeps_the_old_one_a_day(api: TestClient) -> None:
    webhook = create_webhook(api)
    response = api.post(f"/api/v1/webhooks/{webhook['id']}/rotate-secret")
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != webhook["secret"]
    expires = rotated["previous_secret_expires_at"]
    assert expires is not None and 23 * 3600 < expires - rotated["updated_at"] <= 24 * 3600
    assert "secret" not in api.get(f"/api/v1/webhooks/{webhook['id']}").json()


def test_rotate_secret_at_once_drops_the_old_one(api: TestClient, database: Database) -> None:
    webhook = create_webhook(api)
    url = f"/api/v1/webhooks/{webhook['id']}/rotate-secret"
    rotated = api.post(url, json={"keep_previous_hours": 0}).json()
    assert rotated["previous_secret_expires_at"] is None
    with database.transaction() as session:
        row = session.get(WebhookSubscription, int(webhook["id"]))
        assert row is not None and row.previous_secret is None


@pytest.mark.parametrize(
    "body", [{"keep_previous_hours": -1}, {"keep_previous_hours": 169}, {"x": 1}]
)
def test_rotate_secret_with_a_bad_body_is_422(api: TestClient, body: dict[str, Any]) -> None:
    webhook = create_webhook(api)
    response = api.post(f"/api/v1/webhooks/{webhook['id']}/rotate-secret", json=body)
    assert response.status_code == 422


def test_ping_queues_a_ping_delivery(api: TestClient, database: Database) -> None:
    webhook = create_webhook(api)
    response = api.post(f"/api/v1/webhooks/{webhook['id']}/ping")
    assert response.status_code == 200, response.text
    ping = response.json()
    assert ping["type"] == "webhook_delivery" and ping["topic"] == "ping"
    assert ping["status"] == "pending" and ping["attempts"] == 0
    assert ping["webhook_id"] == webhook["id"]
    assert ping["payload"] == {"webhook": {"id": webhook["id"]}, "message": "ping"}
    assert [row.topic for row in deliveries(database)] == ["ping"]


def test_ping_of_an_inactive_webhook_is_409(api: TestClient, database: Database) -> None:
    webhook = create_webhook(api, active=False)
    response = api.post(f"/api/v1/webhooks/{webhook['id']}/ping")
    assert response.status_code == 409
    assert deliveries(database) == []


def _finish(database: Database, id: str, status: str) -> None:
    with database.transaction() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == int(id))
            .values(status=status, attempts=10, next_attempt_at=None, last_status_code=500)
        )


def test_retry_requeues_a_failed_delivery(api: TestClient) -> None:
    webhook = create_webhook(api)
    ping = api.post(f"/api/v1/webhooks/{webhook['id']}/ping").json()
    _finish(api_database(api), ping["id"], "failed")
    response = api.post(f"/api/v1/webhook-deliveries/{ping['id']}/retry")
    assert response.status_code == 200, response.text
    retried = response.json()
    assert retried["id"] == ping["id"] and retried["status"] == "pending"
    assert retried["attempts"] == 0 and retried["next_attempt_at"] is not None
    assert retried["last_status_code"] == 500  # the log keeps the last outcome until the next


def test_retry_of_a_pending_delivery_is_409(api: TestClient) -> None:
    webhook = create_webhook(api)
    ping = api.post(f"/api/v1/webhooks/{webhook['id']}/ping").json()
    response = api.post(f"/api/v1/webhook-deliveries/{ping['id']}/retry")
    assert response.status_code == 409
    assert "pending" in error_of(response)["message"]


def test_delivery_log_lists_newest_first_and_filters_by_status(api: TestClient) -> None:
    webhook = create_webhook(api)
    ids = [api.post(f"/api/v1/webhooks/{webhook['id']}/ping").json()["id"] for _ in range(3)]
    _finish(api_database(api), ids[0], "failed")
    log = api.get(f"/api/v1/webhooks/{webhook['id']}/deliveries").json()
    assert log["type"] == "webhook_delivery.list" and log["total_count"] == 3
    assert [d["id"] for d in log["deliveries"]] == ids[::-1]
    failed = api.get(f"/api/v1/webhooks/{webhook['id']}/deliveries", params={"status": "failed"})
    assert [d["id"] for d in failed.json()["deliveries"]] == [ids[0]]
    page = api.get(f"/api/v1/webhooks/{webhook['id']}/deliveries", params={"per_page": 2}).json()
    cursor = page["pages"]["next"]["starting_after"]
    rest = api.get(
        f"/api/v1/webhooks/{webhook['id']}/deliveries",
        params={"per_page": 2, "starting_after": cursor},
    ).json()
    assert [d["id"] for d in page["deliveries"] + rest["deliveries"]] == ids[::-1]
    one = api.get(f"/api/v1/webhook-deliveries/{ids[1]}").json()
    assert one["id"] == ids[1] and one["topic"] == "ping"


def test_delivery_log_with_an_unknown_status_is_400(api: TestClient) -> None:
    webhook = create_webhook(api)
    response = api.get(f"/api/v1/webhooks/{webhook['id']}/deliveries", params={"status": "lost"})
    assert response.status_code == 400
    assert error_of(response)["field"] == "status"


def test_too_many_webhooks_is_409(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "MAX_SUBSCRIPTIONS", 2)
    create_webhook(api)
    create_webhook(api)
    response = api.post("/api/v1/webhooks", json={"url": PUBLIC, "topics": ["user.created"]})
    assert response.status_code == 409


def api_database(api: TestClient) -> Database:
    database: Database = api.app.state.database  # type: ignore[attr-defined]
    return database
