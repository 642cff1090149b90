"""Page and cursor pagination for every collection (R-API-3), with a stable tie-break on id."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, Query
from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from audience.errors import AudienceError
from audience.schemas import Pages

MAX_PER_PAGE = 150


@dataclass(frozen=True)
class PageParams:
    page: int = 1
    per_page: int = 50
    starting_after: str | None = None


def page_params(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number (1-based).")] = 1,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE, description="Items per page.")] = 50,
    starting_after: Annotated[
        str | None, Query(max_length=500, description="Cursor from `pages.next.starting_after`.")
    ] = None,
) -> PageParams:
    return PageParams(page, per_page, starting_after)


Pagination = Annotated[PageParams, Depends(page_params)]


@dataclass(frozen=True)
class Order:
    """Sort by `column` (nulls last) then by `id` in the same direction.

    `column` may be an expression (a custom attribute); `value_of` then gives a loaded row's
    sort value for the cursor, the same value the expression has in the database.
    """

    name: str
    column: InstrumentedAttribute[Any] | ColumnElement[Any]
    id_column: InstrumentedAttribute[Any]
    descending: bool = False
    value_of: Callable[[Any], Any] | None = None

    @property
    def nullable(self) -> bool:
        return bool(getattr(self.column.expression, "nullable", True))

    @property
    def python_type(self) -> type:
        column_type = self.column.type
        # A TypeDecorator (UtcDateTime) reports `object`; the type it wraps knows better.
        python_type: type = getattr(column_type, "impl", column_type).python_type
        return python_type

    def clauses(self) -> list[ColumnElement[Any]]:
        if self.column is self.id_column:
            return [self.id_column.desc() if self.descending else self.id_column.asc()]
        column = self.column.desc() if self.descending else self.column.asc()
        tie = self.id_column.desc() if self.descending else self.id_column.asc()
        # NULLS LAST only where NULLs can be: on a NOT NULL column it would stop PostgreSQL
        # from reading the (environment, column) index in order.
        return [column.nulls_last() if self.nullable else column, tie]

    def after(self, value: Any, last_id: int) -> ColumnElement[bool]:
        """Rows strictly after (value, last_id) in this order."""
        beyond_id = self.id_column < last_id if self.descending else self.id_column > last_id
        if self.column is self.id_column:
            return beyond_id
        if value is None:  # nulls sort last: only later nulls remain
            return and_(self.column.is_(None), beyond_id)
        # Bound explicitly: SQLAlchemy refuses `column > True` with a plain Python boolean.
        value = literal(value, self.column.type)
        beyond = self.column < value if self.descending else self.column > value
        if not self.nullable:
            return or_(beyond, and_(self.column == value, beyond_id))
        return or_(beyond, and_(self.column == value, beyond_id), self.column.is_(None))


@dataclass
class Page:
    items: Sequence[Any]
    total: int
    page: int
    per_page: int
    next_cursor: str | None

    def pages(self) -> Pages:
        total_pages = max(1, math.ceil(self.total / self.per_page)) if self.total else 0
        nxt = None
        if self.next_cursor is not None:
            nxt = {"page": self.page + 1, "starting_after": self.next_cursor}
        return Pages(next=nxt, page=self.page, per_page=self.per_page, total_pages=total_pages)


def _encode(order: Order, value: Any, last_id: int, page: int) -> str:
    if isinstance(value, datetime):
        value = {"dt": value.isoformat()}
    raw = orjson.dumps([order.name, order.descending, value, last_id, page])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str, order: Order) -> tuple[Any, int, int]:
    bad = AudienceError(
        "invalid_cursor", "starting_after is not a cursor of this listing", field="starting_after"
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, descending, value, last_id, page = orjson.loads(raw)
    except (ValueError, TypeError):
        raise bad from None
    if name != order.name or descending != order.descending or not isinstance(last_id, int):
        raise bad
    if isinstance(value, dict):
        try:
            value = datetime.fromisoformat(value["dt"])
        except (KeyError, TypeError, ValueError):
            raise bad from None
    # A forged cursor must not reach the database with a value the column can't compare to.
    expected = order.python_type
    if value is None and not order.nullable:
        raise bad
    if value is not None and not _fits(value, expected):
        raise bad
    return value, last_id, int(page) if isinstance(page, int) else 1


def _fits(value: Any, expected: type) -> bool:
    if expected is datetime:
        return isinstance(value, datetime) and value.tzinfo is not None
    if expected is bool:
        return isinstance(value, bool)
    if expected in (int, float):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(value, str) and "\x00" in value:  # PostgreSQL can't compare text with NUL
        return False
    return isinstance(value, expected)


def paginate(session: Session, query: Select[Any], *, order: Order, params: PageParams) -> Page:
    """One page of `query` (which selects entities) plus the total count of the whole query."""
    total = session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0
    page_query = query.order_by(*order.clauses()).limit(params.per_page + 1)
    page = params.page
    if params.starting_after is not None:
        value, last_id, previous = _decode(params.starting_after, order)
        page_query = page_query.where(order.after(value, last_id))
        page = previous + 1
    else:
        page_query = page_query.offset((params.page - 1) * params.per_page)
    rows = list(session.scalars(page_query))
    items = rows[: params.per_page]
    cursor = None
    if len(rows) > params.per_page:
        last = items[-1]
        value = order.value_of(last) if order.value_of else getattr(last, str(order.column.key))
        cursor = _encode(order, value, last.id, page)
    return Page(items, total, page, params.per_page, cursor)
