"""The message object: what became of a message sent to /v1, and the list of those with warnings."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from audience.events.schemas import EventUser
from audience.messages.service import State, Status
from audience.schemas import Pages, unix

Kind = Literal["identify", "track", "page", "screen", "group", "alias"]


class MessageWarning(BaseModel):
    """A value skipped or corrected (at acceptance or when applied); more fields may follow."""

    model_config = ConfigDict(extra="allow")

    code: str = Field(description="e.g. invalid_trait, identity_conflict, future_timestamp")
    message: str
    field: str | None = None


class MessageObject(BaseModel):
    type: Literal["message"] = "message"
    message_id: str
    status: State
    kind: str | None = Field(description="The message type: identify, track, page, …")
    received_at: int | None = Field(
        description="When /v1 accepted it; null for a processed identify, group or alias."
    )
    position: int | None = Field(
        description="Pending: messages of every environment ahead of it in the inbox (0: next)."
    )
    processed_at: int | None = Field(
        description="Processed: when it was applied; null for an event without warnings."
    )
    warnings: list[MessageWarning] = Field(
        description="Processed: what was skipped while accepting and applying it; pending or "
        "failed: the warnings of its acceptance."
    )
    event_id: str | None = Field(description="Processed into an event: the event's id.")
    user: EventUser | None = Field(description="Processed into an event: the event's user.")
    failed_message_id: str | None = Field(description="Failed: see /api/v1/failed-messages/{id}.")
    error_code: str | None = None
    error_message: str | None = None
    stage: str | None = Field(None, description="Failed: resolve, group or apply.")
    failed_at: int | None = None


class MessageList(BaseModel):
    type: Literal["message.list"] = "message.list"
    total_count: int
    messages: list[MessageObject]
    pages: Pages


def _warnings(value: Any) -> list[MessageWarning]:
    items = value if isinstance(value, list) else []
    return [MessageWarning.model_validate(item) for item in items if isinstance(item, dict)]


def message_object(found: Status) -> MessageObject:
    processed, event, waiting, failed = found.processed, found.event, found.waiting, found.failed
    stored = waiting or failed  # pending or failed: the payload as accepted
    payload = stored.payload if stored else {}
    arrived = event or stored
    kind = processed.kind if processed else event.kind if event else payload.get("type")
    return MessageObject(
        message_id=found.message_id,
        status=found.status,
        kind=kind,
        received_at=unix(arrived.received_at) if arrived else None,
        position=found.position,
        processed_at=unix(processed.processed_at) if processed else None,
        warnings=_warnings(processed.warnings if processed else payload.get("warnings")),
        event_id=str(event.id) if event else None,
        user=EventUser(id=str(event.user_id), user_id=found.customer_user_id) if event else None,
        failed_message_id=str(failed.id) if failed else None,
        error_code=failed.error_code if failed else None,
        error_message=failed.error_message if failed else None,
        stage=failed.stage if failed else None,
        failed_at=unix(failed.failed_at) if failed else None,
    )
