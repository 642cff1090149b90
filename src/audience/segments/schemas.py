"""The body of POST /api/v1/users/search (the answer is a `user.list`) and the segment object."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints

from audience.pagination import MAX_PER_PAGE
from audience.schemas import Body, Pages, unix
from audience.segments.models import Segment


class UserSearchIn(Body):
    filter: Any = Field(
        None,
        description="A filter tree (see docs/filters.md): {'and'|'or': [...]}, {'not': ...}, "
        "{'field', 'op', 'value'} or {'event', 'count', 'within_days', 'where'}. "
        "Absent or null: every user.",
    )
    q: Annotated[str, Field(max_length=255, description="Free-text search.")] | None = None
    sort: Annotated[
        str,
        Field(max_length=300, description="A standard attribute or custom_attributes.<name>."),
    ] = "created_at"
    order: Literal["asc", "desc"] = "desc"
    per_page: Annotated[int, Field(ge=1, le=MAX_PER_PAGE)] = 50
    page: Annotated[int, Field(ge=1, le=1_000_000)] = 1
    starting_after: (
        Annotated[
            str, Field(max_length=500, description="Cursor from `pages.next.starting_after`.")
        ]
        | None
    ) = None


# --- saved segments ----------------------------------------------------------------------------

SegmentName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
_FILTER_HELP = "A filter tree (see docs/filters.md); it may refer to other segments."


class SegmentCreate(Body):
    name: SegmentName
    filter: Any = Field(..., description=_FILTER_HELP)


class SegmentUpdate(Body):
    name: SegmentName | None = None
    filter: Any = Field(None, description=_FILTER_HELP + " Absent: unchanged.")


class SegmentPreviewIn(Body):
    filter: Any = Field(..., description=_FILTER_HELP)
    per_page: Annotated[int, Field(ge=1, le=MAX_PER_PAGE)] = 50


class SegmentObject(BaseModel):
    type: Literal["segment"] = "segment"
    id: str
    name: str
    filter: Any
    count: int
    created_at: int
    updated_at: int


class SegmentList(BaseModel):
    type: Literal["segment.list"] = "segment.list"
    total_count: int
    segments: list[SegmentObject]
    pages: Pages


class SegmentCount(BaseModel):
    type: Literal["count"] = "count"
    count: int


def segment_object(segment: Segment, *, count: int) -> SegmentObject:
    return SegmentObject(
        id=str(segment.id),
        name=segment.name,
        filter=segment.filter,
        count=count,
        created_at=unix(segment.created_at) or 0,
        updated_at=unix(segment.updated_at) or 0,
    )
