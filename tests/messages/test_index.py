"""The warnings listing reads the partial index of migration 0007, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text

from audience.db import Database
from audience.ingest.models import ProcessedMessage
from audience.messages import service
from audience.pagination import PageParams
from tests.conftest import Tenant

INDEX = "ix_processed_messages_warned"


@pytest.fixture
def populated(tenant: Tenant, database: Database) -> Tenant:
    """5,000 processed messages, 1 in 100 with a warning, statistics gathered."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "environment_id": tenant.id,
            "message_id": f"m-{n:05d}",
            "kind": "identify",
            "warnings": [{"code": "invalid_value", "message": "x"}] if n % 100 == 0 else [],
            "processed_at": start + timedelta(seconds=n),
        }
        for n in range(5000)
    ]
    with database.transaction() as session:
        session.execute(insert(ProcessedMessage), rows)
    with database.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    return tenant


def _plans(database: Database, tenant: Tenant, params: PageParams, **filters: Any) -> list[str]:
    """The query plans of the statements the listing sends to processed_messages."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM processed_messages" in statement and "EXPLAIN" not in statement:
            seen.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        with database.transaction(write=False) as session:
            page = service.list_warned(session, environment_id=tenant.id, params=params, **filters)
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    assert page.items
    sqlite = database.engine.dialect.name == "sqlite"
    plans = []
    with database.engine.connect() as connection:
        for statement, parameters in seen:
            explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = connection.exec_driver_sql(explain + statement, parameters).fetchall()
            plans.append("\n".join(str(row[-1] if sqlite else row[0]) for row in rows))
    return plans


def test_the_listing_its_count_and_its_cursor_read_the_partial_index(
    populated: Tenant, database: Database
) -> None:
    first = _plans(database, populated, PageParams(per_page=5))
    assert len(first) == 2  # the count, the page
    for plan in first:
        assert INDEX in plan, plan
    with database.transaction(write=False) as session:
        page = service.list_warned(
            session, environment_id=populated.id, params=PageParams(per_page=5)
        )
    assert page.total == 50 and page.next_cursor
    for plan in _plans(
        database, populated, PageParams(per_page=5, starting_after=page.next_cursor)
    ):
        assert INDEX in plan, plan
    for plan in _plans(database, populated, PageParams(), code="invalid_value"):
        assert INDEX in plan, plan
