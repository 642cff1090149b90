"""/api/v1/users/{id}/merge, /api/v1/merges: merge two users, read the merge log, undo."""

from __future__ import annotations

from fastapi import APIRouter, Request

from audience.auth import CurrentEnvironment, DbSession
from audience.db import TransactionRoute
from audience.pagination import Pagination
from audience.schemas import parse_id
from audience.users import merge as service
from audience.users.merge_schemas import MergeIn, MergeList, MergeObject, merge_object
from audience.users.unmerge import undo_merge as undo

router = APIRouter(tags=["merges"], route_class=TransactionRoute)


def _actor(request: Request) -> str | None:
    return getattr(request.state, "actor", None)


@router.post(
    "/users/{id}/merge",
    response_model=MergeObject,
    summary="Merge another user into this one (this one survives)",
)
def merge_user(
    id: str, body: MergeIn, request: Request, environment: CurrentEnvironment, session: DbSession
) -> MergeObject:
    merge = service.merge_users(
        session,
        environment_id=environment.id,
        source_id=int(body.from_),
        target_id=parse_id(id, "user"),
        reason="api",
        actor=_actor(request),
    )
    return merge_object(merge)


@router.get("/merges/{id}", response_model=MergeObject, summary="Get a merge")
def get_merge(id: str, environment: CurrentEnvironment, session: DbSession) -> MergeObject:
    merge = service.get_merge(session, environment_id=environment.id, id=parse_id(id, "merge"))
    return merge_object(merge)


@router.get(
    "/users/{id}/merges",
    response_model=MergeList,
    summary="Merges into or from a user, newest first (merged-away users too)",
)
def list_user_merges(
    id: str, environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> MergeList:
    page = service.list_merges(
        session, environment_id=environment.id, user_id=parse_id(id, "user"), params=pagination
    )
    merges = [merge_object(merge) for merge in page.items]
    return MergeList(total_count=page.total, merges=merges, pages=page.pages())


@router.post("/merges/{id}/undo", response_model=MergeObject, summary="Undo a merge (unmerge)")
def undo_merge(
    id: str, request: Request, environment: CurrentEnvironment, session: DbSession
) -> MergeObject:
    merge = undo(
        session,
        environment_id=environment.id,
        merge_id=parse_id(id, "merge"),
        actor=_actor(request),
    )
    return merge_object(merge)
