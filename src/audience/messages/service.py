"""What became of a message sent to /v1: pending, processed or failed, and the warnings list.

A messageId is looked up where each outcome leaves it: `events` (unique per environment) and
`processed_messages` (primary key) for what was applied, the `inbox` for what is still waiting,
`failed_messages` for what failed. Applied wins: dedupe (R-ING-7) makes a waiting duplicate or a
replay of an applied message a no-op. Then waiting: a failed message put back by a replay is
pending again. Then the latest failure.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from sqlalchemy import (
    ColumnElement,
    Select,
    String,
    exists,
    func,
    literal,
    literal_column,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql import type_coerce

from audience.db import UtcDateTime
from audience.errors import AudienceError
from audience.events.models import Event
from audience.ingest.models import FailedMessage, InboxMessage, ProcessedMessage
from audience.pagination import Page, PageParams
from audience.users.models import User


class MessageNotFound(AudienceError):
    def __init__(self, message_id: str) -> None:
        super().__init__(
            "message_not_found",
            f"message {message_id[:100]!r} not found in this environment",
            status=404,
        )


State = Literal["pending", "processed", "failed"]


@dataclass
class Status:
    """The rows that tell one message's status; `status` says which of them count."""

    message_id: str
    status: State
    processed: ProcessedMessage | None = None
    event: Event | None = None
    customer_user_id: str | None = None  # the `user_id` of the event's user
    waiting: InboxMessage | None = None
    position: int | None = None  # inbox rows ahead of it
    failed: FailedMessage | None = None


def message_status(session: Session, *, environment_id: int, message_id: str) -> Status:
    processed = session.get(ProcessedMessage, (environment_id, message_id))
    found = _events(session, environment_id, [message_id]).get(message_id)
    if processed is not None or found is not None:
        event, customer_user_id = found or (None, None)
        return Status(message_id, "processed", processed, event, customer_user_id)
    waiting = session.scalar(
        select(InboxMessage)
        .where(InboxMessage.environment_id == environment_id)
        .where(InboxMessage.message_id == message_id)
        .order_by(InboxMessage.id)
        .limit(1)
    )
    if waiting is not None:
        # The processor takes the inbox in id order, every environment alike.
        ahead = select(func.count()).where(InboxMessage.id < waiting.id)
        return Status(message_id, "pending", waiting=waiting, position=session.scalar(ahead))
    failed = session.scalar(
        select(FailedMessage)
        .where(FailedMessage.environment_id == environment_id)
        .where(FailedMessage.message_id == message_id)
        .order_by(FailedMessage.id.desc())
        .limit(1)
    )
    if failed is not None:
        return Status(message_id, "failed", failed=failed)
    raise MessageNotFound(message_id)


def _events(
    session: Session, environment_id: int, message_ids: list[str]
) -> dict[str, tuple[Event, str | None]]:
    """The events these messages became, with their users' `user_id`s (one indexed query)."""
    query = (
        select(Event, User.user_id)
        .join(User, User.id == Event.user_id)
        .where(Event.environment_id == environment_id, Event.message_id.in_(message_ids))
    )
    return {event.message_id: (event, user_id) for event, user_id in session.execute(query)}


# --- the listing of processed messages with warnings ---------------------------------------

# Word for word the predicate of the partial index ix_processed_messages_warned (migration 0007).
WARNED = ProcessedMessage.warnings != literal_column("'[]'")
_CURSOR = "message_warnings"


def _with_code(session: Session, code: str) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        return type_coerce(ProcessedMessage.warnings, JSONB).contains([{"code": code}])
    warning = func.json_each(ProcessedMessage.warnings).table_valued("value")
    return exists(
        select(1).select_from(warning).where(func.json_extract(warning.c.value, "$.code") == code)
    )


def list_warned(
    session: Session,
    *,
    environment_id: int,
    params: PageParams,
    code: str | None = None,
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page:
    """Processed messages with warnings (as `Status`es), newest first, paged by
    (processed_at, message_id)."""
    query: Select[Any] = select(ProcessedMessage).where(
        ProcessedMessage.environment_id == environment_id, WARNED
    )
    if code is not None:
        query = query.where(_with_code(session, code))
    if kind is not None:
        query = query.where(ProcessedMessage.kind == kind)
    if since is not None:
        query = query.where(ProcessedMessage.processed_at >= since)
    if until is not None:
        query = query.where(ProcessedMessage.processed_at < until)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    key = tuple_(ProcessedMessage.processed_at, ProcessedMessage.message_id)
    page_query = query.order_by(
        ProcessedMessage.processed_at.desc(), ProcessedMessage.message_id.desc()
    ).limit(params.per_page + 1)
    page = params.page
    if params.starting_after is not None:
        processed_at, message_id, page = _decode(params.starting_after)
        # A row-value comparison: both databases read it as a range of the index.
        after = tuple_(literal(processed_at, UtcDateTime()), literal(message_id, String()))
        page_query = page_query.where(key < after)
        page += 1
    else:
        page_query = page_query.offset((params.page - 1) * params.per_page)
    rows = list(session.scalars(page_query))
    items = rows[: params.per_page]
    cursor = None
    if len(rows) > params.per_page:
        cursor = _encode(items[-1].processed_at, items[-1].message_id, page)
    events = _events(session, environment_id, [row.message_id for row in items])
    statuses = [
        Status(row.message_id, "processed", row, *events.get(row.message_id, (None, None)))
        for row in items
    ]
    return Page(statuses, total, page, params.per_page, cursor)


def _encode(processed_at: datetime, message_id: str, page: int) -> str:
    raw = orjson.dumps([_CURSOR, processed_at.isoformat(), message_id, page])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[datetime, str, int]:
    """The position a cursor of this listing holds; 400 for anything else, checked before it
    reaches the database."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, processed_at, message_id, page = orjson.loads(raw)
        parsed = datetime.fromisoformat(processed_at)
        moment = parsed.astimezone(UTC)  # a forged edge-of-calendar time fails here
        if (
            name == _CURSOR
            and parsed.tzinfo is not None
            and isinstance(message_id, str)
            and len(message_id) <= 100
            and "\x00" not in message_id
            and type(page) is int
            and 1 <= page <= 1_000_000
        ):
            return moment, message_id, page
    except (ValueError, TypeError, OverflowError):
        pass
    raise AudienceError(
        "invalid_cursor", "starting_after is not a cursor of this listing", field="starting_after"
    )
