"""End to end: the official Segment and RudderStack Python SDKs against a real `audience serve`.

The server process runs on the test's database (the SQLite file of `settings`, or the private
PostgreSQL database with AUDIENCE_TEST_DATABASE_URL); the inbox is read back through `database`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rudderstack.analytics.client import Client as RudderClient
from segment.analytics.client import Client as SegmentClient
from sqlalchemy import select

from audience.config import Settings
from audience.db import Database
from audience.environments.models import Environment
from tests.ingest.helpers import inbox_rows
from tests.serve import running_serve

APP_TOKEN = "pk_sdk_e2e_" + "t" * 20


@dataclass
class Server:
    base_url: str
    environment_id: int


@pytest.fixture
def server(settings: Settings, database: Database, tmp_path: Path) -> Iterator[Server]:
    with running_serve(
        settings,
        tmp_path,
        AUDIENCE_BOOTSTRAP_APP_TOKEN=APP_TOKEN,
        AUDIENCE_BOOTSTRAP_ADMIN_PASSWORD="sdk-e2e-password",
        # These tests check the accept path: keep serve's processor from draining the inbox.
        AUDIENCE_PROCESSOR="false",
    ) as base_url:
        with database.transaction(write=False) as session:
            query = select(Environment.id).where(Environment.app_token == APP_TOKEN)
            environment_id = session.scalar(query)
        assert environment_id is not None
        yield Server(base_url, environment_id)


def _send_every_kind(client: Any) -> list[dict[str, Any]]:
    """One call of each kind; returns the messages as the SDK queued them."""
    calls = [
        client.identify("sdk-user", {"email": "ann@example.com", "firstName": "Ann"}),
        client.track("sdk-user", "Order Completed", {"revenue": 12.5, "currency": "EUR"}),
        client.page("sdk-user", "Docs", "Install", {"path": "/docs/install"}),
        client.screen("sdk-user", "Settings", "Profile", {"tab": "profile"}),
        client.group("sdk-user", "acme", {"name": "Acme", "size": 51}),
        client.alias("sdk-anon", "sdk-user"),
    ]
    calls.append(client.track(anonymous_id="sdk-anon", event="Viewed Pricing"))
    messages = []
    for success, message in calls:
        assert success, message
        messages.append(message)
    return messages


def _assert_stored(database: Database, server: Server, sent: list[dict[str, Any]]) -> None:
    rows = inbox_rows(database)
    by_id = {row.message_id: row for row in rows}
    assert len(rows) == len(sent)
    for message in sent:
        row = by_id[message["messageId"]]
        assert row.environment_id == server.environment_id
        payload = row.payload
        assert payload["type"] == message["type"]
        for key in ("userId", "anonymousId", "event", "groupId", "previousId", "name"):
            assert payload.get(key) == message.get(key), key
        assert payload.get("properties", {}) == message.get("properties", {})
        assert payload.get("traits", {}) == message.get("traits", {})
        assert payload["context"]["library"]["name"] == "analytics-python"
        assert payload["originalTimestamp"] == message["timestamp"]
        assert payload["sentAt"] and payload["receivedAt"] and payload["timestamp"]
        assert "writeKey" not in payload
        assert "warnings" not in payload


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_sdk_messages_land_in_the_inbox(
    gzip: bool, server: Server, database: Database
) -> None:
    errors: list[Exception] = []
    client = SegmentClient(
        write_key=APP_TOKEN,
        host=server.base_url,
        gzip=gzip,
        max_retries=1,
        on_error=lambda error, _batch: errors.append(error),
    )
    sent = _send_every_kind(client)
    client.flush()
    client.shutdown()
    assert errors == []
    _assert_stored(database, server, sent)


def test_rudderstack_sdk_messages_land_in_the_inbox(server: Server, database: Database) -> None:
    errors: list[Exception] = []
    client = RudderClient(  # gzip is on by default
        write_key=APP_TOKEN,
        host=server.base_url,
        max_retries=1,
        on_error=lambda error, _batch: errors.append(error),
    )
    assert client.gzip is True
    sent = _send_every_kind(client)
    client.flush()
    client.shutdown()
    assert errors == []
    _assert_stored(database, server, sent)


@pytest.mark.parametrize("sdk", [SegmentClient, RudderClient], ids=["segment", "rudderstack"])
def test_sdks_give_up_on_a_wrong_write_key_with_our_error_code(
    sdk: Any, server: Server, database: Database
) -> None:
    errors: list[Any] = []
    client = sdk(
        write_key="pk_wrong",
        host=server.base_url,
        max_retries=3,
        on_error=lambda error, _batch: errors.append(error),
    )
    client.track("sdk-user", "Order Completed")
    started = time.monotonic()
    client.flush()
    client.shutdown()
    # A 4xx is final for both SDKs: reported once, no retries with backoff.
    assert time.monotonic() - started < 5
    [error] = errors
    assert (error.status, error.code) == (401, "unauthorized")
    assert inbox_rows(database) == []
