"""POST /api/v1/users/search (R-API-4, R-SEG-1) and /api/v1/segments (R-SEG-3, R-API-5)."""

from __future__ import annotations

from fastapi import APIRouter, BackgroundTasks, Request
from sqlalchemy.orm import Session

from audience.auth import CurrentEnvironment, DbSession
from audience.db import ReadRoute, TransactionRoute
from audience.pagination import Page, PageParams, Pagination
from audience.schemas import Deleted, parse_id
from audience.segments import saved, service
from audience.segments.models import Segment
from audience.segments.schemas import (
    SegmentCount,
    SegmentCreate,
    SegmentList,
    SegmentObject,
    SegmentPreviewIn,
    SegmentUpdate,
    UserSearchIn,
    segment_object,
)
from audience.users.api import user_list
from audience.users.schemas import UserList

# Reads (searches, previews: POSTs that write nothing) take no write lock; writes do.
reads = APIRouter(route_class=ReadRoute)
writes = APIRouter(tags=["segments"], route_class=TransactionRoute)


@reads.post(
    "/users/search", response_model=UserList, tags=["users"], summary="Search users by filter"
)
def search_users(
    body: UserSearchIn, environment: CurrentEnvironment, session: DbSession
) -> UserList:
    page = service.search_users(
        session,
        environment_id=environment.id,
        filter=body.filter,
        q=body.q,
        sort=body.sort,
        descending=body.order == "desc",
        params=PageParams(body.page, body.per_page, body.starting_after),
    )
    return user_list(session, environment, page)


def render(session: Session, segments: list[Segment]) -> list[SegmentObject]:
    counts = saved.counts(session, segment_ids=[segment.id for segment in segments])
    return [segment_object(segment, count=counts[segment.id]) for segment in segments]


def render_one(session: Session, segment: Segment) -> SegmentObject:
    return render(session, [segment])[0]


def _sync_indexes(request: Request, background: BackgroundTasks) -> None:
    """Once the write has committed (background tasks run after the response), bring the
    custom-attribute indexes in step with the segments (segments/indexes.py)."""
    background.add_task(request.app.state.index_keeper.wake)


def segment_list(session: Session, page: Page) -> SegmentList:
    return SegmentList(
        total_count=page.total, segments=render(session, list(page.items)), pages=page.pages()
    )


@writes.post("/segments", response_model=SegmentObject, summary="Create a segment")
def create_segment(
    body: SegmentCreate,
    environment: CurrentEnvironment,
    session: DbSession,
    request: Request,
    background: BackgroundTasks,
) -> SegmentObject:
    segment = saved.create_segment(
        session, environment_id=environment.id, name=body.name, filter=body.filter
    )
    _sync_indexes(request, background)
    return render_one(session, segment)


@reads.get("/segments", response_model=SegmentList, tags=["segments"], summary="List segments")
def list_segments(
    environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> SegmentList:
    page = saved.list_segments(session, environment_id=environment.id, params=pagination)
    return segment_list(session, page)


@reads.post(
    "/segments/preview",
    response_model=UserList,
    tags=["segments"],
    summary="Count and first page of the users an unsaved filter holds",
)
def preview_segment(
    body: SegmentPreviewIn, environment: CurrentEnvironment, session: DbSession
) -> UserList:
    page = saved.preview(
        session, environment_id=environment.id, filter=body.filter, per_page=body.per_page
    )
    return user_list(session, environment, page)


@reads.get("/segments/{id}", response_model=SegmentObject, tags=["segments"], summary="Get one")
def get_segment(id: str, environment: CurrentEnvironment, session: DbSession) -> SegmentObject:
    segment = saved.get_segment(session, environment_id=environment.id, id=parse_id(id, "segment"))
    return render_one(session, segment)


@writes.patch("/segments/{id}", response_model=SegmentObject, summary="Rename or change a filter")
def update_segment(
    id: str,
    body: SegmentUpdate,
    environment: CurrentEnvironment,
    session: DbSession,
    request: Request,
    background: BackgroundTasks,
) -> SegmentObject:
    segment = saved.update_segment(
        session,
        environment_id=environment.id,
        id=parse_id(id, "segment"),
        name=body.name,
        filter=body.filter,
    )
    if body.filter is not None:
        _sync_indexes(request, background)
    return render_one(session, segment)


@writes.delete("/segments/{id}", response_model=Deleted, summary="Delete a segment")
def delete_segment(
    id: str,
    environment: CurrentEnvironment,
    session: DbSession,
    request: Request,
    background: BackgroundTasks,
) -> Deleted:
    saved.delete_segment(session, environment_id=environment.id, id=parse_id(id, "segment"))
    _sync_indexes(request, background)
    return Deleted(id=id, object="segment")


@reads.get("/segments/{id}/members", response_model=UserList, tags=["segments"], summary="Members")
def segment_members(
    id: str, environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> UserList:
    page = saved.members(
        session, environment_id=environment.id, id=parse_id(id, "segment"), params=pagination
    )
    return user_list(session, environment, page)


@reads.get("/segments/{id}/count", response_model=SegmentCount, tags=["segments"], summary="Count")
def segment_count(id: str, environment: CurrentEnvironment, session: DbSession) -> SegmentCount:
    segment = saved.get_segment(session, environment_id=environment.id, id=parse_id(id, "segment"))
    return SegmentCount(count=saved.counts(session, segment_ids=[segment.id])[segment.id])


router = APIRouter()
router.include_router(reads)
router.include_router(writes)
