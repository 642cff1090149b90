"""Shared pieces of the REST schemas: strict bodies, timestamps as unix seconds, list shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(key) or _has_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_has_nul(item) for item in value)
    return False


class Body(BaseModel):
    """A request body: unknown fields are rejected, so system fields can't be mass-assigned."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        # PostgreSQL text and JSONB can't hold NUL; refuse it here, naming the field. Nested
        # bodies check their own fields; custom attributes are checked where they are written,
        # naming the attribute.
        if info.field_name != "custom_attributes" and _has_nul(value):
            raise ValueError("must not contain NUL characters")
        return value


def _to_datetime(value: Any) -> Any:
    # Unix seconds (the REST convention) or ISO 8601; naive ISO times are taken as UTC.
    if isinstance(value, bool):
        raise ValueError("expected unix seconds or an ISO 8601 date-time")
    if isinstance(value, int | float):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError("unix timestamp out of range") from None
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            # In UTC now, so a time at the edge of the calendar fails here, not in the database.
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except (ValueError, OverflowError):
            raise ValueError("expected unix seconds or an ISO 8601 date-time") from None
    return value


Timestamp = Annotated[datetime, BeforeValidator(_to_datetime)]


def unix(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


class Pages(BaseModel):
    type: str = "pages"
    next: dict[str, Any] | None = None
    page: int
    per_page: int
    total_pages: int


class Deleted(BaseModel):
    id: str
    object: str
    deleted: bool = True


Text255 = Annotated[str, Field(max_length=255)]


def parse_id(value: str, what: str) -> int:
    """Ids are strings in the API; anything that isn't one of ours is simply not found."""
    from audience.errors import NotFound

    if not value.isascii() or not value.isdigit() or len(value) > 18:
        raise NotFound(what, value)
    return int(value)
