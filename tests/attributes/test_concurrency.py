"""Two writers setting the same new custom attribute at once both succeed (no 409)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text

from audience.attributes.models import AttributeDefinition
from audience.attributes.service import create_definition, write_custom_attributes
from audience.db import Database
from tests.conftest import PG_URL, Tenant


def _wait_for_a_lock_wait(database: Database) -> None:
    """Until another backend waits on a lock (the racing insert), at most 30 s."""
    deadline = time.monotonic() + 30
    with database.engine.connect() as connection:
        while time.monotonic() < deadline:
            waiting = connection.execute(
                text("SELECT count(*) FROM pg_locks WHERE NOT granted")
            ).scalar()
            if waiting:
                return
            time.sleep(0.02)
    raise AssertionError("the second writer never waited for the first")


@pytest.mark.skipif(not PG_URL, reason="SQLite's writers never overlap")
def test_a_definition_created_meanwhile_is_used_instead_of_a_conflict(
    database: Database, tenant: Tenant
) -> None:
    first = database.session(write=True)
    create_definition(
        first, environment_id=tenant.id, model="user", name="plan", type="string", origin="manual"
    )  # flushed, not committed: the second writer's insert has to wait for it
    outcome: dict[str, Any] = {}

    def second_writer() -> None:
        try:
            with database.transaction() as session:
                outcome["attributes"], _ = write_custom_attributes(
                    session,
                    environment_id=tenant.id,
                    model="user",
                    current={},
                    changes={"plan": "pro"},
                )
        except Exception as exc:  # the test reports it below
            outcome["error"] = exc

    writer = threading.Thread(target=second_writer)
    writer.start()
    _wait_for_a_lock_wait(database)
    first.commit()
    first.close()
    writer.join(timeout=30)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["attributes"] == {"plan": "pro"}
    with database.transaction(write=False) as session:
        count = session.scalar(
            select(func.count())
            .select_from(AttributeDefinition)
            .where(AttributeDefinition.environment_id == tenant.id)
        )
    assert count == 1
