"""Events: record one for a user (deduplicated by message_id), read and list them."""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from audience.db import UtcDateTime, get_scoped, utcnow
from audience.environments.models import Environment
from audience.errors import AudienceError, Invalid, NotFound
from audience.events.models import Event
from audience.events.timing import too_far_ahead
from audience.pagination import Order, Page, PageParams, paginate
from audience.schemas import parse_id
from audience.segments.touched import touch
from audience.users import service as users
from audience.users.merge import hold_user
from audience.users.models import User

MAX_PROPERTIES_BYTES = 10 * 1024  # R-ATTR-2: event properties ≤10 KB serialised
MAX_PROPERTIES_DEPTH = 10


def find_user(session: Session, *, environment: Environment, key: str, value: str) -> User:
    """The user an event names: by internal `id` or by one identity (404 none, 409 several)."""
    if key == "id":
        return users.get_user(session, environment_id=environment.id, id=parse_id(value, "user"))
    return users.lookup_user(session, environment=environment, key=key, value=value)


def _check_text(value: str, where: str) -> None:
    # Valid JSON, but neither database can store NUL or a lone surrogate.
    if "\x00" in value:
        raise Invalid(f"{where} contains a NUL character", field=where)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{where} is not valid Unicode (lone surrogate)", field=where) from None


def check_properties(properties: dict[str, Any]) -> None:
    """Raise a 422 naming the limit when properties can't be stored (R-ATTR-2, R-SEC-5)."""
    stack: list[tuple[Any, str, int]] = [(properties, "properties", 1)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_PROPERTIES_DEPTH:
                raise Invalid(
                    f"properties are nested deeper than the limit of {MAX_PROPERTIES_DEPTH} levels",
                    field="properties",
                    code="limit_exceeded",
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key, f"{where}.{key[:50]}")
                stack.append((item, f"{where}.{key}"[:300], depth + 1))
        elif isinstance(value, str):
            _check_text(value, where)
        elif isinstance(value, float) and not math.isfinite(value):
            raise Invalid(f"{where} is not a finite number", field=where)
    size = len(json.dumps(properties, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_PROPERTIES_BYTES:
        raise Invalid(
            f"properties are {size} bytes serialised; the limit is 10 KB "
            f"({MAX_PROPERTIES_BYTES} bytes)",
            field="properties",
            code="limit_exceeded",
        )


def _insert_once(session: Session, values: dict[str, Any]) -> Event | None:
    """INSERT … ON CONFLICT (environment_id, message_id) DO NOTHING: the new event, or None."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(Event)
        .values(values)
        .on_conflict_do_nothing(index_elements=["environment_id", "message_id"])
        .returning(Event)
    )
    return session.scalars(statement).one_or_none()


def _seen(session: Session, *, user: User, at: datetime) -> None:
    """first_seen_at when unset, last_seen_at when later: one atomic UPDATE (no lost update)."""
    when = literal(at, UtcDateTime())
    session.execute(
        update(User)
        .where(User.environment_id == user.environment_id, User.id == user.id)
        .values(
            first_seen_at=func.coalesce(User.first_seen_at, when),
            last_seen_at=case(
                (or_(User.last_seen_at.is_(None), User.last_seen_at < when), when),
                else_=User.last_seen_at,
            ),
        )
        .execution_options(synchronize_session=False)
    )
    session.expire(user, ["first_seen_at", "last_seen_at"])


def create_event(
    session: Session,
    *,
    environment: Environment,
    user: User,
    name: str,
    kind: str = "track",
    timestamp: datetime | None = None,
    properties: dict[str, Any] | None = None,
    message_id: str | None = None,
    page_url: str | None = None,
    session_id: str | None = None,
    source: str = "api",
    library: str | None = None,
) -> Event:
    """Record an event; a message_id already stored in the environment returns that event."""
    now = utcnow()
    if timestamp is not None and too_far_ahead(timestamp, now):
        raise Invalid("timestamp is more than 24 hours in the future", field="timestamp")
    properties = properties or {}
    check_properties(properties)
    message_id = message_id or str(uuid.uuid4())
    # Lock the user against a concurrent merge and follow one that finished (R-ID-8).
    user = hold_user(session, environment_id=environment.id, id=user.id)
    event = _insert_once(
        session,
        {
            "environment_id": environment.id,
            "user_id": user.id,
            "company_id": None,
            "name": name,
            "kind": kind,
            "timestamp": timestamp or now,
            "received_at": now,
            "message_id": message_id,
            "properties": properties,
            "page_url": page_url,
            "session_id": session_id,
            "source": source,
            "library": library,
        },
    )
    if event is None:  # seen before: no further effect (R-ING-7)
        return get_event_by_message_id(
            session, environment_id=environment.id, message_id=message_id
        )
    _seen(session, user=user, at=event.timestamp)
    touch(session, environment_id=environment.id, user_ids=[user.id])
    return event


def get_event(session: Session, *, environment_id: int, id: int) -> Event:
    return get_scoped(session, Event, environment_id=environment_id, id=id, what="event")


def get_event_by_message_id(session: Session, *, environment_id: int, message_id: str) -> Event:
    event = session.scalar(
        select(Event).where(Event.environment_id == environment_id, Event.message_id == message_id)
    )
    if event is None:
        raise NotFound("event with message_id", repr(message_id))
    return event


def list_events(
    session: Session,
    *,
    environment_id: int,
    params: PageParams,
    user_id: int | None = None,
    names: Sequence[str] = (),
    kind: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Page:
    """Newest first. `since` is inclusive, `until` exclusive; `user_id` is the internal id."""
    if since is not None and until is not None and since > until:
        raise AudienceError("parameter_invalid", "since is after until", field="since")
    query = select(Event).where(Event.environment_id == environment_id)
    if user_id is not None:
        users.get_user(session, environment_id=environment_id, id=user_id)
        query = query.where(Event.user_id == user_id)
    if names:
        query = query.where(Event.name.in_(list(names)))
    if kind is not None:
        query = query.where(Event.kind == kind)
    if since is not None:
        query = query.where(Event.timestamp >= since)
    if until is not None:
        query = query.where(Event.timestamp < until)
    order = Order("timestamp", Event.timestamp, Event.id, descending=True)
    return paginate(session, query, order=order, params=params)


def customer_ids(
    session: Session, *, environment_id: int, user_ids: Sequence[int]
) -> dict[int, str | None]:
    """{internal user id: the customer's user_id} for the users of a page of events."""
    if not user_ids:
        return {}
    rows = session.execute(
        select(User.id, User.user_id).where(
            User.environment_id == environment_id, User.id.in_(set(user_ids))
        )
    )
    return {id: user_id for id, user_id in rows}
