"""Merges racing other writers (R-ID-8): no deadlock, nothing lost.

On SQLite writers are serialised by BEGIN IMMEDIATE; on PostgreSQL these exercise the row locks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audience.db import Database
from audience.environments.models import Environment
from audience.events import service as events
from audience.events.models import Event
from audience.users import merge as merges
from tests.conftest import Tenant
from tests.factories import create_user
from tests.users.test_merge import fetch, merge, undo


def run_together(*tasks: Callable[[], Any]) -> list[Any]:
    """Start the tasks at the same moment in threads; their results (or exceptions) in order."""
    barrier = threading.Barrier(len(tasks))
    results: list[Any] = [None] * len(tasks)

    def run(n: int, task: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[n] = task()
        except Exception as exc:  # reported to the test, not lost in the thread
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n, t)) for n, t in enumerate(tasks)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def test_opposite_merges_at_once_never_deadlock(api: TestClient) -> None:
    for _ in range(5):
        a, b = create_user(api), create_user(api)
        first, second = run_together(
            lambda a=a, b=b: merge(api, a, b), lambda a=a, b=b: merge(api, b, a)
        )
        assert sorted([first.status_code, second.status_code]) == [200, 409]


def test_merges_into_one_survivor_at_once_all_apply(api: TestClient) -> None:
    survivor = create_user(api)
    sources = [create_user(api) for _ in range(4)]
    results = run_together(*[lambda s=s: merge(api, survivor, s) for s in sources])
    assert [r.status_code for r in results] == [200] * 4
    for source in sources:
        assert api.get(f"/api/v1/users/{source['id']}").status_code == 404
    assert fetch(api, survivor)["id"] == survivor["id"]


def test_concurrent_undo_of_one_merge_applies_once(api: TestClient) -> None:
    survivor, source = create_user(api), create_user(api)
    body = merge(api, survivor, source).json()
    first, second = run_together(lambda: undo(api, body["id"]), lambda: undo(api, body["id"]))
    assert sorted([first.status_code, second.status_code]) == [200, 409]


def test_events_written_while_a_merge_runs_are_not_lost(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    """A writer that takes `hold_user` before inserting never leaves an event on a merged-away
    user: it either commits before the merge (and the event moves) or waits and follows the
    merge to the survivor."""
    survivor, source = create_user(api), create_user(api)
    source_id, survivor_id = int(source["id"]), int(survivor["id"])

    def write(count: int) -> None:
        for n in range(count):
            with database.transaction() as session:
                environment = session.get(Environment, tenant.id)
                assert environment is not None
                user = merges.hold_user(session, environment_id=tenant.id, id=source_id)
                events.create_event(session, environment=environment, user=user, name=f"E{n}")

    def merge_midway() -> None:
        with database.transaction() as session:
            merges.merge_users(
                session,
                environment_id=tenant.id,
                source_id=source_id,
                target_id=survivor_id,
                reason="api",
                actor="test",
            )

    results = run_together(lambda: write(30), lambda: write(30), merge_midway)
    assert [r for r in results if isinstance(r, Exception)] == []
    with database.transaction() as session:
        counts = dict(
            session.execute(
                select(Event.user_id, func.count())
                .where(Event.environment_id == tenant.id)
                .group_by(Event.user_id)
            ).all()
        )
    assert counts == {survivor_id: 60}
