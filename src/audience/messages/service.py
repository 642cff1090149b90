"""What became of a message sent to /v1: pending, processed or failed, and the warnings list.

A messageId is looked up where each outcome leaves it: `events` (unique per environment) and
`processed_messages` (primary key) for what was applied, the `inbox` for what is still waiting,
`failed_messages` for what failed. Applied wins: dedupe (R-ING-7) makes a waiting duplicate or a
replay of an applied message a no-op. Then waiting: a failed message put back by a replay is
pending again. Then the latest failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, exists, func, literal_column, select
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session
from sqlalchemy.sql import type_coerce

from audience.errors import AudienceError
from audience.events.models import Event
from audience.ingest.models import FailedMessage, InboxMessage, ProcessedMessage
from audience.pagination import Order, Page, PageParams, paginate
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
# Newest first, ties by message_id, in the order of that index: the cursor's position is one
# row-value comparison, which both databases read as a range of the index.
WARNED_ORDER = Order(
    "processed_at",
    ProcessedMessage.processed_at,
    ProcessedMessage.message_id,
    descending=True,
    row_value=True,
)


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
    page = paginate(session, query, order=WARNED_ORDER, params=params)
    items: list[ProcessedMessage] = list(page.items)
    events = _events(session, environment_id, [row.message_id for row in items])
    statuses = [
        Status(row.message_id, "processed", row, *events.get(row.message_id, (None, None)))
        for row in items
    ]
    page.items = statuses
    return page
