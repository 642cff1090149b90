"""Sending deliveries to a real HTTP receiver on 127.0.0.1: body, signature, retries, the log.

The deliverer's clock is faked; only the timeout test waits (half a second), for real.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from audience.app import create_app
from audience.cli import app as cli
from audience.config import Settings
from audience.db import Database
from audience.webhooks import deliver
from audience.webhooks.deliver import Deliverer, backoff, claim
from tests.conftest import Tenant
from tests.processing.helpers import message, process, send
from tests.webhooks.helpers import (
    FakeClock,
    Receiver,
    Reply,
    create_webhook,
    deliveries,
    delivery,
    verify,
)

ALL_TOPICS = ["user.created", "user.deleted", "user.merged", "user.unmerged"]


def _setup(api: TestClient, receiver: Receiver) -> tuple[dict[str, object], str]:
    webhook = create_webhook(api, url=receiver.url, topics=ALL_TOPICS)
    ping = api.post(f"/api/v1/webhooks/{webhook['id']}/ping").json()
    return webhook, str(ping["id"])


def test_delivery_posts_the_signed_json_body(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: FakeClock,
    tenant: Tenant,
) -> None:
    webhook, ping = _setup(private_api, receiver)
    assert deliverer.run_once() == 1
    (request,) = receiver.requests
    assert request.path == "/hook"
    body = orjson.loads(request.body)
    assert body["id"] == ping and body["topic"] == "ping"
    assert body["environment_id"] == str(tenant.id)
    assert isinstance(body["created_at"], int)
    assert body["data"] == {"webhook": {"id": webhook["id"]}, "message": "ping"}
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["x-audience-delivery"] == ping
    assert headers["x-audience-topic"] == "ping"
    assert headers["x-audience-attempt"] == "1"
    assert headers["user-agent"].startswith("audience-webhooks/")
    signature = headers["x-audience-signature"]
    assert signature.startswith(f"t={int(clock.now.timestamp())},v1=")
    assert verify(str(webhook["secret"]), signature, request.body)
    assert not verify("whsec_wrong", signature, request.body)
    assert not verify(str(webhook["secret"]), signature, request.body + b" ")
    row = delivery(database, ping)
    assert row.status == "succeeded" and row.attempts == 1
    assert row.last_status_code == 200 and row.last_response == "ok"
    assert row.delivered_at == clock.now and row.next_attempt_at is None


def test_the_receiver_snippet_in_the_docs_verifies_a_delivery(
    private_api: TestClient, receiver: Receiver, deliverer: Deliverer
) -> None:
    text = (Path(__file__).parents[2] / "docs" / "webhooks.md").read_text()
    snippet = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(snippet, namespace)  # our own documentation
    webhook, _ = _setup(private_api, receiver)
    deliverer.run_once()
    (request,) = receiver.requests
    signature = request.headers["x-audience-signature"]
    assert namespace["verify"](webhook["secret"], signature, request.body)
    assert not namespace["verify"](webhook["secret"], signature, request.body[:-1])
    assert not namespace["verify"]("whsec_other", signature, request.body)


def test_succeeded_delivery_is_not_sent_again(
    private_api: TestClient, receiver: Receiver, deliverer: Deliverer, clock: FakeClock
) -> None:
    _setup(private_api, receiver)
    assert deliverer.drain() == 1
    clock.advance(86400)
    assert deliverer.drain() == 0
    assert len(receiver.requests) == 1


def test_server_error_is_retried_with_backoff(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: FakeClock,
) -> None:
    receiver.default = Reply(500, b"boom")
    _, ping = _setup(private_api, receiver)
    deliverer.run_once()
    row = delivery(database, ping)
    assert row.status == "pending" and row.attempts == 1
    assert row.last_status_code == 500 and row.last_error == "HTTP 500"
    assert row.last_response == "boom"
    assert row.next_attempt_at == clock.now + timedelta(seconds=30)
    clock.advance(29)
    assert deliverer.run_once() == 0
    clock.advance(1)
    assert deliverer.run_once() == 1
    assert receiver.requests[1].headers["x-audience-attempt"] == "2"
    assert delivery(database, ping).next_attempt_at == clock.now + timedelta(seconds=60)
    assert len(receiver.requests) == 2


def test_backoff_doubles_from_30_seconds_up_to_two_hours() -> None:
    assert [backoff(n) for n in range(1, 10)] == [
        30,
        60,
        120,
        240,
        480,
        960,
        1920,
        3840,
        7200,
    ]


def test_success_after_a_retry(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: FakeClock,
) -> None:
    receiver.replies = [Reply(503)]
    _, ping = _setup(private_api, receiver)
    deliverer.run_once()
    clock.advance(30)
    deliverer.run_once()
    row = delivery(database, ping)
    assert row.status == "succeeded" and row.attempts == 2
    assert row.last_status_code == 200 and row.last_error is None
    # The same delivery id and body each time: receivers dedupe on it.
    first, second = receiver.requests
    assert first.body == second.body
    assert first.headers["x-audience-delivery"] == second.headers["x-audience-delivery"]


def test_delivery_fails_after_the_last_attempt(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: FakeClock,
) -> None:
    receiver.default = Reply(500)
    _, ping = _setup(private_api, receiver)
    for attempt in range(1, deliver.MAX_ATTEMPTS + 1):
        assert deliverer.run_once() == 1
        if attempt < deliver.MAX_ATTEMPTS:
            clock.advance(backoff(attempt))
    row = delivery(database, ping)
    assert row.status == "failed" and row.attempts == deliver.MAX_ATTEMPTS
    assert row.next_attempt_at is None and row.delivered_at is None
    clock.advance(86400 * 7)
    assert deliverer.drain() == 0
    assert len(receiver.requests) == deliver.MAX_ATTEMPTS


def test_timeout_is_a_failed_attempt_retried_later(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: FakeClock,
) -> None:
    receiver.replies = [Reply(delay=1.5)]  # the deliverer's read timeout is 0.5 s
    _, ping = _setup(private_api, receiver)
    deliverer.run_once()
    row = delivery(database, ping)
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error is not None and row.last_error.startswith("timeout")
    assert row.last_status_code is None
    assert row.next_attempt_at == clock.now + timedelta(seconds=30)
    clock.advance(30)
    deliverer.run_once()
    assert delivery(database, ping).status == "succeeded"


def test_slow_trickling_response_is_cut_at_the_deadline(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    # A receiver that answers in time but never finishes its body can't hold the sender.
    receiver.default = Reply(200, b"x" * 10)
    _, ping = _setup(private_api, receiver)
    sender = Deliverer(database, allow_private=True, clock=clock, deadline=0.0)
    sender.run_once()
    sender.close()
    assert delivery(database, ping).status == "succeeded"


def test_redirect_is_not_followed(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
) -> None:
    receiver.replies = [Reply(302, headers={"Location": "http://169.254.169.254/"})]
    _, ping = _setup(private_api, receiver)
    deliverer.run_once()
    row = delivery(database, ping)
    assert row.status == "pending" and row.last_status_code == 302
    assert row.last_error == "HTTP 302"
    assert len(receiver.requests) == 1


def test_retry_after_header_postpones_the_next_attempt(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: FakeClock,
) -> None:
    receiver.replies = [Reply(429, headers={"Retry-After": "600"})]
    _, ping = _setup(private_api, receiver)
    deliverer.run_once()
    assert delivery(database, ping).next_attempt_at == clock.now + timedelta(seconds=600)


def test_response_is_read_up_to_a_cap_and_logged_shortened(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
) -> None:
    receiver.replies = [Reply(400, b"\x00e" * 200_000)]
    _, ping = _setup(private_api, receiver)
    deliverer.run_once()
    row = delivery(database, ping)
    assert row.last_status_code == 400
    assert row.last_response == "e" * 1000


def test_unreachable_receiver_is_a_failed_attempt(
    private_api: TestClient, database: Database, receiver: Receiver, deliverer: Deliverer
) -> None:
    webhook = create_webhook(private_api, url=f"http://127.0.0.1:{receiver.port}/hook")
    receiver.__exit__()  # nothing listens there any more
    ping = private_api.post(f"/api/v1/webhooks/{webhook['id']}/ping").json()["id"]
    deliverer.run_once()
    row = delivery(database, ping)
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error is not None and row.last_error.startswith("connection failed")


def test_inactive_webhook_holds_its_deliveries(
    private_api: TestClient, receiver: Receiver, deliverer: Deliverer
) -> None:
    webhook, _ = _setup(private_api, receiver)
    private_api.patch(f"/api/v1/webhooks/{webhook['id']}", json={"active": False})
    assert deliverer.drain() == 0
    private_api.patch(f"/api/v1/webhooks/{webhook['id']}", json={"active": True})
    assert deliverer.drain() == 1
    assert len(receiver.requests) == 1


def test_rotated_secret_signs_beside_the_old_one_until_it_expires(
    private_api: TestClient, receiver: Receiver, deliverer: Deliverer, clock: FakeClock
) -> None:
    webhook, _ = _setup(private_api, receiver)
    rotated = private_api.post(
        f"/api/v1/webhooks/{webhook['id']}/rotate-secret", json={"keep_previous_hours": 1}
    ).json()
    deliverer.run_once()
    request = receiver.requests[-1]
    signature = request.headers["x-audience-signature"]
    assert signature.count("v1=") == 2
    assert verify(str(webhook["secret"]), signature, request.body)
    assert verify(rotated["secret"], signature, request.body)
    clock.advance(3600)
    private_api.post(f"/api/v1/webhooks/{webhook['id']}/ping")
    deliverer.run_once()
    request = receiver.requests[-1]
    signature = request.headers["x-audience-signature"]
    assert signature.count("v1=") == 1
    assert not verify(str(webhook["secret"]), signature, request.body)
    assert verify(rotated["secret"], signature, request.body)


def test_delivery_log_through_the_api(
    private_api: TestClient, receiver: Receiver, deliverer: Deliverer, clock: FakeClock
) -> None:
    receiver.default = Reply(500, b"down")
    webhook, failing = _setup(private_api, receiver)
    deliverer.run_once()
    clock.advance(30)
    deliverer.run_once()  # fails twice
    receiver.default = Reply(200, b"thanks")
    ok = private_api.post(f"/api/v1/webhooks/{webhook['id']}/ping").json()["id"]
    deliverer.drain()
    log = private_api.get(f"/api/v1/webhooks/{webhook['id']}/deliveries").json()
    assert [item["id"] for item in log["deliveries"]] == [ok, failing]
    shown = {item["id"]: item for item in log["deliveries"]}
    assert shown[failing]["status"] == "pending" and shown[failing]["attempts"] == 2
    assert shown[failing]["last_status_code"] == 500
    assert shown[failing]["last_error"] == "HTTP 500"
    assert shown[failing]["last_response"] == "down"
    assert shown[failing]["last_attempt_at"] == int(clock.now.timestamp())
    assert shown[failing]["next_attempt_at"] == int(clock.now.timestamp()) + 60
    assert shown[ok]["status"] == "succeeded" and shown[ok]["attempts"] == 1
    assert shown[ok]["last_response"] == "thanks"
    assert shown[ok]["delivered_at"] == int(clock.now.timestamp())
    assert shown[ok]["next_attempt_at"] is None


def test_retried_failed_delivery_is_sent_again(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: FakeClock,
) -> None:
    receiver.default = Reply(500)
    _, ping = _setup(private_api, receiver)
    for attempt in range(1, deliver.MAX_ATTEMPTS + 1):
        deliverer.run_once()
        clock.advance(backoff(attempt))
    assert delivery(database, ping).status == "failed"
    receiver.default = Reply(204, b"")
    assert private_api.post(f"/api/v1/webhook-deliveries/{ping}/retry").status_code == 200
    assert deliverer.drain() == 1
    row = delivery(database, ping)
    assert row.status == "succeeded" and row.attempts == 1 and row.last_status_code == 204


def test_claimed_deliveries_are_not_claimed_again_until_the_lease_ends(
    private_api: TestClient, database: Database, receiver: Receiver, clock: FakeClock
) -> None:
    _setup(private_api, receiver)
    with database.transaction() as session:
        assert len(claim(session, now=clock.now, limit=10)) == 1
    with database.transaction() as session:
        assert claim(session, now=clock.now, limit=10) == []
    # A sender that died mid-send: after the lease another one takes the delivery over.
    with database.transaction() as session:
        later = clock.now + deliver.LEASE
        assert len(claim(session, now=later, limit=10)) == 1


def test_a_pass_takes_a_few_deliveries_oldest_first(
    private_api: TestClient, receiver: Receiver, database: Database, clock: FakeClock
) -> None:
    webhook, first = _setup(private_api, receiver)
    for _ in range(4):
        private_api.post(f"/api/v1/webhooks/{webhook['id']}/ping")
    with database.transaction() as session:
        taken = claim(session, now=clock.now, limit=3)
    assert [item.id for item in taken] == [int(first), int(first) + 1, int(first) + 2]


def test_two_senders_never_take_the_same_delivery(
    private_api: TestClient, receiver: Receiver, database: Database, clock: FakeClock
) -> None:
    if database.engine.dialect.name != "postgresql":
        pytest.skip("SKIP LOCKED is PostgreSQL's; SQLite has one writer at a time")
    webhook, _ = _setup(private_api, receiver)
    for _ in range(3):
        private_api.post(f"/api/v1/webhooks/{webhook['id']}/ping")
    first = database.session(write=True)
    try:
        mine = claim(first, now=clock.now, limit=2)  # locked, not committed yet
        with database.transaction() as second:
            theirs = claim(second, now=clock.now, limit=10)
        assert len(mine) == 2 and len(theirs) == 2
        assert not {item.id for item in mine} & {item.id for item in theirs}
    finally:
        first.rollback()
        first.close()


def test_serve_runs_the_sender_in_the_background(
    settings: Settings, database: Database, tenant: Tenant, receiver: Receiver
) -> None:
    running = settings.model_copy(update={"webhook_allow_private": True, "processor": False})
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    with TestClient(create_app(running, database=database), headers=headers) as client:
        _setup(client, receiver)
        waited = 0.0
        while not receiver.requests and waited < 10:
            time.sleep(0.05)
            waited += 0.05
    assert len(receiver.requests) == 1


def test_sender_can_be_turned_off(
    settings: Settings, database: Database, tenant: Tenant, receiver: Receiver
) -> None:
    off = settings.model_copy(
        update={"webhook_allow_private": True, "processor": False, "webhook_sender": False}
    )
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    with TestClient(create_app(off, database=database), headers=headers) as client:
        _setup(client, receiver)
        time.sleep(0.3)
    assert receiver.requests == []


def test_deliverer_reads_allow_private_from_the_settings(
    settings: Settings, database: Database
) -> None:
    assert Deliverer(database).allow_private is False
    allowed = Database(settings.model_copy(update={"webhook_allow_private": True}))
    try:
        assert Deliverer(allowed, timeout=httpx.Timeout(1.0)).allow_private is True
    finally:
        allowed.dispose()


def test_worker_once_sends_due_webhooks(
    settings: Settings,
    private_api: TestClient,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _setup(private_api, receiver)
    monkeypatch.setenv("AUDIENCE_DATA_DIR", str(settings.data_dir))
    if settings.database_url:
        monkeypatch.setenv("AUDIENCE_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("AUDIENCE_WEBHOOK_ALLOW_PRIVATE", "true")
    result = CliRunner().invoke(cli, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert "attempted 1 webhook deliveries" in result.output
    assert len(receiver.requests) == 1


def test_a_commit_that_queues_a_delivery_wakes_an_idle_sender(
    private_api: TestClient,
    app: TestClient,
    tenant: Tenant,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
) -> None:
    """The sender polls only every `idle_seconds` (here far longer than the test waits), yet
    deliveries committed in its process go out at once: from a REST request, and from the
    processor, whose batch queues them inside a savepoint (released before the real commit)."""
    define = {"model": "user", "name": "plan", "type": "string"}
    assert private_api.post("/api/v1/data_attributes", json=define).status_code == 200
    pro = {"field": "custom_attributes.plan", "op": "eq", "value": "pro"}
    segment = private_api.post("/api/v1/segments", json={"name": "Pro", "filter": pro})
    assert segment.status_code == 200, segment.text
    stop = threading.Event()
    thread = threading.Thread(
        target=deliverer.run_forever, args=(stop,), kwargs={"idle_seconds": 600}
    )
    thread.start()

    def arrived(count: int) -> bool:
        deadline = time.monotonic() + 60
        while len(receiver.requests) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(receiver.requests) == count

    try:
        time.sleep(0.2)  # let it find the outbox empty and go idle
        webhook = create_webhook(private_api, url=receiver.url, topics=["segment.entered"])
        ping = private_api.post(f"/api/v1/webhooks/{webhook['id']}/ping")  # queued by a request
        assert ping.status_code == 200, ping.text
        assert arrived(1)
        send(app, tenant, message("identify", userId="u1", traits={"plan": "pro"}))
        process(database)
        assert arrived(2)
        assert orjson.loads(receiver.requests[1].body)["topic"] == "segment.entered"
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_the_log_forgets_finished_deliveries_after_the_retention_days(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    deliverer: Deliverer,
    clock: FakeClock,
) -> None:
    webhook, old = _setup(private_api, receiver)

    def ping() -> str:
        response = private_api.post(f"/api/v1/webhooks/{webhook['id']}/ping")
        assert response.status_code == 200, response.text
        return str(response.json()["id"])

    def log() -> dict[str, str]:
        return {str(row.id): row.status for row in deliveries(database)}

    assert deliverer.run_once() == 1  # `old` succeeds
    receiver.default = Reply(500)
    retrying = ping()
    assert deliverer.run_once() == 1  # a failed attempt: still pending
    clock.advance(31 * 86400)
    queued = ping()
    assert deliverer.log_days == 30
    assert deliverer.prune() == 1  # pending rows stay, however old their last attempt
    assert log() == {retrying: "pending", queued: "pending"}
    receiver.default = Reply(200)
    assert deliverer.run_once() == 2
    assert deliverer.prune() == 0  # finished just now
    deliverer.log_days = 0  # AUDIENCE_WEBHOOK_LOG_DAYS=0 keeps the log forever
    clock.advance(365 * 86400)
    assert deliverer.prune() == 0
    assert log() == {retrying: "succeeded", queued: "succeeded"}
    assert old not in log()
