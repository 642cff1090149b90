"""/api/v1/failed-messages: list, inspect, replay and delete messages that failed (R-ING-9)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from audience.auth import CurrentEnvironment, DbSession
from audience.db import TransactionRoute
from audience.failed import service
from audience.failed.schemas import (
    BulkReplay,
    BulkReplayResult,
    FailedMessageList,
    FailedMessageObject,
    Replay,
    failed_message_object,
)
from audience.pagination import Pagination
from audience.schemas import Deleted, parse_id

router = APIRouter(
    prefix="/failed-messages", tags=["failed messages"], route_class=TransactionRoute
)


@router.get("", response_model=FailedMessageList, summary="List failed messages, newest first")
def list_failed(
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    error_code: Annotated[
        str | None, Query(max_length=50, description="e.g. lookup_not_found")
    ] = None,
    stage: Annotated[
        str | None, Query(max_length=50, description="resolve, group or apply")
    ] = None,
    replayed: Annotated[bool | None, Query(description="Replayed already or not.")] = None,
    message_id: Annotated[str | None, Query(max_length=100)] = None,
) -> FailedMessageList:
    page = service.list_failed(
        session,
        environment_id=environment.id,
        params=pagination,
        error_code=error_code,
        stage=stage,
        replayed=replayed,
        message_id=message_id,
    )
    items = [failed_message_object(failed) for failed in page.items]
    return FailedMessageList(total_count=page.total, failed_messages=items, pages=page.pages())


@router.post("/replay", response_model=BulkReplayResult, summary="Replay many failed messages")
def replay_many(
    body: BulkReplay, environment: CurrentEnvironment, session: DbSession
) -> BulkReplayResult:
    remaining = 0
    if body.filter is not None:
        found, remaining = service.replay_matching(
            session,
            environment_id=environment.id,
            error_code=body.filter.error_code,
            stage=body.filter.stage,
        )
    else:  # the schema requires ids when there is no filter
        ids = [parse_id(id, "failed message") for id in body.ids or []]
        found = service.replay_ids(session, environment_id=environment.id, ids=ids)
    ids_out = [str(failed.id) for failed in found]
    return BulkReplayResult(replayed=len(found), ids=ids_out, remaining=remaining)


@router.get("/{id}", response_model=FailedMessageObject, summary="Get a failed message")
def get_failed(id: str, environment: CurrentEnvironment, session: DbSession) -> FailedMessageObject:
    failed = service.get_failed(
        session, environment_id=environment.id, id=parse_id(id, "failed message")
    )
    return failed_message_object(failed)


@router.post("/{id}/replay", response_model=FailedMessageObject, summary="Replay a failed message")
def replay(
    id: str, environment: CurrentEnvironment, session: DbSession, body: Replay | None = None
) -> FailedMessageObject:
    failed = service.replay(
        session,
        environment_id=environment.id,
        id=parse_id(id, "failed message"),
        payload=None if body is None else body.payload,
    )
    return failed_message_object(failed)


@router.delete("/{id}", response_model=Deleted, summary="Delete a failed message")
def delete_failed(id: str, environment: CurrentEnvironment, session: DbSession) -> Deleted:
    service.delete_failed(session, environment_id=environment.id, id=parse_id(id, "failed message"))
    return Deleted(id=id, object="failed_message")
