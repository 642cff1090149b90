"""People: the searchable, filterable, sortable list of users, and one user's profile."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from audience.auth import DbSession
from audience.db import TransactionRoute
from audience.errors import AudienceError
from audience.events import service as events
from audience.pagination import PageParams
from audience.schemas import parse_id
from audience.segments import membership
from audience.segments import service as segments
from audience.users import service as users
from audience.users.render import render
from audience.users.schemas import UserWrite
from audience.web.auth import SignedIn
from audience.web.render import page

router = APIRouter(route_class=TransactionRoute, include_in_schema=False)

# The columns People shows: (sort key, heading).
COLUMNS = (
    ("name", "Name"),
    ("email", "Email"),
    ("phone", "Phone"),
    ("country", "Country"),
    ("last_seen_at", "Last seen"),
    ("created_at", "Created"),
)
PER_PAGE = 50


@router.get("/people")
def people(
    request: Request,
    signed: SignedIn,
    session: DbSession,
    q: Annotated[str, Query(max_length=255)] = "",
    filter: Annotated[str, Query(max_length=segments.MAX_FILTER_PARAMETER)] = "",
    sort: Annotated[str, Query(max_length=300)] = "created_at",
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
    after: Annotated[str | None, Query(max_length=1000)] = None,
) -> Response:
    environment = signed.environment
    error = None
    found: list[Any] = []
    total = 0
    next_cursor = None
    try:
        result = segments.search_users(
            session,
            environment_id=environment.id,
            filter=segments.parse_parameter(filter) if filter.strip() else None,
            q=q or None,
            sort=sort,
            descending=order == "desc",
            params=PageParams(1, PER_PAGE, after),
        )
        found, total, next_cursor = list(result.items), result.total, result.next_cursor
    except AudienceError as exc:
        error = exc
    state = {"q": q, "filter": filter, "sort": sort, "order": order}
    return page(
        request,
        "people.html",
        status=200 if error is None else error.status,
        signed=signed,
        nav="people",
        users=render(session, environment, found),
        total=total,
        counts=users.kind_counts(session, environment_id=environment.id),
        columns=COLUMNS,
        state=state,
        error=error,
        next_url=None
        if next_cursor is None
        else "/people?" + urlencode(state | {"after": next_cursor}),
        sort_url=lambda column: (
            "/people?"
            + urlencode(
                state
                | {"sort": column, "order": "desc" if (sort, order) == (column, "asc") else "asc"}
            )
        ),
    )


@router.get("/people/{id}")
def profile(request: Request, id: str, signed: SignedIn, session: DbSession) -> Response:
    return _profile(request, signed, session, id)


def _profile(
    request: Request,
    signed: SignedIn,
    session: DbSession,
    id: str,
    *,
    error: AudienceError | None = None,
    attribute: str = "",
    value: str = "",
) -> Response:
    environment = signed.environment
    user = users.get_user(session, environment_id=environment.id, id=parse_id(id, "user"))
    timeline = events.list_events(
        session, environment_id=environment.id, user_id=user.id, params=PageParams(1, 25)
    )
    changes = users.history(
        session, environment_id=environment.id, user_id=user.id, params=PageParams(1, 25)
    )
    return page(
        request,
        "profile.html",
        status=200 if error is None else error.status,
        signed=signed,
        nav="people",
        user=render(session, environment, [user])[0],
        events=list(timeline.items),
        event_total=timeline.total,
        changes=list(changes.items),
        error=error,
        attribute=attribute,
        value=value,
    )


@router.post("/people/{id}/attributes")
def set_attribute(
    request: Request,
    id: str,
    signed: SignedIn,
    session: DbSession,
    attribute: Annotated[str, Form(max_length=300)] = "",
    value: Annotated[str, Form(max_length=70_000)] = "",
) -> Response:
    """Set one attribute (standard or custom) from the profile's form; empty unsets it."""
    signed.require("member")
    environment = signed.environment
    user = users.get_user(session, environment_id=environment.id, id=parse_id(id, "user"))
    name = attribute.strip()
    try:
        if not name:
            raise AudienceError("parameter_invalid", "name the attribute", field="attribute")
        data = _write_data(name, value)
        users.update_user(
            session,
            environment=environment,
            user=user,
            data=data,
            source=users.ChangeSource("agent", f"agent:{signed.agent.id}"),
        )
        membership.refresh_users(session, environment_id=environment.id, user_ids=[user.id])
    except AudienceError as exc:
        # Undo what the refused write did to the loaded user before the page shows it again
        # (the route rolls the transaction back too, as the answer is an error).
        session.rollback()
        return _profile(request, signed, session, id, error=exc, attribute=name, value=value)
    return RedirectResponse(f"/people/{user.id}#attributes", status_code=303)


def _write_data(name: str, value: str) -> dict[str, Any]:
    """The UserWrite body for one attribute: a standard field by name, else a custom one."""
    typed: Any = value if value != "" else None
    body = (
        {name: typed}
        if name in UserWrite.model_fields and name != "custom_attributes"
        else {"custom_attributes": {name: typed}}
    )
    try:
        return UserWrite.model_validate(body).model_dump(exclude_unset=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise AudienceError("invalid_value", f"{name}: {first['msg']}", field="value") from None
