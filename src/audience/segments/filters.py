"""The filter language (R-SEG-1, R-SEG-2): JSON in, a typed tree out, or a 400 naming the spot.

`parse_filter` is the only way into the tree: everything after it (compile.py) may assume a
well-typed filter. The language is documented in docs/filters.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from audience.segments.language import (
    ALIASES,
    COMPANY_FIELDS,
    EXACT_FIELDS,
    MAX_CONDITIONS,
    MAX_DEPTH,
    MAX_VALUES,
    MEMBERSHIP_OPS,
    MEMBERSHIPS,
    OCCURRENCE_OPS,
    OPERATORS,
    PRESENCE,
    USER_FIELDS,
    WINDOW_OPS,
    FilterError,
    Ref,
    Scope,
    Type,
    Window,
    count_value,
    describe,
    only,
    ref_value,
    same_kind,
    scalar_value,
    text_value,
    window_value,
)

# Re-exported: the names other code needs besides the tree.
__all__ = [
    "ALIASES",
    "OPERATORS",
    "And",
    "Behaviour",
    "Condition",
    "Definitions",
    "Field",
    "Filter",
    "FilterError",
    "Membership",
    "Not",
    "Or",
    "Ref",
    "Window",
    "parse_filter",
    "walk",
]


@dataclass(frozen=True)
class Definitions:
    """The custom attribute types of one environment: name -> type, per model."""

    user: Mapping[str, str] = field(default_factory=dict)
    company: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Field:
    """What a condition reads: a column or custom attribute of a user or company, or an event
    property (`type` "any" when only presence is asked)."""

    scope: Scope
    name: str
    type: Type
    custom: bool = False
    exact: bool = False


# A typed value: str | int | float | bool | date | datetime, a tuple of those (in, nin,
# between), a Window (within_last, within_next, more_than_ago) or None (exists, not_exists).
Value = Any


@dataclass(frozen=True)
class Condition:
    field: Field
    op: str
    value: Value = None


@dataclass(frozen=True)
class Membership:
    kind: Literal["tags", "lists", "segments"]
    op: str
    refs: tuple[Ref, ...] = ()


@dataclass(frozen=True)
class Behaviour:
    """Did an event (by name) or a page view (URL glob) happen, how often, when first/last."""

    event: str | None
    page: str | None
    count: tuple[str, int] | None = None
    within: Window | None = None
    where: tuple[Condition, ...] = ()
    first: Condition | None = None
    last: Condition | None = None


@dataclass(frozen=True)
class And:
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    item: Filter


Filter = And | Or | Not | Condition | Membership | Behaviour


def walk(node: Filter) -> Iterator[Filter]:
    """Every node of a filter, depth first (e.g. to find the segments a filter refers to)."""
    yield node
    if isinstance(node, And | Or):
        for item in node.items:
            yield from walk(item)
    elif isinstance(node, Not):
        yield from walk(node.item)


def parse_filter(
    raw: Any, *, definitions: Definitions, path: str = "filter", allow_segments: bool = False
) -> Filter:
    """The typed tree of a JSON filter, or FilterError naming where it is wrong.

    `allow_segments` is the hook for segment membership conditions: until segments exist (and
    compile_filter gets a `segments` resolver) `{"field": "segments", ...}` is a 400.
    """
    return _Parser(definitions, allow_segments).node(raw, path, 0)


class _Parser:
    def __init__(self, definitions: Definitions, allow_segments: bool) -> None:
        self.definitions = definitions
        self.allow_segments = allow_segments
        self.count = 0

    # --- tree --------------------------------------------------------------------------------

    def node(self, raw: Any, path: str, depth: int) -> Filter:
        if not isinstance(raw, dict):
            raise FilterError(
                f"expected a filter object ({{'and': [...]}}, {{'or': [...]}}, {{'not': ...}} "
                f"or a condition), not {describe(raw)}",
                field=path,
            )
        group = [key for key in ("and", "or", "not") if key in raw]
        if group:
            key = group[0]
            only(raw, (key,), path)
            if depth >= MAX_DEPTH:
                raise FilterError(f"filters nest at most {MAX_DEPTH} groups deep", field=path)
            inner = f"{path}.{key}"
            if key == "not":
                return Not(self.node(raw[key], inner, depth + 1))
            items = raw[key]
            if not isinstance(items, list):
                raise FilterError(f"'{key}' takes a list of filters", field=inner)
            nodes = tuple(
                self.node(item, f"{inner}[{index}]", depth + 1) for index, item in enumerate(items)
            )
            return And(nodes) if key == "and" else Or(nodes)
        if "event" in raw or "page" in raw:
            return self.behaviour(raw, path)
        if "field" in raw:
            return self.condition(raw, path)
        raise FilterError(
            "expected 'and', 'or', 'not', a condition {'field', 'op', 'value'} or a behaviour "
            "condition {'event': ...}",
            field=path,
        )

    def counted(self, path: str) -> None:
        self.count += 1
        if self.count > MAX_CONDITIONS:
            raise FilterError(f"a filter holds at most {MAX_CONDITIONS} conditions", field=path)

    # --- attribute conditions ------------------------------------------------------------------

    def condition(self, raw: dict[str, Any], path: str) -> Condition | Membership:
        self.counted(path)
        only(raw, ("field", "op", "value"), path)
        name = raw["field"]
        if not isinstance(name, str):
            raise FilterError("field must be a string", field=f"{path}.field")
        if name in MEMBERSHIPS:
            return self.membership(name, raw, path)
        target = self.field(name, f"{path}.field")
        op = self.op(raw, OPERATORS[target.type], f"a {target.type} field", path)
        return Condition(target, op, self.value(target.type, op, raw, path))

    def field(self, name: str, path: str) -> Field:
        prefix, _, rest = name.partition(".")
        if prefix == "custom_attributes" and rest:
            return self.custom("user", rest, name, path)
        if prefix == "company" and rest:
            if rest.startswith("custom_attributes."):
                return self.custom("company", rest.removeprefix("custom_attributes."), name, path)
            if rest in COMPANY_FIELDS:
                return Field("company", rest, COMPANY_FIELDS[rest], exact=rest in EXACT_FIELDS)
            return self.custom("company", rest, name, path)
        if name in USER_FIELDS:
            return Field("user", name, USER_FIELDS[name], exact=name in EXACT_FIELDS)
        hint = (
            f"; did you mean 'custom_attributes.{name}'?"
            if name in self.definitions.user
            else "; use a standard attribute, custom_attributes.<name>, company.<attribute>, "
            "tags, lists or segments"
        )
        raise FilterError(f"unknown field {describe(name)}{hint}", field=path)

    def custom(self, scope: Scope, attribute: str, name: str, path: str) -> Field:
        types = self.definitions.user if scope == "user" else self.definitions.company
        type_ = types.get(attribute)
        if type_ not in OPERATORS:
            raise FilterError(
                f"unknown field {describe(name)}: no {scope} attribute {describe(attribute)} "
                "is defined",
                field=path,
            )
        return Field(scope, attribute, type_, custom=True)  # type: ignore[arg-type]

    def op(self, raw: dict[str, Any], allowed: tuple[str, ...], what: str, path: str) -> str:
        if "op" not in raw:
            raise FilterError("op is missing", field=f"{path}.op")
        op = raw["op"]
        op = ALIASES.get(op, op) if isinstance(op, str) else op
        if op not in allowed:
            raise FilterError(
                f"operator {describe(raw['op'])} doesn't apply to {what}; use one of "
                f"{', '.join(allowed)}",
                field=f"{path}.op",
            )
        return str(op)

    def value(self, type_: Type, op: str, raw: dict[str, Any], path: str) -> Value:
        where = f"{path}.value"
        value = raw.get("value")
        if op in PRESENCE:
            if value is not None:
                raise FilterError(f"{op} takes no value", field=where)
            return None
        if "value" not in raw or value is None:
            raise FilterError(
                f"{op} needs a value (use not_exists to find missing values)", field=where
            )
        if op in WINDOW_OPS:
            return window_value(value, where)
        element: Type = "any" if type_ == "list" else type_
        if op in ("in", "nin", "between"):
            if not isinstance(value, list):
                raise FilterError(f"{op} takes a list, not {describe(value)}", field=where)
            if op == "between":
                if len(value) != 2:
                    raise FilterError("between takes [low, high]", field=where)
                low, high = (
                    scalar_value(type_, item, f"{where}[{i}]") for i, item in enumerate(value)
                )
                if low > high:
                    raise FilterError("between: low is greater than high", field=where)
                return (low, high)
            if not 1 <= len(value) <= MAX_VALUES:
                raise FilterError(f"{op} takes 1 to {MAX_VALUES} values", field=where)
            items = tuple(
                scalar_value(element, item, f"{where}[{i}]") for i, item in enumerate(value)
            )
            if element == "any":
                same_kind(items, where)
            return items
        return scalar_value(element, value, where)

    # --- tags, lists, segments -----------------------------------------------------------------

    def membership(self, kind: str, raw: dict[str, Any], path: str) -> Membership:
        if kind == "segments" and not self.allow_segments:
            raise FilterError("segment conditions are not available yet", field=f"{path}.field")
        op = self.op(raw, MEMBERSHIP_OPS, kind, path)
        where = f"{path}.value"
        value = raw.get("value")
        if op in PRESENCE:
            if value is not None:
                raise FilterError(f"{op} takes no value", field=where)
            return Membership(kind, op)  # type: ignore[arg-type]
        if op in ("in", "nin"):
            if not isinstance(value, list) or not 1 <= len(value) <= MAX_VALUES:
                raise FilterError(f"{op} takes a list of 1 to {MAX_VALUES} {kind}", field=where)
            refs = tuple(ref_value(item, f"{where}[{i}]") for i, item in enumerate(value))
        else:
            refs = (ref_value(value, where),)
        return Membership(kind, op, refs)  # type: ignore[arg-type]

    # --- behaviour -----------------------------------------------------------------------------

    def behaviour(self, raw: dict[str, Any], path: str) -> Behaviour:
        self.counted(path)
        keys = ("event", "page", "count", "within_days", "within_hours", "where", "first", "last")
        only(raw, keys, path)
        if ("event" in raw) == ("page" in raw):
            raise FilterError("give either 'event' or 'page', not both", field=path)
        event = page = None
        if "event" in raw:
            event = text_value(raw["event"], f"{path}.event", limit=255, empty=False)
        else:
            page = text_value(raw["page"], f"{path}.page", limit=2048, empty=False)
        count = None
        if "count" in raw:
            count = count_value(raw["count"], f"{path}.count")
        within = None
        if "within_days" in raw and "within_hours" in raw:
            raise FilterError("give within_days or within_hours, not both", field=path)
        for unit in ("days", "hours"):
            if f"within_{unit}" in raw:
                within = window_value({unit: raw[f"within_{unit}"]}, f"{path}.within_{unit}")
        where: tuple[Condition, ...] = ()
        if "where" in raw:
            items = raw["where"]
            if not isinstance(items, list):
                raise FilterError("where takes a list of conditions", field=f"{path}.where")
            where = tuple(self.property(item, f"{path}.where[{i}]") for i, item in enumerate(items))
        first = self.occurrence(raw, "first", path)
        last = self.occurrence(raw, "last", path)
        return Behaviour(event, page, count, within, where, first, last)

    def property(self, raw: Any, path: str) -> Condition:
        """A condition on an event property: its type is the type of the value given."""
        if not isinstance(raw, dict):
            raise FilterError(f"expected a condition object, not {describe(raw)}", field=path)
        self.counted(path)
        only(raw, ("field", "op", "value"), path)
        name = text_value(raw.get("field"), f"{path}.field", limit=255, empty=False)
        ops = sorted({*OPERATORS["string"], *OPERATORS["number"], *OPERATORS["boolean"]})
        op = self.op(raw, tuple(ops), "event properties", path)
        if op in PRESENCE:
            return Condition(Field("event", name, "any"), op, self.value("any", op, raw, path))
        sample = raw.get("value")
        if isinstance(sample, list) and sample:
            sample = sample[0]
        type_: Type = (
            "boolean"
            if isinstance(sample, bool)
            else "number"
            if isinstance(sample, int | float)
            else "string"
        )
        if op not in OPERATORS[type_]:
            raise FilterError(f"operator {op} doesn't apply to a {type_} value", field=f"{path}.op")
        return Condition(Field("event", name, type_), op, self.value(type_, op, raw, path))

    def occurrence(self, raw: dict[str, Any], key: str, path: str) -> Condition | None:
        if key not in raw:
            return None
        where = f"{path}.{key}"
        inner = raw[key]
        if not isinstance(inner, dict):
            raise FilterError(f"{key} takes {{'op', 'value'}}", field=where)
        only(inner, ("op", "value"), where)
        op = self.op(inner, OCCURRENCE_OPS, f"the {key} occurrence", where)
        return Condition(
            Field("event", key, "datetime"), op, self.value("datetime", op, inner, where)
        )


# --- values ------------------------------------------------------------------------------------
