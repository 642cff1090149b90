"""Typed custom attribute values: type inference, lossless coercion, limits and operations.

Pure functions (no database): the REST API, ingestion and imports all pass values through here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from audience.errors import Invalid

MAX_NAME = 255
MAX_STRING = 65_535
MAX_ATTRIBUTES = 500
OPERATIONS = ("$set", "$set_once", "$unset", "$add", "$union", "$append", "$remove")

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0"}

Scalar = str | int | float | bool


def check_name(name: str, *, field: str) -> None:
    if not name or not name.strip():
        raise Invalid("attribute name must not be empty", field=field)
    check_name_length(name, field=field)
    if name.startswith("$") or "." in name or "\x00" in name:
        raise Invalid("attribute name must not start with '$' or contain '.' or NUL", field=field)


def check_name_length(name: str, *, field: str) -> None:
    """R-ATTR-2: an attribute name is at most MAX_NAME characters."""
    if len(name) > MAX_NAME:
        raise Invalid(
            f"attribute name is over the limit of {MAX_NAME} characters",
            field=field,
            code="limit_exceeded",
        )


def check_count(count: int, *, model: str, field: str) -> None:
    """R-ATTR-2: a user or company has at most MAX_ATTRIBUTES custom attributes."""
    if count > MAX_ATTRIBUTES:
        raise Invalid(
            f"over the limit of {MAX_ATTRIBUTES} custom attributes per {model}",
            field=field,
            code="limit_exceeded",
        )


def check_limits(changes: Mapping[str, Any], *, model: str, field: str) -> None:
    """The R-ATTR-2 limits that custom attribute `changes` (values or `{"$op": operand}`) break
    on their own, before any stored value is known: too many attributes set at once, a name or a
    string that is too long. Ingestion's accept path refuses such a message with this.
    Everything else (types, shapes, the count with the stored ones) is judged when written."""
    check_count(
        sum(1 for raw in changes.values() if raw is not None and not _is_unset(raw)),
        model=model,
        field=field,
    )
    for name, raw in changes.items():
        where = f"{field}.{name[:50]}"
        check_name_length(name, field=where)
        operand = next(iter(raw.values())) if isinstance(raw, dict) and len(raw) == 1 else raw
        for item in operand if isinstance(operand, list) else [operand]:
            if isinstance(item, str):
                check_string(item, field=where)


def _is_unset(raw: Any) -> bool:
    return isinstance(raw, dict) and len(raw) == 1 and "$unset" in raw


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool)


def infer_type(value: Any) -> str:
    """The type a first value defines for an undeclared attribute."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str) and _DATE.match(value) and _parse_date(value) is not None:
        return "date"
    if isinstance(value, str) and _DATETIME.match(value) and _parse_datetime(value) is not None:
        return "datetime"
    return "string"


def _parse_date(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _parse_datetime(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def format_datetime(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _unix(value: int | float) -> datetime | None:
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def check_string(value: str, *, field: str) -> str:
    """R-ATTR-2: a string value is at most MAX_STRING characters."""
    if len(value) > MAX_STRING:
        raise Invalid(
            f"value is over the limit of {MAX_STRING} characters",
            field=field,
            code="limit_exceeded",
        )
    return value


def coerce(value: Any, type_: str, *, field: str) -> Any:
    """`value` as `type_` when that loses nothing; otherwise Invalid naming `field`."""
    wrong = Invalid(f"{_describe(value)} is not a valid {type_}", field=field, code="wrong_type")
    if isinstance(value, float) and not math.isfinite(value):
        raise wrong
    if type_ == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return str(value)
        if isinstance(value, str):
            return check_string(value, field=field)
        raise wrong
    if type_ == "number":
        if isinstance(value, bool):
            raise wrong
        if isinstance(value, int | float):
            return value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise wrong from None
            if not math.isfinite(number):
                raise wrong
            return int(number) if number.is_integer() and "." not in value else number
        raise wrong
    if type_ == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise wrong
    if type_ == "date":
        if isinstance(value, str):
            parsed_day = _parse_date(value)
            if parsed_day is not None:
                return parsed_day.isoformat()
            moment = _parse_datetime(value)
            if moment is not None and moment.time() == datetime.min.time():
                return moment.date().isoformat()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            moment = _unix(value)
            if moment is not None:
                return moment.date().isoformat()
        raise wrong
    if type_ == "datetime":
        moment = None
        if isinstance(value, str):
            moment = _parse_datetime(value)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            moment = _unix(value)
        if moment is None:
            raise wrong
        return format_datetime(moment)
    if type_ == "list":
        items = value if isinstance(value, list) else [value]
        if not all(_is_scalar(item) for item in items):
            raise Invalid(
                "list items must be strings, numbers or booleans", field=field, code="wrong_type"
            )
        for item in items:
            if isinstance(item, str):
                check_string(item, field=field)
        return list(items)
    raise wrong


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_value_shape(value: Any, *, field: str) -> None:
    """Custom attribute values are scalars or lists of scalars (never nested objects)."""
    items = value if isinstance(value, list) else [value]
    if any(isinstance(item, str) and "\x00" in item for item in items):
        # PostgreSQL JSONB can't hold NUL.
        raise Invalid("text must not contain NUL characters", field=field, code="wrong_type")
    if value is None or _is_scalar(value):
        return
    if isinstance(value, list) and all(_is_scalar(item) for item in value):
        return
    raise Invalid(
        "custom attribute values must be a string, number, boolean, date or a list of those",
        field=field,
        code="wrong_type",
    )


def split_operation(raw: Any, *, field: str) -> tuple[str, Any]:
    """`{"$add": 1}` -> ("$add", 1); a plain value is "$set" and null is "$unset"."""
    if raw is None:
        return "$unset", None
    if isinstance(raw, dict):
        if len(raw) != 1 or next(iter(raw)) not in OPERATIONS:
            raise Invalid(
                f"an object value must be one operation: {', '.join(OPERATIONS)}",
                field=field,
                code="wrong_type",
            )
        operation, operand = next(iter(raw.items()))
        check_value_shape(operand, field=field)
        return operation, operand
    check_value_shape(raw, field=field)
    return "$set", raw


def apply_operation(current: Any, operation: str, operand: Any, *, field: str) -> Any:
    """The new value after one operation; `None` means the attribute is removed."""
    if operation == "$set":
        return operand
    if operation == "$set_once":
        return operand if current is None else current
    if operation == "$unset":
        return None
    if operation == "$add":
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            raise Invalid("$add takes a number", field=field, code="wrong_type")
        if current is None:
            return operand
        if isinstance(current, bool) or not isinstance(current, int | float):
            raise Invalid("$add needs a number attribute", field=field, code="wrong_type")
        return current + operand
    items = operand if isinstance(operand, list) else [operand]
    existing = [] if current is None else current if isinstance(current, list) else [current]
    if operation == "$append":
        return existing + items
    if operation == "$union":
        return existing + [item for item in dict.fromkeys(items) if item not in existing]
    # $remove
    return [item for item in existing if item not in items]
