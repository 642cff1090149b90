"""The processor's own guarantees: order, isolation of bad messages, one processor at a time."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audience.db import Database
from audience.ingest.models import FailedMessage, InboxMessage
from audience.ingest.processor import Processor
from audience.users.models import User
from tests.conftest import Tenant
from tests.processing.helpers import (
    crash_on_event,
    deliver,
    events_of,
    message,
    process,
    send,
    user_by,
)


def count(database: Database, model: Any) -> int:
    with database.transaction(write=False) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_processing_empties_the_inbox(app: TestClient, database: Database, tenant: Tenant) -> None:
    send(app, tenant, *[message("track", userId="u", event=f"E{n}") for n in range(30)])
    assert count(database, InboxMessage) == 30
    assert process(database) == 30
    assert count(database, InboxMessage) == 0


def test_later_messages_win_for_one_user(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        *[message("identify", userId="u", traits={"plan": f"p{n}"}) for n in range(10)],
    )
    assert user_by(api, user_id="u")["custom_attributes"] == {"plan": "p9"}


def test_a_message_that_crashes_goes_to_failed_messages_and_the_rest_apply(
    app: TestClient,
    database: Database,
    tenant: Tenant,
    api: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    crash_on_event(monkeypatch, "poison")
    deliver(
        app,
        database,
        tenant,
        message("track", userId="u", event="before"),
        message("track", userId="u", event="poison"),
        message("track", userId="u", event="after"),
    )
    names = [event["name"] for event in events_of(api, user_by(api, user_id="u"))]
    assert sorted(names) == ["after", "before"]
    with database.transaction(write=False) as session:
        (failure,) = session.scalars(select(FailedMessage))
        assert (failure.error_code, failure.stage) == ("internal_error", "apply")
        assert failure.payload["event"] == "poison"
    assert count(database, InboxMessage) == 0


def test_concurrent_requests_for_one_new_person_make_one_user(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    def post(n: int) -> None:
        send(
            app,
            tenant,
            message("identify", userId="racer", anonymousId=f"device-{n}"),
            message("track", userId="racer", anonymousId=f"device-{n}", event="E"),
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(post, range(24)))
    process(database)
    with database.transaction(write=False) as session:
        users = list(session.scalars(select(User).where(User.merged_into_id.is_(None))))
    assert [user.user_id for user in users] == ["racer"]


def test_two_processors_at_once_apply_each_message_once(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    send(app, tenant, *[message("page", anonymousId="a", name=f"P{n}") for n in range(400)])
    results: list[int] = []

    def run() -> None:
        results.append(Processor(database, batch_size=25).drain())

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    process(database)
    assert user_by(api, anonymous_id="a")["page_views"] == 400
    assert count(database, InboxMessage) == 0


def test_healthz_reports_ingestion_lag(app: TestClient, database: Database, tenant: Tenant) -> None:
    send(app, tenant, message("track", userId="u", event="E"))
    waiting = app.get("/healthz").json()["ingestion"]
    assert waiting["waiting"] == 1 and waiting["lag_seconds"] >= 0
    process(database)
    assert app.get("/healthz").json()["ingestion"] == {"waiting": 0, "lag_seconds": 0.0}


def test_serve_processes_in_the_background(
    settings: Any, database: Database, tenant: Tenant
) -> None:
    from audience.app import create_app

    with TestClient(create_app(settings, database=database)) as live:
        send(live, tenant, message("identify", userId="bg", traits={"plan": "pro"}))
        for _ in range(100):
            found = live.get(
                "/api/v1/users/lookup",
                params={"user_id": "bg"},
                headers={"Authorization": f"Bearer {tenant.api_key}"},
            )
            if found.status_code == 200:
                break
            threading.Event().wait(0.05)
    assert found.status_code == 200 and found.json()["custom_attributes"] == {"plan": "pro"}


def test_new_people_after_a_crashing_new_person_are_created(
    app: TestClient,
    database: Database,
    tenant: Tenant,
    api: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The crashing message's new user is taken back with its savepoint; the next new person
    # may get the same id on SQLite, and the one after must not meet a stale object for it.
    crash_on_event(monkeypatch, "poison")
    deliver(
        app,
        database,
        tenant,
        message("track", userId="u-1", event="before"),
        message("track", userId="u-2", event="poison"),
        message("track", userId="u-3", event="after"),
        message("identify", userId="u-4", traits={"plan": "pro"}),
    )
    assert [event["name"] for event in events_of(api, user_by(api, user_id="u-3"))] == ["after"]
    assert user_by(api, user_id="u-4")["custom_attributes"] == {"plan": "pro"}
    assert api.get("/api/v1/users/lookup", params={"user_id": "u-2"}).status_code == 404
    with database.transaction(write=False) as session:
        failures = [failure.payload["event"] for failure in session.scalars(select(FailedMessage))]
    assert failures == ["poison"]
