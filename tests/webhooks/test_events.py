"""Which changes queue which deliveries, with what payload, in the change's own transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from audience.db import Database
from audience.environments.models import Environment
from audience.users import service as users
from audience.webhooks import service
from audience.webhooks.models import WebhookDelivery
from tests.conftest import Tenant
from tests.factories import create_user
from tests.processing.helpers import deliver, message
from tests.users.test_merge import merged, undo
from tests.webhooks.helpers import create_webhook, deliveries

ALL = ["user.created", "user.deleted", "user.merged", "user.unmerged"]


def payloads(database: Database, topic: str) -> list[dict[str, Any]]:
    return [row.payload for row in deliveries(database) if row.topic == topic]


def test_creating_a_user_queues_user_created(api: TestClient, database: Database) -> None:
    webhook = create_webhook(api, topics=["user.created"])
    user = create_user(api, email="ada@example.com", custom_attributes={"plan": "pro"})
    (row,) = deliveries(database)
    assert row.topic == "user.created" and row.status == "pending"
    assert row.subscription_id == int(webhook["id"]) and row.user_id == int(user["id"])
    shown = row.payload["user"]
    assert shown["id"] == user["id"] and shown["user_id"] == user["user_id"]
    assert shown["email"] == "ada@example.com"
    assert shown["custom_attributes"] == {"plan": "pro"}
    assert shown["created_at"] == user["created_at"]
    # The REST object without the relation lists (they would cost queries per new user).
    assert {key for key in user if key not in shown} == {"companies", "tags", "segments"}


def test_every_listening_webhook_gets_its_own_delivery(api: TestClient, database: Database) -> None:
    first = create_webhook(api, topics=["user.created"])
    second = create_webhook(api, topics=["user.deleted", "user.created"])
    create_webhook(api, topics=["user.merged"])  # not listening
    create_webhook(api, topics=["user.created"], active=False)  # paused
    create_user(api)
    rows = deliveries(database)
    assert sorted(row.subscription_id for row in rows) == [int(first["id"]), int(second["id"])]
    assert rows[0].payload == rows[1].payload


def test_another_environments_webhooks_get_nothing(
    tenant: Tenant, other_tenant: Tenant, database: Database
) -> None:
    create_webhook(other_tenant.client, topics=["user.created"])
    create_user(tenant.client)
    assert deliveries(database) == []


def test_deleting_a_user_queues_user_deleted_with_the_user_as_it_was(
    api: TestClient, database: Database
) -> None:
    user = create_user(api, name="Grace")
    create_webhook(api, topics=["user.deleted"])
    assert api.delete(f"/api/v1/users/{user['id']}").status_code == 200
    (payload,) = payloads(database, "user.deleted")
    assert payload["user"]["id"] == user["id"] and payload["user"]["name"] == "Grace"


def test_merging_users_queues_user_merged(api: TestClient, database: Database) -> None:
    survivor = create_user(api, email="keep@example.com")
    source = create_user(api, email="gone@example.com", user_id=None)
    create_webhook(api, topics=["user.merged"])
    merge = merged(api, survivor, source)
    (payload,) = payloads(database, "user.merged")
    assert payload["merge"]["id"] == merge["id"] and payload["merge"]["undone_at"] is None
    assert payload["user"]["id"] == survivor["id"]
    gone = payload["merged_user"]
    assert gone["id"] == source["id"] and gone["user_key"] == source["user_key"]
    # Its identifiers as they were before the merge moved them.
    assert gone["email"] == "gone@example.com"


def test_undoing_a_merge_queues_user_unmerged(api: TestClient, database: Database) -> None:
    survivor, source = create_user(api), create_user(api)
    merge = merged(api, survivor, source)
    create_webhook(api, topics=ALL)
    assert undo(api, merge["id"]).status_code == 200
    (payload,) = payloads(database, "user.unmerged")
    assert payload["merge"]["id"] == merge["id"] and payload["merge"]["undone_at"] is not None
    assert payload["user"]["id"] == survivor["id"]
    assert payload["restored_user"]["id"] == source["id"]
    assert payload["restored_user"]["user_id"] == source["user_id"]


def test_failed_request_queues_nothing(api: TestClient, database: Database) -> None:
    create_webhook(api, topics=ALL)
    survivor = create_user(api)
    count = len(deliveries(database))
    response = api.post(f"/api/v1/users/{survivor['id']}/merge", json={"from": survivor["id"]})
    assert response.status_code == 422
    assert len(deliveries(database)) == count


def test_rolled_back_transaction_queues_nothing(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    create_webhook(api, topics=["user.created"])
    with pytest.raises(RuntimeError), database.transaction() as session:
        environment = session.get(Environment, tenant.id)
        assert environment is not None
        users.create_user(
            session, environment=environment, data={}, source=users.ChangeSource("test")
        )
        assert any(isinstance(row, WebhookDelivery) for row in session.new)  # queued
        raise RuntimeError("the change fails after queueing")
    assert deliveries(database) == []


def test_ingestion_queues_user_created_with_the_stored_user(
    app: TestClient, api: TestClient, database: Database, tenant: Tenant
) -> None:
    create_webhook(api, topics=["user.created"])
    deliver(
        app,
        database,
        tenant,
        message("identify", userId="ing-1", traits={"email": "ing@example.com"}),
        message("identify", userId="ing-2"),
    )
    rows = payloads(database, "user.created")
    assert sorted(p["user"]["user_id"] for p in rows) == ["ing-1", "ing-2"]
    for payload in rows:
        assert payload["user"]["id"] is not None and payload["user"]["id"].isdigit()
    looked_up = api.get("/api/v1/users/lookup", params={"user_id": "ing-1"}).json()
    (first,) = [p for p in rows if p["user"]["user_id"] == "ing-1"]
    assert first["user"]["id"] == looked_up["id"]
    # Made when the batch inserted the user: with the traits of the message that created it.
    assert first["user"]["email"] == "ing@example.com"


@contextmanager
def counting(database: Database) -> Iterator[list[str]]:
    statements: list[str] = []

    def seen(_: Any, __: Any, statement: str, *___: Any) -> None:
        if "webhook_subscriptions" in statement:
            statements.append(statement)

    event.listen(database.engine, "before_cursor_execute", seen)
    try:
        yield statements
    finally:
        event.remove(database.engine, "before_cursor_execute", seen)


def _create_users(database: Database, tenant: Tenant, count: int) -> None:
    with database.transaction() as session:
        environment = session.get(Environment, tenant.id)
        assert environment is not None
        for _ in range(count):
            users.create_user(
                session, environment=environment, data={}, source=users.ChangeSource("test")
            )


def test_environment_without_webhooks_costs_one_query_per_transaction(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    with counting(database) as statements:
        _create_users(database, tenant, 5)
        assert len(statements) == 1
        _create_users(database, tenant, 5)  # a new transaction reads afresh
        assert len(statements) == 2
    assert deliveries(database) == []


def test_environment_with_webhooks_also_reads_them_once_per_transaction(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    create_webhook(api, topics=["user.created"])
    with counting(database) as statements:
        _create_users(database, tenant, 5)
    assert len(statements) == 1
    assert len(deliveries(database)) == 5


def test_webhook_created_in_the_same_transaction_is_seen(
    database: Database, tenant: Tenant
) -> None:
    with database.transaction() as session:
        queued = service.queue_event(
            session, environment_id=tenant.id, topic="user.created", data={"user": {}}
        )
        assert queued == 0
        service.create_subscription(
            session,
            environment_id=tenant.id,
            url="https://93.184.215.14/hook",
            topics=["user.created"],
        )
        queued = service.queue_event(
            session, environment_id=tenant.id, topic="user.created", data={"user": {}}
        )
        assert queued == 1
    assert len(deliveries(database)) == 1


def test_payload_function_is_not_called_when_nobody_listens(
    database: Database, tenant: Tenant
) -> None:
    def explode() -> dict[str, Any]:
        raise AssertionError("built a payload nobody receives")

    with database.transaction() as session:
        service.queue_event(session, environment_id=tenant.id, topic="user.created", data=explode)


def test_segment_topics_are_accepted(api: TestClient, database: Database, tenant: Tenant) -> None:
    create_webhook(api, topics=["segment.entered", "segment.exited"])
    with database.transaction() as session:
        for topic in ("segment.entered", "segment.exited"):
            data = {"segment": {"id": "3", "name": "VIP"}, "user": {"id": "1"}}
            service.queue_event(session, environment_id=tenant.id, topic=topic, data=data)
    assert [row.topic for row in deliveries(database)] == ["segment.entered", "segment.exited"]


def test_unknown_topic_is_a_programming_error(database: Database, tenant: Tenant) -> None:
    with pytest.raises(ValueError, match=r"user\.renamed"), database.transaction() as session:
        service.queue_event(session, environment_id=tenant.id, topic="user.renamed", data={})


def test_deliveries_are_kept_when_their_user_is_deleted(
    api: TestClient, database: Database
) -> None:
    create_webhook(api, topics=ALL)
    user = create_user(api)
    api.delete(f"/api/v1/users/{user['id']}")
    assert [row.topic for row in deliveries(database)] == ["user.created", "user.deleted"]
    assert {row.user_id for row in deliveries(database)} == {int(user["id"])}
