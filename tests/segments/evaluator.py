"""A straightforward Python reading of the filter language (docs/filters.md), for the property
test: it works on the raw JSON filter and plain data, sharing no code with the compiler.

It assumes a valid filter (the property test only generates valid ones) and ASCII text (SQLite
folds case for ASCII only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

ALIASES = {
    "=": "eq",
    "!=": "ne",
    "IN": "in",
    "NIN": "nin",
    ">": "gt",
    ">=": "gte",
    "<": "lt",
    "<=": "lte",
    "~": "contains",
    "!~": "not_contains",
    "^": "starts_with",
    "$": "ends_with",
}
NEGATIONS = {"ne": "eq", "nin": "in", "not_contains": "contains", "not_exists": "exists"}
EXACT = {"user_id", "company_id"}
PAGE_KINDS = {"page", "$pageview"}
USER_TYPES = {"plan": "string", "seats": "number", "vip": "boolean", "due": "date",
              "paid_at": "datetime", "features": "list"}  # fmt: skip
COMPANY_TYPES = {"mrr": "number", "tier": "string"}
STANDARD_TYPES = {"name": "string", "email": "string", "user_id": "string", "city": "string",
                  "session_count": "number", "unsubscribed_from_emails": "boolean",
                  "signed_up_at": "datetime", "created_at": "datetime"}  # fmt: skip
COMPANY_STANDARD = {"plan": "string", "size": "number"}


@dataclass
class Ev:
    name: str
    kind: str
    timestamp: datetime
    properties: dict[str, Any]
    page_url: str | None


@dataclass
class Firm:
    plan: str | None
    size: int | None
    custom: dict[str, Any]


@dataclass
class Person:
    standard: dict[str, Any]
    custom: dict[str, Any]
    tags: set[str] = field(default_factory=set)
    lists: set[str] = field(default_factory=set)
    companies: list[Firm] = field(default_factory=list)
    events: list[Ev] = field(default_factory=list)
    merged: bool = False


def fold(text: str) -> str:
    return "".join(chr(ord(ch) + 32) if "A" <= ch <= "Z" else ch for ch in text)


def moment(value: Any) -> datetime:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_CANONICAL = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{6})?Z")


def typed(value: Any, type_: str) -> Any:
    """A stored custom value as its type, or None (missing, or a value of another type)."""
    if type_ == "string":
        return value if isinstance(value, str) else None
    if type_ == "number":
        ok = isinstance(value, int | float) and not isinstance(value, bool) and abs(value) < 1e300
        return value if ok else None
    if type_ == "boolean":
        return value if isinstance(value, bool) else None
    if type_ == "date":
        return date.fromisoformat(value) if isinstance(value, str) and len(value) == 10 else None
    if type_ == "datetime":
        ok = isinstance(value, str) and _CANONICAL.fullmatch(value)
        return moment(value) if ok else None
    return value if isinstance(value, list) else None


def wanted(value: Any, type_: str) -> Any:
    """A filter value as the type it is compared as."""
    if isinstance(value, list):
        return [wanted(item, type_) for item in value]
    if isinstance(value, dict):
        return timedelta(**value)
    if type_ == "datetime":
        return moment(value)
    if type_ == "date":
        return date.fromisoformat(value)
    return value


def compare(actual: Any, type_: str, op: str, value: Any, now: datetime, exact: bool) -> bool:
    op = ALIASES.get(op, op)
    if op in NEGATIONS:
        return not compare(actual, type_, NEGATIONS[op], value, now, exact)
    if op == "exists":
        return actual is not None
    if actual is None:
        return False
    value = wanted(value, type_)
    if type_ == "list":
        items = value if op == "in" else [value]
        return any(element_equal(element, item) for element in actual for item in items)
    if type_ == "string":
        if op in ("contains", "starts_with", "ends_with"):
            text, part = fold(actual), fold(value)
            return {
                "contains": part in text,
                "starts_with": text.startswith(part),
                "ends_with": text.endswith(part),
            }[op]
        if not exact:
            actual = fold(actual)
            value = [fold(v) for v in value] if isinstance(value, list) else fold(value)
    if op in ("within_last", "within_next", "more_than_ago"):
        low, high = (now, now + value) if op == "within_next" else (now - value, now)
        if type_ == "date":
            low, high = low.date(), high.date()
        return actual < low if op == "more_than_ago" else low <= actual <= high
    return {
        "eq": lambda: actual == value,
        "in": lambda: actual in value,
        "gt": lambda: actual > value,
        "after": lambda: actual > value,
        "gte": lambda: actual >= value,
        "lt": lambda: actual < value,
        "before": lambda: actual < value,
        "lte": lambda: actual <= value,
        "between": lambda: value[0] <= actual <= value[1],
    }[op]()


def element_equal(element: Any, item: Any) -> bool:
    if isinstance(item, bool) or isinstance(element, bool):
        return isinstance(item, bool) and isinstance(element, bool) and element == item
    if isinstance(item, str):
        return isinstance(element, str) and fold(element) == fold(item)
    return isinstance(element, int | float) and element == item


def evaluate(f: dict[str, Any], person: Person, now: datetime) -> bool:
    if "and" in f:
        return all(evaluate(item, person, now) for item in f["and"])
    if "or" in f:
        return any(evaluate(item, person, now) for item in f["or"])
    if "not" in f:
        return not evaluate(f["not"], person, now)
    if "event" in f or "page" in f:
        return behaviour(f, person, now)
    name, op, value = f["field"], f["op"], f.get("value")
    if name in ("tags", "lists"):
        return membership(person.tags if name == "tags" else person.lists, op, value)
    if name.startswith("company."):
        attribute = name.removeprefix("company.").removeprefix("custom_attributes.")
        type_ = COMPANY_STANDARD.get(attribute) or COMPANY_TYPES[attribute]
        for firm in person.companies:
            if attribute in COMPANY_STANDARD and not name.startswith("company.custom_attributes."):
                actual = getattr(firm, attribute)
            else:
                actual = typed(firm.custom.get(attribute), type_)
            if compare(actual, type_, op, value, now, attribute in EXACT):
                return True
        return False
    if name.startswith("custom_attributes."):
        attribute = name.removeprefix("custom_attributes.")
        type_ = USER_TYPES[attribute]
        return compare(typed(person.custom.get(attribute), type_), type_, op, value, now, False)
    return compare(person.standard[name], STANDARD_TYPES[name], op, value, now, name in EXACT)


def membership(names: set[str], op: str, value: Any) -> bool:
    op = ALIASES.get(op, op)
    if op in ("exists", "not_exists"):
        return bool(names) == (op == "exists")
    refs = value if isinstance(value, list) else [value]
    hit = any(ref in names for ref in refs)
    return not hit if op in ("ne", "nin") else hit


def glob(pattern: str, text: str) -> bool:
    regex = ".*".join(re.escape(fold(part)) for part in pattern.split("*"))
    return re.fullmatch(regex, fold(text), re.DOTALL) is not None


def property_matches(condition: dict[str, Any], properties: dict[str, Any], now: datetime) -> bool:
    name, op, value = condition["field"], ALIASES.get(condition["op"], condition["op"]), None
    raw = properties.get(name)
    if op in ("exists", "not_exists"):
        return (raw is not None) == (op == "exists")
    value = condition["value"]
    sample = value[0] if isinstance(value, list) else value
    type_ = (
        "boolean"
        if isinstance(sample, bool)
        else "number"
        if isinstance(sample, int | float)
        else "string"
    )
    return compare(typed(raw, type_), type_, op, value, now, False)


def behaviour(f: dict[str, Any], person: Person, now: datetime) -> bool:
    events = []
    for event in person.events:
        if "event" in f and event.name != f["event"]:
            continue
        if "page" in f and (
            event.kind not in PAGE_KINDS
            or event.page_url is None
            or not glob(f["page"], event.page_url)
        ):
            continue
        if "within_days" in f and event.timestamp < now - timedelta(days=f["within_days"]):
            continue
        if "within_hours" in f and event.timestamp < now - timedelta(hours=f["within_hours"]):
            continue
        if all(property_matches(c, event.properties, now) for c in f.get("where", [])):
            events.append(event)
    checks = []
    if "count" in f:
        ((op, n),) = f["count"].items()
        checks.append(
            {"eq": len(events) == n, "gte": len(events) >= n, "lte": len(events) <= n}[op]
        )
    for key, pick in (("first", min), ("last", max)):
        if key in f:
            when = pick((e.timestamp for e in events), default=None)
            checks.append(compare(when, "datetime", f[key]["op"], f[key].get("value"), now, False))
    if not checks:
        checks.append(bool(events))
    return all(checks)
