"""The body of POST /api/v1/users/search (the answer is a `user.list`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from audience.pagination import MAX_PER_PAGE
from audience.schemas import Body


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
