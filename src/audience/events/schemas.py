"""The event object (SPEC §1, §11) and the bodies that create one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from audience.events.models import Event
from audience.schemas import Body, Pages, Timestamp, unix

Kind = Literal["track", "page", "screen", "$pageview", "$click", "$change", "$submit"]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _storable(value: str) -> str:
    # NUL and lone surrogates are valid JSON but neither database can store them.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _numeric_string(value: Any) -> Any:
    # Query strings carry unix seconds as text: "1700000000" or "1700000000.5".
    if isinstance(value, str):
        try:
            return float(value) if "." in value or "e" in value.lower() else int(value)
        except ValueError:
            return value
    return value


def _utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date-time out of range") from None


Storable = AfterValidator(_storable)
# A point in time from a body or a query: unix seconds (number or digits) or ISO 8601, in UTC.
Time = Annotated[Timestamp, AfterValidator(_utc), BeforeValidator(_numeric_string)]
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_not_blank), Storable]


class UserKey(Body):
    """Which user: exactly one of the internal `id` or one identity."""

    model_config = ConfigDict(coerce_numbers_to_str=True)

    id: Annotated[str, Field(max_length=32, description="Internal id."), Storable] | None = None
    user_id: Annotated[str, Field(max_length=255), Storable] | None = None
    email: Annotated[str, Field(max_length=255), Storable] | None = None
    phone: Annotated[str, Field(max_length=64), Storable] | None = None
    user_key: Annotated[str, Field(max_length=64), Storable] | None = None
    anonymous_id: Annotated[str, Field(max_length=255), Storable] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> UserKey:
        if len(self.given()) != 1:
            raise ValueError(
                "give exactly one of id, user_id, email, phone, user_key, anonymous_id"
            )
        return self

    def given(self) -> dict[str, str]:
        return {key: value for key, value in self.model_dump().items() if value is not None}


class UserEventCreate(Body):
    """An event for a user named by the path."""

    name: Annotated[Name, Field(description="1 to 255 characters.")]
    kind: Kind = "track"
    timestamp: Annotated[
        Time | None,
        Field(description="Unix seconds (a fraction keeps milliseconds) or ISO 8601; default now."),
    ] = None
    properties: Annotated[
        dict[str, Any] | None,
        Field(description="Any JSON object: at most 10 KB serialised and 10 levels deep."),
    ] = None
    message_id: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=100,
                description="Idempotency key, unique per environment; generated when omitted.",
            ),
            Storable,
        ]
        | None
    ) = None
    page_url: Annotated[str, Field(max_length=2048), Storable] | None = None
    session_id: Annotated[str, Field(max_length=255), Storable] | None = None


class EventCreate(UserEventCreate):
    """An event for the user that `user` points to."""

    user: UserKey


class EventUser(BaseModel):
    type: Literal["user"] = "user"
    id: str
    user_id: str | None


class EventObject(BaseModel):
    type: Literal["event"] = "event"
    id: str
    name: str
    kind: str
    timestamp: int = Field(description="Unix seconds.")
    timestamp_ms: int = Field(description="Unix milliseconds: the timestamp at full precision.")
    received_at: int
    message_id: str
    user: EventUser
    company_id: str | None
    properties: dict[str, Any]
    page_url: str | None
    session_id: str | None
    source: str | None
    library: str | None


class EventList(BaseModel):
    type: Literal["event.list"] = "event.list"
    total_count: int
    events: list[EventObject]
    pages: Pages


def unix_ms(value: datetime) -> int:
    return (value - _EPOCH) // timedelta(milliseconds=1)


def event_object(event: Event, *, user_id: str | None) -> EventObject:
    """`user_id` is the customer's id of the event's user (the user row is not loaded here)."""
    return EventObject(
        id=str(event.id),
        name=event.name,
        kind=event.kind,
        timestamp=unix(event.timestamp) or 0,
        timestamp_ms=unix_ms(event.timestamp),
        received_at=unix(event.received_at) or 0,
        message_id=event.message_id,
        user=EventUser(id=str(event.user_id), user_id=user_id),
        company_id=None if event.company_id is None else str(event.company_id),
        properties=event.properties or {},
        page_url=event.page_url,
        session_id=event.session_id,
        source=event.source,
        library=event.library,
    )
