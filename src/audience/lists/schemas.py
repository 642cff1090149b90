"""The list object (a static group of users) and the bodies that write lists and fill them."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, field_validator

from audience.lists.models import UserList
from audience.refs import MAX_REFS, UserRefIn
from audience.schemas import Body, Pages, unix

# Trimmed before the length check, so "  " is too short rather than a blank name.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]
Description = Annotated[str, Field(max_length=65_535)]


class ListCreate(Body):
    name: Name
    description: Description | None = None


class ListUpdate(Body):
    """Omitted fields are left alone; `description: null` clears it; a name can't be removed."""

    name: Name | None = None
    description: Description | None = None

    @field_validator("name")
    @classmethod
    def _name_not_null(cls, value: str | None) -> str:
        if value is None:
            raise ValueError("a list needs a name; it can't be null")
        return value


class ListUsersIn(Body):
    users: Annotated[list[UserRefIn], Field(min_length=1, max_length=MAX_REFS)]


class UserListIn(Body):
    """Add one user to the list with this id."""

    id: Annotated[str, Field(min_length=1, max_length=32)]


class ListObject(BaseModel):
    type: Literal["list"] = "list"
    id: str
    name: str
    description: str | None
    user_count: int
    created_at: int
    updated_at: int


class ListList(BaseModel):
    type: Literal["list.list"] = "list.list"
    total_count: int
    lists: list[ListObject]
    pages: Pages


def list_object(user_list: UserList, *, user_count: int) -> ListObject:
    return ListObject(
        id=str(user_list.id),
        name=user_list.name,
        description=user_list.description,
        user_count=user_count,
        created_at=unix(user_list.created_at) or 0,
        updated_at=unix(user_list.updated_at) or 0,
    )
