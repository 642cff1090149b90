"""`audience.pagination`: cursors over an integer or a string tie-break column."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from audience.db import Database
from audience.errors import AudienceError
from audience.ingest.models import ProcessedMessage
from audience.pagination import Order, PageParams, paginate
from audience.users.models import User
from tests.conftest import Tenant


def cursor_of(value: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(value)).decode().rstrip("=")


@pytest.mark.parametrize("row_value", [False, True])
@pytest.mark.parametrize("descending", [False, True])
def test_a_string_tie_break_walks_every_row_once_in_order(
    database: Database, tenant: Tenant, row_value: bool, descending: bool
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    message_ids = [f"m-{n}" for n in range(20)] + ["M-1", "a b", "ünï", "0"]
    rows = [
        {
            "environment_id": tenant.id,
            "message_id": message_id,
            "kind": "identify",
            "warnings": [],
            "processed_at": start + timedelta(seconds=n % 3),  # runs of equal times
        }
        for n, message_id in enumerate(message_ids)
    ]
    with database.transaction() as session:
        session.execute(insert(ProcessedMessage), rows)
    order = Order(
        "processed_at",
        ProcessedMessage.processed_at,
        ProcessedMessage.message_id,
        descending=descending,
        row_value=row_value,
    )
    query = select(ProcessedMessage).where(ProcessedMessage.environment_id == tenant.id)
    with database.transaction(write=False) as session:
        whole = paginate(session, query, order=order, params=PageParams(per_page=150))
        expected = [row.message_id for row in whole.items]
        seen: list[str] = []
        params = PageParams(per_page=5)
        for page in range(1, 6):
            listed = paginate(session, query, order=order, params=params)
            assert listed.page == page and listed.total == len(message_ids)
            seen += [row.message_id for row in listed.items]
            if listed.next_cursor is None:
                break
            params = PageParams(per_page=5, starting_after=listed.next_cursor)
    assert page == 5 and seen == expected and sorted(seen) == sorted(message_ids)
    times = [row.processed_at for row in whole.items]
    assert times == sorted(times, reverse=descending)


def test_a_string_tie_break_cursor_must_hold_a_string_that_fits(database: Database) -> None:
    order = Order("processed_at", ProcessedMessage.processed_at, ProcessedMessage.message_id, True)
    at = {"dt": "2026-01-01T00:00:00+00:00"}
    query = select(ProcessedMessage)
    with database.transaction(write=False) as session:
        for last_id in (5, None, True, "m\x00", "m" * 101, ["m"]):
            params = PageParams(starting_after=cursor_of(["processed_at", True, at, last_id, 1]))
            with pytest.raises(AudienceError) as raised:
                paginate(session, query, order=order, params=params)
            assert raised.value.code == "invalid_cursor"
        params = PageParams(starting_after=cursor_of(["processed_at", True, at, "m" * 100, 1]))
        assert paginate(session, query, order=order, params=params).page == 2


def test_an_order_needs_an_integer_or_string_tie_break_and_row_value_a_not_null_column() -> None:
    with pytest.raises(TypeError):
        Order("message_id", ProcessedMessage.message_id, ProcessedMessage.processed_at)
    nullable = User.email
    assert Order("email", nullable, User.id).nullable
    with pytest.raises(ValueError):
        Order("email", nullable, User.id, row_value=True)


def test_integer_tie_break_cursors_keep_their_format(api: TestClient) -> None:
    """Cursors handed out before the tie-break could be a string still work, byte for byte."""
    made = [api.post("/api/v1/tags", json={"name": name}).json() for name in ("a", "b", "c")]
    first = api.get("/api/v1/tags", params={"per_page": 1}).json()
    cursor = first["pages"]["next"]["starting_after"]
    assert cursor == cursor_of(["name", False, "a", int(made[0]["id"]), 1])
    second = api.get("/api/v1/tags", params={"per_page": 1, "starting_after": cursor}).json()
    assert [tag["name"] for tag in second["tags"]] == ["b"] and second["pages"]["page"] == 2
    for forged in (
        ["name", False, "a", made[0]["id"], 1],  # a string where the id is an integer
        ["name", False, "a", True, 1],
        ["name", False, "a", 1.5, 1],
        ["name", False, "a", 1, True],
        ["name", False, "a", 1, 0],
    ):
        response = api.get("/api/v1/tags", params={"starting_after": cursor_of(forged)})
        assert response.status_code == 400, forged
        (error,) = response.json()["errors"]
        assert (error["code"], error["field"]) == ("invalid_cursor", "starting_after")


def test_a_forged_time_at_the_edge_of_the_calendar_is_a_bad_cursor(api: TestClient) -> None:
    forged = cursor_of(["timestamp", True, {"dt": "0001-01-01T00:00:00+05:00"}, 1, 1])
    response = api.get("/api/v1/events", params={"starting_after": forged})
    assert response.status_code == 400, response.text
    (error,) = response.json()["errors"]
    assert (error["code"], error["field"]) == ("invalid_cursor", "starting_after")
