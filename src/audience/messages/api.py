"""/api/v1/messages/{message_id} and /api/v1/message-warnings: what became of sent messages.

The listing has its own path rather than /messages/warnings, which would shadow a message whose
id is literally "warnings". Message ids may hold "/", so the id takes the rest of the path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from audience.auth import CurrentEnvironment, DbSession
from audience.db import TransactionRoute
from audience.events.schemas import Time
from audience.messages import service
from audience.messages.schemas import Kind, MessageList, MessageObject, message_object
from audience.pagination import Pagination

router = APIRouter(tags=["messages"], route_class=TransactionRoute)


@router.get(
    "/message-warnings",
    response_model=MessageList,
    summary="List processed messages that have warnings, newest first",
)
def list_warned(
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    code: Annotated[
        str | None, Query(max_length=50, description="Only messages with a warning of this code.")
    ] = None,
    kind: Annotated[Kind | None, Query(description="Only messages of this type.")] = None,
    since: Annotated[
        Time | None, Query(description="Processed at or after (unix seconds or ISO 8601).")
    ] = None,
    until: Annotated[
        Time | None, Query(description="Processed before (unix seconds or ISO 8601).")
    ] = None,
) -> MessageList:
    page = service.list_warned(
        session,
        environment_id=environment.id,
        params=pagination,
        code=code,
        kind=kind,
        since=since,
        until=until,
    )
    items = [message_object(status) for status in page.items]
    return MessageList(total_count=page.total, messages=items, pages=page.pages())


@router.get(
    "/messages/{message_id:path}",
    response_model=MessageObject,
    summary="What became of a message: pending, processed or failed",
)
def get_message(
    message_id: str, environment: CurrentEnvironment, session: DbSession
) -> MessageObject:
    status = service.message_status(session, environment_id=environment.id, message_id=message_id)
    return message_object(status)
