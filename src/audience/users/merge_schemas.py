"""The merge object (R-ID-7) and the body that asks for a merge."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from audience.schemas import Body, Pages, unix
from audience.users.models import Merge


class MergeIn(Body):
    """Which user to merge into the user of the path (which survives)."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    from_: Annotated[
        str,
        Field(
            alias="from",
            pattern=r"^[0-9]{1,18}$",
            description="Internal id of the user to merge away (the `id` of the user object).",
        ),
    ]


class MovedCounts(BaseModel):
    events: int = 0
    identities: int = 0
    tags: int = 0
    lists: int = 0
    companies: int = 0


class MergeObject(BaseModel):
    type: Literal["merge"] = "merge"
    id: str
    from_user_id: str | None = Field(
        description="The user merged away (hidden until undone); null once it was deleted."
    )
    into_user_id: str | None = Field(description="The survivor; null once it was deleted.")
    reason: str = Field(description="api, identify, alias, …")
    actor: str | None
    created_at: int
    undone_at: int | None
    undone_by: str | None
    moved_counts: MovedCounts = Field(
        description="Rows moved to the survivor; links it already had are not counted."
    )


class MergeList(BaseModel):
    type: Literal["merge.list"] = "merge.list"
    total_count: int
    merges: list[MergeObject]
    pages: Pages


def _id(id: int | None) -> str | None:
    return None if id is None else str(id)


def merge_object(merge: Merge) -> MergeObject:
    moved = merge.moved or {}
    return MergeObject(
        id=str(merge.id),
        from_user_id=_id(merge.from_user_id),
        into_user_id=_id(merge.into_user_id),
        reason=merge.reason,
        actor=merge.actor,
        created_at=unix(merge.created_at) or 0,
        undone_at=unix(merge.undone_at),
        undone_by=moved.get("undone_by"),
        moved_counts=MovedCounts(**moved.get("counts", {})),
    )
