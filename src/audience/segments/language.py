"""The vocabulary of the filter language: fields and their types, operators and aliases,
limits, and the checks that turn JSON values into typed ones (or a FilterError naming the spot).

filters.py builds the tree from these; docs/filters.md documents them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from audience.errors import Invalid

MAX_DEPTH = 4  # nested and/or/not groups on any path
MAX_CONDITIONS = 50  # conditions in one filter, behaviour `where` conditions included
MAX_VALUES = 1000  # items of an `in`/`nin` list
MAX_TEXT = 65_535
MAX_INT = 2**63 - 1  # what both databases bind as an integer
MAX_WINDOW = {"days": 36_500, "hours": 876_000}

Type = Literal["string", "number", "boolean", "date", "datetime", "list", "any"]
Scope = Literal["user", "company", "event"]

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
PRESENCE = ("exists", "not_exists")
_DATE_OPS = ("eq", "ne", "gt", "gte", "lt", "lte", "between", "before", "after")
WINDOW_OPS = ("within_last", "within_next", "more_than_ago")
OPERATORS: dict[str, tuple[str, ...]] = {
    "string": (
        "eq",
        "ne",
        "in",
        "nin",
        "contains",
        "not_contains",
        "starts_with",
        "ends_with",
        *PRESENCE,
    ),
    "number": ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "between", *PRESENCE),
    "boolean": ("eq", "ne", *PRESENCE),
    "date": (*_DATE_OPS, *WINDOW_OPS, *PRESENCE),
    "datetime": (*_DATE_OPS, *WINDOW_OPS, *PRESENCE),
    "list": ("contains", "not_contains", "in", "nin", *PRESENCE),
}
MEMBERSHIP_OPS = ("eq", "ne", "in", "nin", "exists", "not_exists")
COUNT_OPS = ("eq", "gte", "lte")
OCCURRENCE_OPS = tuple(op for op in OPERATORS["datetime"] if op not in ("ne", *PRESENCE))

_UTM = tuple(
    f"{touch}utm_{part}"
    for touch in ("", "first_")
    for part in ("source", "medium", "campaign", "term", "content")
)
# Standard user columns: name -> type. Identifiers compare exactly; other text ignores case.
USER_FIELDS: dict[str, Type] = {
    "id": "number",
    "session_count": "number",
    "page_views": "number",
    "unsubscribed_from_emails": "boolean",
    **dict.fromkeys(
        (
            "created_at",
            "updated_at",
            "signed_up_at",
            "first_seen_at",
            "last_seen_at",
            "last_request_at",
            "last_heard_from_at",
        ),
        "datetime",
    ),
    **dict.fromkeys(
        (
            "user_id",
            "user_key",
            "email",
            "phone",
            "phone_original",
            "name",
            "first_name",
            "last_name",
            "pseudonym",
            "gender",
            "status",
            "city",
            "region",
            "country",
            "postal_code",
            "timezone",
            "language",
            "google_url",
            "linkedin_url",
            "twitter_url",
            "facebook_url",
            "avatar_url",
            "referrer",
            "owner_id",
            "browser",
            "browser_version",
            "os",
            "device",
            *_UTM,
        ),
        "string",
    ),
}
COMPANY_FIELDS: dict[str, Type] = {
    "id": "number",
    "size": "number",
    "remote_created_at": "datetime",
    "created_at": "datetime",
    "updated_at": "datetime",
    **dict.fromkeys(
        (
            "company_id",
            "name",
            "email",
            "address",
            "city",
            "region",
            "country",
            "postal_code",
            "description",
            "website",
            "industry",
            "plan",
        ),
        "string",
    ),
}
# Equality on these is exact: "abc" and "ABC" are different customers' ids.
EXACT_FIELDS = frozenset({"id", "user_id", "user_key", "phone", "owner_id", "company_id"})
MEMBERSHIPS = ("tags", "lists", "segments")


class FilterError(Invalid):
    """A bad filter: 400 (R-SEG-5) with `field` naming the spot, e.g. `filter.and[2].op`."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message, field=field, code="invalid_filter")
        self.status = 400


@dataclass(frozen=True)
class Window:
    """A relative window such as {"days": 7}."""

    unit: Literal["days", "hours"]
    amount: int

    @property
    def delta(self) -> timedelta:
        return timedelta(days=self.amount) if self.unit == "days" else timedelta(hours=self.amount)


@dataclass(frozen=True)
class Ref:
    """A tag, list or segment by internal id or by name."""

    id: int | None = None
    name: str | None = None


# --- values ----------------------------------------------------------------------------------


def describe(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "null"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def only(raw: dict[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for key in raw:
        if key not in allowed:
            # Named in the path only when it can be shown (a lone surrogate can't be encoded).
            named = isinstance(key, str) and len(key) <= 100 and key.isprintable()
            where = f"{path}.{key}" if named else path
            raise FilterError(
                f"unknown key {describe(key)}; expected {', '.join(allowed)}", field=where
            )


def text_value(value: Any, path: str, *, limit: int = MAX_TEXT, empty: bool = True) -> str:
    if not isinstance(value, str):
        raise FilterError(f"expected a string, not {describe(value)}", field=path)
    if not empty and not value:
        raise FilterError("must not be empty", field=path)
    if len(value) > limit:
        raise FilterError(f"over the limit of {limit} characters", field=path)
    if "\x00" in value:
        raise FilterError("must not contain NUL characters", field=path)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError("not valid Unicode (lone surrogate)", field=path) from None
    return value


def number_value(value: Any, path: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FilterError(f"expected a number, not {describe(value)}", field=path)
    if isinstance(value, float) and not math.isfinite(value):
        raise FilterError("expected a finite number", field=path)
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise FilterError("number out of range", field=path)
    return value


def datetime_value(value: Any, path: str) -> datetime:
    """ISO 8601 (a time without zone is UTC; a date is its midnight) or unix seconds."""
    wrong = FilterError(
        f"expected an ISO 8601 date-time or unix seconds, not {describe(value)}", field=path
    )
    try:
        if isinstance(value, str) and len(value) <= 64:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            moment = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            moment = datetime.fromtimestamp(value, UTC)
        else:
            raise wrong
    except (ValueError, OverflowError, OSError):
        raise wrong from None
    # Room for windows and for the databases' own calendar limits.
    if not 1 < moment.year < 9999:
        raise wrong
    return moment


def date_value(value: Any, path: str) -> date:
    if isinstance(value, str) and len(value) == 10:
        try:
            day = date.fromisoformat(value)
        except ValueError:
            pass
        else:
            if 1 < day.year < 9999:
                return day
    raise FilterError(f"expected a date YYYY-MM-DD, not {describe(value)}", field=path)


def scalar_value(type_: Type, value: Any, path: str) -> Any:
    if type_ == "string":
        return text_value(value, path)
    if type_ == "number":
        return number_value(value, path)
    if type_ == "boolean":
        if not isinstance(value, bool):
            raise FilterError(f"expected true or false, not {describe(value)}", field=path)
        return value
    if type_ == "date":
        return date_value(value, path)
    if type_ == "datetime":
        return datetime_value(value, path)
    # a list element or an event property: any scalar
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return number_value(value, path)
    if isinstance(value, str):
        return text_value(value, path)
    raise FilterError(f"expected a string, number or boolean, not {describe(value)}", field=path)


def same_kind(items: tuple[Any, ...], path: str) -> None:
    def kind(item: Any) -> type:
        return bool if isinstance(item, bool) else str if isinstance(item, str) else float

    if len({kind(item) for item in items}) > 1:
        raise FilterError("values must all be strings, all numbers or all booleans", field=path)


def window_value(value: Any, path: str) -> Window:
    if not isinstance(value, dict) or len(value) != 1:
        raise FilterError('expected {"days": N} or {"hours": N}', field=path)
    ((unit, amount),) = value.items()
    if unit not in MAX_WINDOW:
        raise FilterError('expected {"days": N} or {"hours": N}', field=path)
    limit = MAX_WINDOW[unit]
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= limit:
        raise FilterError(f"{unit} must be a whole number from 0 to {limit}", field=path)
    return Window(unit, amount)


def count_value(value: Any, path: str) -> tuple[str, int]:
    if not isinstance(value, dict) or len(value) != 1:
        raise FilterError('count takes one of {"eq": N}, {"gte": N}, {"lte": N}', field=path)
    ((op, amount),) = value.items()
    if op not in COUNT_OPS:
        raise FilterError('count takes one of {"eq": N}, {"gte": N}, {"lte": N}', field=path)
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= 1_000_000:
        raise FilterError("count must be a whole number from 0 to 1000000", field=f"{path}.{op}")
    return op, amount


def ref_value(value: Any, path: str) -> Ref:
    """A tag/list/segment: a name (string), an id (integer) or {"id": "12"} / {"name": "VIP"}."""
    if isinstance(value, str):
        return Ref(name=text_value(value, path, limit=255, empty=False))
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 < value <= MAX_INT:
            raise FilterError("id out of range", field=path)
        return Ref(id=value)
    if isinstance(value, dict) and len(value) == 1:
        ((key, item),) = value.items()
        if key == "name":
            return Ref(name=text_value(item, f"{path}.name", limit=255, empty=False))
        if key == "id":
            text = str(item) if isinstance(item, int) and not isinstance(item, bool) else item
            if isinstance(text, str) and text.isascii() and text.isdigit() and len(text) <= 18:
                return Ref(id=int(text))
            raise FilterError(f"not an id: {describe(item)}", field=f"{path}.id")
    raise FilterError(
        f'expected a name, an id or {{"id": ...}} / {{"name": ...}}, not {describe(value)}',
        field=path,
    )
