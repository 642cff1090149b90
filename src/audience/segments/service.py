"""Users matching a filter: parse against the environment's definitions, compile, page, sort.

Other domains (segments, bulk operations, exports) go through `parse` and `matching_users`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, Select, select
from sqlalchemy.orm import Session

from audience.attributes.models import AttributeDefinition
from audience.db import utcnow
from audience.errors import AudienceError
from audience.pagination import Order, Page, PageParams, paginate
from audience.segments.compile import (
    SegmentMembers,
    compile_filter,
    custom_attribute,
    saved_segments,
)
from audience.segments.filters import Definitions, Filter, FilterError, parse_filter
from audience.users.models import User
from audience.users.service import SORTABLE, live_users, text_match

MAX_FILTER_PARAMETER = 20_000  # characters of a `filter` query parameter
_CUSTOM = "custom_attributes."
# The shapes jsonsql.Json.date/datetime accept ('?' / '_' is any one character).
_DATE_SHAPE = re.compile(r".{4}-.{2}-.{2}", re.DOTALL)
_TIME_SHAPE = re.compile(r".{4}-.{2}-.{2}T.{2}:.{2}:.{2}.*Z", re.DOTALL)


def load_definitions(session: Session, *, environment_id: int) -> Definitions:
    """The custom attribute types of users and companies (archived ones too: their values stay)."""
    rows = session.execute(
        select(AttributeDefinition.model, AttributeDefinition.name, AttributeDefinition.type).where(
            AttributeDefinition.environment_id == environment_id,
            AttributeDefinition.model.in_(("user", "company")),
        )
    )
    found: dict[str, dict[str, str]] = {"user": {}, "company": {}}
    for model, name, type_ in rows:
        found[model][name] = type_
    return Definitions(user=found["user"], company=found["company"])


def parse(
    session: Session,
    *,
    environment_id: int,
    raw: Any,
    path: str = "filter",
    definitions: Definitions | None = None,
) -> Filter:
    """`raw` (decoded JSON) as a filter of this environment, or a 400 naming the bad spot."""
    if definitions is None:
        definitions = load_definitions(session, environment_id=environment_id)
    return parse_filter(raw, definitions=definitions, path=path, allow_segments=True)


def parse_parameter(text: str, *, field: str = "filter") -> Any:
    """A filter given as a JSON string (a query parameter) decoded, or a 400."""
    if len(text) > MAX_FILTER_PARAMETER:
        raise FilterError(f"over the limit of {MAX_FILTER_PARAMETER} characters", field=field)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FilterError("not valid JSON", field=field) from None


def condition(
    session: Session,
    *,
    environment_id: int,
    filter: Filter,
    now: datetime | None = None,
    segments: SegmentMembers | None = None,
) -> ColumnElement[bool]:
    """The SQL condition on `users` for `filter` (use it under `live_users`); segment
    conditions read the stored membership unless `segments` says otherwise."""
    return compile_filter(
        filter,
        environment_id=environment_id,
        now=now or utcnow(),
        dialect=session.get_bind().dialect.name,
        segments=segments or saved_segments(environment_id),
    )


def matching_users(
    session: Session, *, environment_id: int, filter: Filter, now: datetime | None = None
) -> Select[Any]:
    """Live users of the environment matching `filter` (a query to page, count or act on)."""
    where = condition(session, environment_id=environment_id, filter=filter, now=now)
    return live_users(environment_id).where(where)


def search_users(
    session: Session,
    *,
    environment_id: int,
    filter: Any,
    q: str | None,
    sort: str,
    descending: bool,
    params: PageParams,
    now: datetime | None = None,
) -> Page:
    """One page of the users matching the JSON `filter` (None: everyone) and free text `q`."""
    definitions = load_definitions(session, environment_id=environment_id)
    order = user_order(session, sort=sort, descending=descending, definitions=definitions)
    query = live_users(environment_id)
    if filter is not None:
        parsed = parse_filter(filter, definitions=definitions, allow_segments=True)
        query = query.where(
            condition(session, environment_id=environment_id, filter=parsed, now=now)
        )
    if q is not None and (match := text_match(q)) is not None:
        query = query.where(match)
    return paginate(session, query, order=order, params=params)


def user_order(session: Session, *, sort: str, descending: bool, definitions: Definitions) -> Order:
    """A standard attribute, or `custom_attributes.<name>` of a scalar type (ties by id)."""
    if sort in SORTABLE:
        return Order(sort, getattr(User, sort), User.id, descending)
    name = sort.removeprefix(_CUSTOM)
    type_ = definitions.user.get(name) if sort.startswith(_CUSTOM) else None
    if type_ is None or type_ == "list":
        raise AudienceError(
            "parameter_invalid",
            f"can't sort by {sort[:100]!r}; use a standard attribute ({', '.join(SORTABLE)}) "
            "or custom_attributes.<name> of a string, number, boolean, date or datetime",
            field="sort",
        )
    dialect = session.get_bind().dialect.name
    expression = custom_attribute(name, type_, dialect=dialect)
    return Order(sort, expression, User.id, descending, value_of=_sort_value(name, type_))


def _sort_value(name: str, type_: str) -> Callable[[User], Any]:
    """A user's sort value in Python, exactly as `custom_attribute` has it in the database (the
    cursor of the next page starts after it)."""

    def value_of(user: User) -> Any:
        value = (user.custom_attributes or {}).get(name)
        if type_ == "boolean":
            return value if isinstance(value, bool) else None
        if type_ == "number":
            if (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and abs(value) < 1e300
            ):
                return float(value)
            return None
        if not isinstance(value, str):
            return None
        if type_ == "date":
            return value if _DATE_SHAPE.fullmatch(value) else None
        if type_ == "datetime":
            return (
                (value.replace("Z", "") + ".000000")[:26] if _TIME_SHAPE.fullmatch(value) else None
            )
        return value

    return value_of
