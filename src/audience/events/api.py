"""/api/v1/events and /api/v1/users/{id}/events: record events for a user, read and list them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from pydantic import Field
from sqlalchemy.orm import Session

from audience.auth import CurrentEnvironment, DbSession
from audience.db import TransactionRoute
from audience.environments.models import Environment
from audience.events import service
from audience.events.models import Event
from audience.events.schemas import (
    EventCreate,
    EventList,
    EventObject,
    Kind,
    Storable,
    Time,
    UserEventCreate,
    event_object,
)
from audience.pagination import PageParams, Pagination
from audience.schemas import parse_id

router = APIRouter(tags=["events"], route_class=TransactionRoute)

NameFilter = Annotated[str, Field(max_length=255), Storable]


class Filters:
    """The query filters every event listing takes."""

    def __init__(
        self,
        name: Annotated[
            list[NameFilter] | None,
            Query(max_length=50, description="Exact event name; repeat for any of several."),
        ] = None,
        kind: Annotated[Kind | None, Query()] = None,
        since: Annotated[
            Time | None, Query(description="From this time, inclusive (unix seconds or ISO 8601).")
        ] = None,
        until: Annotated[
            Time | None, Query(description="Up to this time, exclusive (unix seconds or ISO 8601).")
        ] = None,
    ) -> None:
        self.names = name or []
        self.kind = kind
        self.since = since
        self.until = until


EventFilters = Annotated[Filters, Depends()]


def render(session: Session, environment: Environment, events: list[Event]) -> list[EventObject]:
    ids = service.customer_ids(
        session, environment_id=environment.id, user_ids=[event.user_id for event in events]
    )
    return [event_object(event, user_id=ids.get(event.user_id)) for event in events]


def listing(
    session: Session,
    environment: Environment,
    filters: Filters,
    pagination: PageParams,
    user_id: int | None,
) -> EventList:
    page = service.list_events(
        session,
        environment_id=environment.id,
        params=pagination,
        user_id=user_id,
        names=filters.names,
        kind=filters.kind,
        since=filters.since,
        until=filters.until,
    )
    events = render(session, environment, list(page.items))
    return EventList(total_count=page.total, events=events, pages=page.pages())


@router.post("/events", response_model=EventObject, summary="Record an event for a user")
def create_event(
    body: EventCreate, environment: CurrentEnvironment, session: DbSession
) -> EventObject:
    ((key, value),) = body.user.given().items()
    user = service.find_user(session, environment=environment, key=key, value=value)
    event = service.create_event(
        session, environment=environment, user=user, **body.model_dump(exclude={"user"})
    )
    return render(session, environment, [event])[0]


@router.get("/events", response_model=EventList, summary="List the environment's events")
def list_events(
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    filters: EventFilters,
    user_id: Annotated[
        str | None, Query(max_length=32, description="Only this user's events (internal id).")
    ] = None,
) -> EventList:
    user = None if user_id is None else parse_id(user_id, "user")
    return listing(session, environment, filters, pagination, user)


@router.get("/events/{id}", response_model=EventObject, summary="Get an event")
def get_event(id: str, environment: CurrentEnvironment, session: DbSession) -> EventObject:
    event = service.get_event(session, environment_id=environment.id, id=parse_id(id, "event"))
    return render(session, environment, [event])[0]


@router.post("/users/{id}/events", response_model=EventObject, summary="Record a user's event")
def create_user_event(
    id: str, body: UserEventCreate, environment: CurrentEnvironment, session: DbSession
) -> EventObject:
    user = service.find_user(session, environment=environment, key="id", value=id)
    event = service.create_event(session, environment=environment, user=user, **body.model_dump())
    return render(session, environment, [event])[0]


@router.get("/users/{id}/events", response_model=EventList, summary="List a user's events")
def list_user_events(
    id: str,
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    filters: EventFilters,
) -> EventList:
    return listing(session, environment, filters, pagination, parse_id(id, "user"))
