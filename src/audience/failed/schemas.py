"""The failed-message object (R-ING-9) and the bodies that replay failed messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from audience.ingest.models import FailedMessage
from audience.schemas import Body, Pages, unix

MAX_BULK_IDS = 1000
Code = Annotated[str, Field(min_length=1, max_length=50)]


class Replay(Body):
    """Replay one message: as stored, or an edited copy of it."""

    payload: dict[str, Any] | None = Field(
        None,
        description="An edited message to replay instead of the stored one: the same `type` and "
        "`messageId`, at most 32 KB serialised, checked like a /v1 message.",
    )


class ReplayFilter(Body):
    error_code: Code | None = None
    stage: Code | None = None


class BulkReplay(Body):
    """Exactly one of `ids` or `filter`."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    ids: (
        Annotated[
            list[Annotated[str, Field(max_length=32)]],
            Field(min_length=1, max_length=MAX_BULK_IDS),
        ]
        | None
    ) = None
    filter: ReplayFilter | None = Field(
        None,
        description="Replays failed messages not replayed yet that match: the oldest 1,000 per "
        "request; `remaining` says how many are left.",
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> BulkReplay:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give exactly one of ids or filter")
        return self


class FailedMessageObject(BaseModel):
    type: Literal["failed_message"] = "failed_message"
    id: str
    message_id: str | None
    error_code: str
    error_message: str
    stage: str = Field(description="Where it failed: resolve, group or apply.")
    received_at: int | None
    failed_at: int
    replayed_at: int | None = Field(description="When it was last put back into the inbox.")
    payload: dict[str, Any] = Field(description="The message as stored when it was accepted.")


class FailedMessageList(BaseModel):
    type: Literal["failed_message.list"] = "failed_message.list"
    total_count: int
    failed_messages: list[FailedMessageObject]
    pages: Pages


class BulkReplayResult(BaseModel):
    type: Literal["failed_message.replay"] = "failed_message.replay"
    replayed: int
    ids: list[str] = Field(description="The failed messages put back into the inbox.")
    remaining: int = Field(description="Matching messages left for a next request (filter only).")


def failed_message_object(failed: FailedMessage) -> FailedMessageObject:
    return FailedMessageObject(
        id=str(failed.id),
        message_id=failed.message_id,
        error_code=failed.error_code,
        error_message=failed.error_message,
        stage=failed.stage,
        received_at=unix(failed.received_at),
        failed_at=unix(failed.failed_at) or 0,
        replayed_at=unix(failed.replayed_at),
        payload=failed.payload,
    )
