"""The tag object (Intercom's, with counts), the bodies that write tags and attach them."""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, Field, StringConstraints, model_validator

from audience.refs import MAX_REFS, CompanyRefIn, UserRefIn
from audience.schemas import Body, Pages, unix
from audience.tags.models import Tag

# Trimmed before the length check, so "  " is too short rather than a blank tag.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]


class TagWrite(Body):
    name: Name


class TagUsersIn(Body):
    users: Annotated[list[UserRefIn], Field(min_length=1, max_length=MAX_REFS)]


class TagCompaniesIn(Body):
    companies: Annotated[list[CompanyRefIn], Field(min_length=1, max_length=MAX_REFS)]


class UserTagIn(Body):
    """Tag one user: an existing tag by `id`, or by `name` (created when missing)."""

    id: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    name: Name | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.id is None) == (self.name is None):
            raise ValueError("give exactly one of id, name")
        return self


class TagObject(BaseModel):
    type: Literal["tag"] = "tag"
    id: str
    name: str
    created_at: int
    user_count: int
    company_count: int


class TagList(BaseModel):
    type: Literal["tag.list"] = "tag.list"
    total_count: int
    tags: list[TagObject]
    pages: Pages


def tag_object(tag: Tag, *, user_count: int, company_count: int) -> TagObject:
    return TagObject(
        id=str(tag.id),
        name=tag.name,
        created_at=unix(tag.created_at) or 0,
        user_count=user_count,
        company_count=company_count,
    )
