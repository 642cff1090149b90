"""Shared pieces of the REST schemas: strict bodies, timestamps as unix seconds, list shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


class Body(BaseModel):
    """A request body: unknown fields are rejected, so system fields can't be mass-assigned."""

    model_config = ConfigDict(extra="forbid")


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
        except ValueError:
            raise ValueError("expected unix seconds or an ISO 8601 date-time") from None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
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
