"""Page and cursor pagination for every collection (R-API-3), with a stable tie-break on a
unique column (an integer id, or a string key such as a message id)."""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, Query
from sqlalchemy import ColumnElement, Select, and_, func, literal, or_, select, tuple_
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
    """Sort by `column` (nulls last) then by `id_column` in the same direction.

    `id_column` is the tie-break: a unique NOT NULL column of the listed rows (or of a row joined
    to each), an integer id or a string key (e.g. `ProcessedMessage.message_id`).

    `column` may be an expression (a custom attribute); `value_of` then gives a loaded row's
    sort value for the cursor, the same value the expression has in the database.

    With `row_value`, the position after a cursor is one row-value comparison,
    `(column, id_column) < (value, last_id)` (`>` ascending), which both databases read as a range
    of an index on (..., column, id_column); it needs a NOT NULL `column`.
    """

    name: str
    column: InstrumentedAttribute[Any] | ColumnElement[Any]
    id_column: InstrumentedAttribute[Any]
    descending: bool = False
    value_of: Callable[[Any], Any] | None = None
    row_value: bool = False

    def __post_init__(self) -> None:
        if self.id_type not in (int, str):
            raise TypeError(f"order {self.name!r}: the tie-break column must be integer or string")
        if self.row_value and self.nullable:
            raise ValueError(f"order {self.name!r}: row_value needs a NOT NULL column")

    @property
    def nullable(self) -> bool:
        return bool(getattr(self.column.expression, "nullable", True))

    @property
    def python_type(self) -> type:
        return _python_type(self.column)

    @property
    def id_type(self) -> type:
        """`int` or `str`: what the tie-break column holds."""
        return _python_type(self.id_column)

    def id_of(self, row: Any) -> Any:
        """A loaded row's tie-break value: its own `id_column` attribute; or, where the tie
        column is on a table joined to the listed rows by their id (`SegmentMembership.user_id`
        under listed users), the row's `id`."""
        if isinstance(row, self.id_column.parent.mapper.class_):
            return getattr(row, self.id_column.key)
        return row.id

    def clauses(self) -> list[ColumnElement[Any]]:
        if self.column is self.id_column:
            return [self.id_column.desc() if self.descending else self.id_column.asc()]
        column = self.column.desc() if self.descending else self.column.asc()
        tie = self.id_column.desc() if self.descending else self.id_column.asc()
        # NULLS LAST only where NULLs can be: on a NOT NULL column it would stop PostgreSQL
        # from reading the (environment, column) index in order.
        return [column.nulls_last() if self.nullable else column, tie]

    def after(self, value: Any, last_id: Any) -> ColumnElement[bool]:
        """Rows strictly after (value, last_id) in this order."""
        beyond_id: ColumnElement[bool] = (
            self.id_column < last_id if self.descending else self.id_column > last_id
        )
        if self.column is self.id_column:
            return beyond_id
        if value is None:  # nulls sort last: only later nulls remain
            return and_(self.column.is_(None), beyond_id)
        # Bound explicitly: SQLAlchemy refuses `column > True` with a plain Python boolean.
        value = literal(value, self.column.type)
        if self.row_value:
            key = tuple_(self.column, self.id_column)
            position = tuple_(value, literal(last_id, self.id_column.type))
            after: ColumnElement[bool] = key < position if self.descending else key > position
            return after
        beyond = self.column < value if self.descending else self.column > value
        if not self.nullable:
            return or_(beyond, and_(self.column == value, beyond_id))
        return or_(beyond, and_(self.column == value, beyond_id), self.column.is_(None))


def _python_type(column: InstrumentedAttribute[Any] | ColumnElement[Any]) -> type:
    column_type = column.type
    # A TypeDecorator (UtcDateTime) reports `object`; the type it wraps knows better.
    python_type: type = getattr(column_type, "impl", column_type).python_type
    return python_type


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


def _encode(order: Order, value: Any, last_id: Any, page: int) -> str:
    if isinstance(value, datetime):
        value = {"dt": value.isoformat()}
    raw = orjson.dumps([order.name, order.descending, value, last_id, page])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


# A cursor's page is one more than the page it came from: keep it well inside what JSON (and
# orjson) can carry.
_MAX_CURSOR_PAGE = 2**53


def _decode(cursor: str, order: Order) -> tuple[Any, Any, int]:
    """The position a cursor of this listing holds: (sort value, tie-break value, page).

    Anything else is a 400, checked here before it can reach the database."""
    bad = AudienceError(
        "invalid_cursor", "starting_after is not a cursor of this listing", field="starting_after"
    )
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        name, descending, value, last_id, page = orjson.loads(raw)
    except (ValueError, TypeError):
        raise bad from None
    if name != order.name or descending != order.descending:
        raise bad
    if not _fits_id(last_id, order):
        raise bad
    if type(page) is not int or not 1 <= page <= _MAX_CURSOR_PAGE:
        raise bad
    if isinstance(value, dict):
        try:
            value = datetime.fromisoformat(value["dt"])
            if value.tzinfo is not None:
                value = value.astimezone(UTC)  # a forged edge-of-calendar time fails here
        except (KeyError, TypeError, ValueError, OverflowError):
            raise bad from None
    # A forged cursor must not reach the database with a value the column can't compare to.
    expected = order.python_type
    if value is None and not order.nullable:
        raise bad
    if value is not None and not _fits(value, expected):
        raise bad
    return value, last_id, page


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


def _fits_id(value: Any, order: Order) -> bool:
    """A tie-break value of the column's own type: an integer (not a boolean, not a float), or a
    string no longer than its VARCHAR(n) allows (no row holds a longer one)."""
    if order.id_type is int:
        return type(value) is int
    length = getattr(order.id_column.type, "length", None)
    if isinstance(value, str) and length is not None and len(value) > length:
        return False
    return _fits(value, order.id_type)


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
        cursor = _encode(order, value, order.id_of(last), page)
    return Page(items, total, page, params.per_page, cursor)
