"""A parsed filter -> one SQLAlchemy boolean over the `users` table, on SQLite and PostgreSQL.

The expression is to be used under `live_users(environment_id)` (which scopes the outer users
query and hides merged-away users); every subquery it holds filters `environment_id` itself
(R-SEC-1). Semantics (documented in docs/filters.md):

- A value that is missing or of another type than the definition never passes a positive test,
  and `ne`, `nin`, `not_contains`, `not_exists` are exactly the negation of `eq`, `in`,
  `contains`, `exists`: a user without the attribute is "not equal" to anything. Under a NOT a
  test is made two-valued (false, never NULL) so that the negation holds.
- Text is matched case-insensitively (SQL `lower` on both sides, so each database folds the same
  way on both sides; SQLite folds ASCII only); equality on identifiers (`EXACT_FIELDS`) is exact.
- Custom dates and datetimes compare as fixed-width text (see jsonsql.Json.datetime): nothing
  is cast, so no stored value can make a query fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    exists,
    false,
    func,
    literal,
    literal_column,
    not_,
    or_,
    select,
    true,
)

from audience.companies.models import Company
from audience.companies.models import Membership as CompanyMembership
from audience.db import escape_like
from audience.events.models import Event
from audience.lists.models import ListMember, UserList
from audience.segments.filters import (
    And,
    Behaviour,
    Condition,
    Field,
    Filter,
    Membership,
    Not,
    Or,
    Ref,
    Window,
)
from audience.segments.jsonsql import Json, Kind
from audience.segments.models import Segment, SegmentMembership
from audience.tags.models import Tag, UserTag
from audience.users.models import User

SegmentMembers = Callable[[tuple[Ref, ...]], ColumnElement[bool]]
"""The hook for segment conditions: refs -> "users.id is a member of any of these segments"
(no refs: of any segment). It must filter environment_id itself."""


def saved_segments(environment_id: int) -> SegmentMembers:
    """The `segments` hook over stored membership: current members (not exited) of any of the
    referenced segments of the environment (by id or exact name; none: of any segment)."""

    def members(refs: tuple[Ref, ...]) -> ColumnElement[bool]:
        query = (
            select(1)
            .select_from(SegmentMembership)
            .join(Segment, Segment.id == SegmentMembership.segment_id)
            .where(
                SegmentMembership.user_id == User.id,
                SegmentMembership.exited_at.is_(None),
                Segment.environment_id == environment_id,
            )
        )
        if refs:
            ids = [ref.id for ref in refs if ref.id is not None]
            names = [ref.name for ref in refs if ref.name is not None]
            query = query.where(or_(Segment.id.in_(ids), Segment.name.in_(names)))
        return exists(query)

    return members


PAGE_KINDS = ("page", "$pageview")
_NEGATED = {"ne": "eq", "nin": "in", "not_contains": "contains", "not_exists": "exists"}
_LIKE = {"contains": "%{}%", "starts_with": "{}%", "ends_with": "%{}"}


def compile_filter(
    filter: Filter,
    *,
    environment_id: int,
    now: datetime,
    dialect: str,
    segments: SegmentMembers | None = None,
) -> ColumnElement[bool]:
    """The SQL condition on `users` of `filter`; `now` anchors relative windows (an aware time);
    `dialect` is the session's (`session.get_bind().dialect.name`)."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    return _Compiler(environment_id, now, Json(dialect), segments).node(filter)


def canonical_datetime(moment: datetime) -> str:
    """The fixed-width text a custom datetime compares as (see jsonsql.Json.datetime)."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class _Operand:
    """A typed SQL value (NULL when missing) and how a filter value is bound against it."""

    expr: ColumnElement[Any]
    type: str
    exact: bool = False
    bind: Callable[[Any], Any] = lambda value: value


class _Compiler:
    def __init__(
        self, environment_id: int, now: datetime, json: Json, segments: SegmentMembers | None
    ) -> None:
        self.environment_id = environment_id
        self.now = now
        self.json = json
        self.segments = segments

    def node(self, node: Filter, negated: bool = False) -> ColumnElement[bool]:
        """`negated`: under a NOT, where a NULL test would differ from a false one (elsewhere a
        WHERE treats them alike, so the NULL guards that cost a second JSON lookup are left out:
        the `not` of a condition must see it false, never NULL, when the value is missing)."""
        if isinstance(node, And | Or):
            items = [self.node(item, negated) for item in node.items]
            if isinstance(node, And):
                return and_(*items) if items else true()
            return or_(*items) if items else false()
        if isinstance(node, Not):
            return not_(self.node(node.item, negated=True))
        if isinstance(node, Membership):
            return self.membership(node)
        if isinstance(node, Behaviour):
            return self.behaviour(node)
        return self.condition(node, negated)

    # --- attributes ----------------------------------------------------------------------------

    def condition(self, condition: Condition, negated: bool) -> ColumnElement[bool]:
        field = condition.field
        if field.scope == "company":
            # Any company matches: `ne` is "a company whose plan isn't pro", not "none on pro".
            column = None if field.custom else getattr(Company, field.name)
            test = self.test(condition, Company.custom_attributes, column, False)
            return exists(
                select(1)
                .select_from(CompanyMembership)
                .join(Company, Company.id == CompanyMembership.company_id)
                .where(
                    CompanyMembership.user_id == User.id,
                    Company.environment_id == self.environment_id,
                    test,
                )
            )
        column = None if field.custom else getattr(User, field.name)
        return self.test(condition, User.custom_attributes, column, negated)

    def test(
        self, condition: Condition, doc: Any, column: Any, negated: bool
    ) -> ColumnElement[bool]:
        """`condition` on a column, or on a custom attribute / property in the JSON `doc`."""
        field, op = condition.field, condition.op
        if op in _NEGATED:
            positive = Condition(field, _NEGATED[op], condition.value)
            return not_(self.test(positive, doc, column, negated=True))
        if field.type == "list":
            if op == "exists":
                return self.json.is_array(doc, field.name)
            return self.list_test(doc, field.name, op, condition.value)
        if field.type == "any":  # an event property asked for presence only
            return self.json.present(doc, field.name)
        operand = self.operand(field, doc, column)
        if op == "exists":
            return operand.expr.is_not(None)
        compared = self.compare(operand, op, condition.value)
        return and_(operand.expr.is_not(None), compared) if negated else compared

    def operand(self, field: Field, doc: Any, column: Any) -> _Operand:
        return _operand(self.json, field, doc, column)

    def compare(self, operand: _Operand, op: str, value: Any) -> ColumnElement[bool]:
        expr, bind = operand.expr, operand.bind
        if operand.type == "string":
            if op in _LIKE:
                pattern = _LIKE[op].format(escape_like(value))
                return func.lower(expr).like(func.lower(literal(pattern, String)), escape="\\")
            if not operand.exact:
                expr = func.lower(expr)
                bind = _lower
        result: ColumnElement[bool]
        if op in ("within_last", "within_next", "more_than_ago"):
            low, high = self.window(op, value, operand.type)
            if op == "more_than_ago":
                result = expr < bind(high)
            else:
                result = and_(expr >= bind(low), expr <= bind(high))
        elif op == "eq":
            result = expr == bind(value)
        elif op == "in":
            result = expr.in_([bind(item) for item in value])
        elif op == "between":
            result = and_(expr >= bind(value[0]), expr <= bind(value[1]))
        elif op in ("gt", "after"):
            result = expr > bind(value)
        elif op == "gte":
            result = expr >= bind(value)
        elif op in ("lt", "before"):
            result = expr < bind(value)
        elif op == "lte":
            result = expr <= bind(value)
        else:
            raise AssertionError(f"operator {op} reached the compiler on {operand.type}")
        return result

    def window(self, op: str, window: Window, type_: str) -> tuple[Any, Any]:
        """(low, high) of a relative window; for more_than_ago, high is the cut-off."""
        if op == "within_next":
            low, high = self.now, self.now + window.delta
        else:
            low, high = self.now - window.delta, self.now
        if op == "more_than_ago":
            high = low
        if type_ == "date":  # whole days (UTC) for date attributes
            return low.date(), high.date()
        return low, high

    def list_test(self, doc: Any, key: str, op: str, value: Any) -> ColumnElement[bool]:
        values = value if op == "in" else (value,)
        sample = values[0]
        kind: Kind = (
            "boolean"
            if isinstance(sample, bool)
            else "string"
            if isinstance(sample, str)
            else "number"
        )
        if kind == "string":
            wanted = [func.lower(literal(item, String)) for item in values]
            return self.json.any_element(doc, key, kind, lambda e: func.lower(e).in_(wanted))
        return self.json.any_element(doc, key, kind, lambda e: e.in_(list(values)))

    # --- tags, lists, segments -----------------------------------------------------------------

    def membership(self, node: Membership) -> ColumnElement[bool]:
        negate = node.op in ("ne", "nin", "not_exists")
        refs = () if node.op in ("exists", "not_exists") else node.refs
        if node.kind == "segments":
            if self.segments is None:
                raise ValueError("segment conditions need a `segments` resolver")
            found = self.segments(refs)
        else:
            link, table, link_id = (
                (UserTag, Tag, UserTag.tag_id)
                if node.kind == "tags"
                else (ListMember, UserList, ListMember.list_id)
            )
            query = (
                select(1)
                .select_from(link)
                .join(table, table.id == link_id)
                .where(link.user_id == User.id, table.environment_id == self.environment_id)
            )
            if refs:
                ids = [ref.id for ref in refs if ref.id is not None]
                names = [ref.name for ref in refs if ref.name is not None]
                query = query.where(or_(table.id.in_(ids), table.name.in_(names)))
            found = exists(query)
        return not_(found) if negate else found

    # --- behaviour -----------------------------------------------------------------------------

    def behaviour(self, node: Behaviour) -> ColumnElement[bool]:
        """Counts, first and last times are HAVING conditions of one GROUP BY user_id over the
        matching events, joined as `users.id IN (…)`: one pass over the events (by the
        (environment_id, name, timestamp) index) instead of an aggregate per user."""
        where: list[ColumnElement[bool]] = [Event.environment_id == self.environment_id]
        if node.event is not None:
            where.append(Event.name == node.event)
        if node.page is not None:
            pattern = escape_like(node.page).replace("*", "%")
            where.append(Event.kind.in_(PAGE_KINDS))
            where.append(
                func.lower(Event.page_url).like(func.lower(literal(pattern, String)), escape="\\")
            )
        if node.within is not None:
            where.append(Event.timestamp >= self.now - node.within.delta)
        where += [self.test(condition, Event.properties, None, False) for condition in node.where]
        did = exists(select(1).select_from(Event).where(Event.user_id == User.id, *where))
        total = func.count()
        having: list[ColumnElement[bool]] = []
        op, n = node.count or ("gte", 1)
        if node.first is None and node.last is None and _holds(op, 0, n):
            # Users without any such event match: only those with too many are out.
            if op == "gte":
                return true()
            if n == 0:
                return not_(did)
            return not_(User.id.in_(self.grouped(node, where, total > n)))
        if (op, n) != ("gte", 1):
            having.append(total == n if op == "eq" else total >= n if op == "gte" else total <= n)
        for condition, aggregate in ((node.first, func.min), (node.last, func.max)):
            if condition is not None:
                moment = _Operand(aggregate(Event.timestamp), "datetime")
                having.append(self.compare(moment, condition.op, condition.value))
        return User.id.in_(self.grouped(node, where, and_(*having))) if having else did

    def grouped(
        self, node: Behaviour, where: list[ColumnElement[bool]], having: ColumnElement[bool]
    ) -> Any:
        user_id: Any = Event.user_id
        if node.event is not None and not self.json.pg:
            # SQLite would rather walk every event in (user_id, timestamp) order, already
            # grouped, than sort the few of one name in the window (10x slower, statistics or
            # not): `+ 0` takes that order out of its choice, leaving the covering
            # (environment_id, name, timestamp, user_id) range.
            user_id = Event.user_id + literal_column("0")
        return select(user_id).where(*where).group_by(user_id).having(having)


def _holds(op: str, count: int, n: int) -> bool:
    return count == n if op == "eq" else count >= n if op == "gte" else count <= n


def custom_attribute(name: str, type_: str, *, dialect: str) -> ColumnElement[Any]:
    """A user's custom attribute as filters compare it (NULL when missing or of another type):
    text, float, boolean, or fixed-width text for dates and datetimes. Used to sort by it."""
    field = Field("user", name, type_, custom=True)  # type: ignore[arg-type]
    return _operand(Json(dialect), field, User.custom_attributes, None).expr


def _operand(json: Json, field: Field, doc: Any, column: Any) -> _Operand:
    if column is not None:
        return _Operand(column, field.type, field.exact)
    if field.type in ("string", "number", "boolean"):
        kind: Kind = field.type
        return _Operand(json.scalar(doc, field.name, kind), field.type)
    if field.type == "date":
        return _Operand(json.date(doc, field.name), "date", bind=lambda day: day.isoformat())
    return _Operand(json.datetime(doc, field.name), "datetime", bind=canonical_datetime)


def _lower(value: Any) -> Any:
    return func.lower(literal(value, String))
