"""Validating and normalising tracking messages, each on its own (R-ING-5, R-ID-6, R-ING-6).

Plain code over orjson's output, no pydantic: this runs for every message on the hot path. A
message either becomes an `Accepted` (its messageId and the normalised payload, serialised once,
ready for the inbox) or raises `Rejected` naming what is wrong.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from audience.errors import Invalid
from audience.ingest import limits
from audience.ingest.timestamps import JSON_OPTIONS, stamp
from audience.users.identity import is_blocked

KINDS = ("identify", "track", "page", "screen", "group", "alias")
_KINDS = frozenset(KINDS)
MAX_MESSAGE_BYTES = 32 * 1024
MAX_BATCH_MESSAGES = 1000
MAX_ID_LENGTH = 255
MAX_EVENT_LENGTH = 255
MAX_MESSAGE_ID_LENGTH = 100
MAX_DEPTH = 32
# Optional parts that the processor reads as objects; `null` counts as absent.
_OBJECT_FIELDS = ("context", "integrations", "properties", "traits")


class Rejected(Exception):
    def __init__(self, code: str, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@dataclass(slots=True)
class Accepted:
    message_id: str
    payload: bytes  # the normalised message as JSON, stored as is
    warnings: list[dict[str, str]]


@dataclass(slots=True)
class Defaults:
    """What a /v1/batch envelope gives every message (Segment merges these into each one)."""

    context: dict[str, Any] | None = None
    integrations: dict[str, Any] | None = None
    sent_at: Any = None


@dataclass(slots=True)
class Outcome:
    """The per-message results of a request, by index."""

    accepted: list[Accepted] = field(default_factory=list)
    rejected: list[tuple[int, Any, Rejected]] = field(default_factory=list)  # index, item, why
    warnings: list[dict[str, Any]] = field(default_factory=list)

    def reply(self) -> dict[str, Any]:
        """`{"accepted": N, "rejected": [...]}`, plus `warnings` when there are any."""
        rejected = [
            {
                "index": index,
                "messageId": _given_message_id(item),
                "code": rejection.code,
                "message": rejection.message,
            }
            for index, item, rejection in self.rejected
        ]
        reply: dict[str, Any] = {"accepted": len(self.accepted), "rejected": rejected}
        if self.warnings:
            reply["warnings"] = self.warnings
        return reply


def validate_all(
    items: list[Any],
    *,
    kind: str | None,
    defaults: Defaults,
    received_at: datetime,
) -> Outcome:
    """Validates every item on its own: one bad message never sinks the others (R-ING-4)."""
    outcome = Outcome()
    for index, item in enumerate(items):
        try:
            accepted = normalise(item, kind=kind, defaults=defaults, received_at=received_at)
        except Rejected as rejection:
            outcome.rejected.append((index, item, rejection))
            continue
        outcome.accepted.append(accepted)
        for warning in accepted.warnings:
            outcome.warnings.append(
                {
                    "index": index,
                    "messageId": accepted.message_id,
                    "code": warning["code"],
                    "message": warning["message"],
                }
            )
    return outcome


def normalise(
    item: Any,
    *,
    kind: str | None,
    defaults: Defaults,
    received_at: datetime,
) -> Accepted:
    """The stored form of one message: ids checked, messageId assigned, timestamps stamped."""
    if not isinstance(item, dict):
        raise Rejected("invalid_message", f"a message must be a JSON object, not {_kind(item)}")
    message: dict[str, Any] = item
    message.pop("writeKey", None)  # the app token: already used, never stored
    _apply_defaults(message, defaults)
    _check_serialisable(message, kind)

    message["type"] = _message_type(message, kind)
    warnings: list[dict[str, str]] = []
    user_id = _identity(message, "userId", warnings)
    anonymous_id = _identity(message, "anonymousId", warnings)
    if user_id is None and anonymous_id is None:
        raise Rejected("missing_id", "a message needs a userId or an anonymousId", field="userId")
    _check_kind_fields(message, warnings)
    for name in _OBJECT_FIELDS:
        if name in message:
            value = message[name]
            if value is None:
                del message[name]
            elif type(value) is not dict:
                raise Rejected("invalid_field", f"{name} must be an object", field=name)
    message_id = _message_id(message)
    _check_limits(message)

    if "warnings" in message:
        warnings.append(
            {
                "code": "reserved_field",
                "message": "the top-level field warnings is audience's own; "
                "the value sent was replaced",
                "field": "warnings",
            }
        )
        del message["warnings"]
    stamp(message, received_at=received_at, warnings=warnings)
    if warnings:
        message["warnings"] = warnings
    return Accepted(message_id, orjson.dumps(message, option=JSON_OPTIONS), warnings)


def _apply_defaults(message: dict[str, Any], defaults: Defaults) -> None:
    # The message's own keys win over the envelope's, key by key.
    for name, shared in (("context", defaults.context), ("integrations", defaults.integrations)):
        if shared:
            own = message.get(name)
            if own is None:
                message[name] = dict(shared)
            elif isinstance(own, dict):
                message[name] = {**shared, **own}
    if defaults.sent_at is not None and "sentAt" not in message:
        # Kept on each message: the processor and a replay see the same correction inputs.
        message["sentAt"] = defaults.sent_at


def _check_serialisable(message: dict[str, Any], kind: str | None) -> None:
    """Size, nesting and string content, judged on the message as the client sent it."""
    try:
        raw = orjson.dumps(message)
    except TypeError:  # orjson.JSONEncodeError: too deep for orjson, or a lone surrogate
        raise _unserialisable(message) from None
    if len(raw) > MAX_MESSAGE_BYTES:
        text = f"the message is {len(raw)} bytes serialised; the limit is {MAX_MESSAGE_BYTES}"
        broken = _limit_broken(message, kind)
        raise Rejected("message_too_large", f"{text} ({broken})" if broken else text)
    # Cheap bounds first; the exact walks run only when a bound is crossed.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _too_deep(message, MAX_DEPTH):
        raise Rejected("too_deep", f"the message nests deeper than {MAX_DEPTH} levels")
    if b"\\u0000" in raw and _has_nul(message):
        # PostgreSQL's jsonb can't hold \u0000, so one rule for both databases.
        raise Rejected("invalid_string", "strings and keys must not contain NUL (\\u0000)")


def _limit_broken(message: dict[str, Any], kind: str | None) -> str | None:
    """For a message over 32 KB, the R-ATTR-2 limit that made it so, if one did: a trait of
    70,000 characters is over the 65,535-character limit of a value, not only large."""
    given = kind or message.get("type")
    if not isinstance(given, str) or given.lower() not in _KINDS:
        return None
    try:
        _check_limits({**message, "type": given.lower()})
    except Rejected as rejection:
        return rejection.message
    return None


def _check_limits(message: dict[str, Any]) -> None:
    """R-ATTR-2's limits (properties, custom attributes): the REST API's rules, as Rejected."""
    try:
        limits.check_message(message)
    except Invalid as invalid:
        where = invalid.field or ""
        text = (
            invalid.message if invalid.message.startswith(where) else f"{where}: {invalid.message}"
        )
        raise Rejected(invalid.code, text, field=invalid.field) from None


def _unserialisable(message: dict[str, Any]) -> Rejected:
    if _too_deep(message, MAX_DEPTH):
        return Rejected("too_deep", f"the message nests deeper than {MAX_DEPTH} levels")
    return Rejected(
        "invalid_string", "the message contains a lone UTF-16 surrogate (invalid Unicode)"
    )


def _too_deep(value: Any, room: int) -> bool:
    """True when `value` nests more than `room` levels of objects and arrays (itself included)."""
    if isinstance(value, dict):
        children: Any = value.values()
    elif isinstance(value, list):
        children = value
    else:
        return False
    if room == 0:
        return True
    return any(_too_deep(child, room - 1) for child in children)


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any("\x00" in key or _has_nul(child) for key, child in value.items())
    if isinstance(value, list):
        return any(_has_nul(child) for child in value)
    return False


def _message_type(message: dict[str, Any], kind: str | None) -> str:
    if kind is not None:  # a single-message route names the type
        return kind
    given = message.get("type")
    if isinstance(given, str) and given.lower() in _KINDS:
        return given.lower()
    if given is None:
        raise Rejected("invalid_type", "type is missing", field="type")
    raise Rejected(
        "invalid_type",
        f"type {_shown(given)} is not one of {', '.join(KINDS)}",
        field="type",
    )


def _identifier(message: dict[str, Any], name: str, *, code: str) -> str | None:
    """A string id (numbers become strings) of at most 255 characters, None when absent."""
    value = message.get(name)
    if value is None:
        return None
    if type(value) is not str:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise Rejected(code, f"{name} must be a string or a number", field=name)
        value = str(int(value)) if isinstance(value, int) or value.is_integer() else repr(value)
        message[name] = value
    if len(value) > MAX_ID_LENGTH:
        raise Rejected(
            code, f"{name} is {len(value)} characters; the limit is {MAX_ID_LENGTH}", field=name
        )
    return value


def _identity(message: dict[str, Any], name: str, warnings: list[dict[str, str]]) -> str | None:
    """An identity value; a placeholder such as "null" or "guest" counts as absent (R-ID-6)."""
    value = _identifier(message, name, code="invalid_id")
    if value is not None and is_blocked(value):
        del message[name]
        warnings.append(
            {
                "code": "blocked_id",
                "message": f"{name} {_shown(value)} is a placeholder, not an id; it was ignored",
                "field": name,
            }
        )
        return None
    return value


def _check_kind_fields(message: dict[str, Any], warnings: list[dict[str, str]]) -> None:
    kind = message["type"]
    if kind == "track":
        event = message.get("event")
        if event is None or (isinstance(event, str) and not event.strip()):
            raise Rejected("missing_event", "a track message needs an event name", field="event")
        if not isinstance(event, str) or len(event) > MAX_EVENT_LENGTH:
            raise Rejected(
                "invalid_event",
                f"event must be a string of 1 to {MAX_EVENT_LENGTH} characters",
                field="event",
            )
    elif kind == "group":
        group_id = _identifier(message, "groupId", code="invalid_group_id")
        if group_id is None or is_blocked(group_id):
            raise Rejected("missing_group_id", "a group message needs a groupId", field="groupId")
    elif kind == "alias":
        previous_id = _identifier(message, "previousId", code="invalid_previous_id")
        if previous_id is None or is_blocked(previous_id):
            raise Rejected(
                "missing_previous_id", "an alias message needs a previousId", field="previousId"
            )


def _message_id(message: dict[str, Any]) -> str:
    value = message.get("messageId")
    if value is None or (isinstance(value, str) and not value.strip()):
        value = str(uuid.uuid4())
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif not isinstance(value, str):
        raise Rejected("invalid_message_id", "messageId must be a string", field="messageId")
    elif len(value) > MAX_MESSAGE_ID_LENGTH:
        raise Rejected(
            "invalid_message_id",
            f"messageId is {len(value)} characters; the limit is {MAX_MESSAGE_ID_LENGTH}",
            field="messageId",
        )
    message["messageId"] = value
    return value


def _given_message_id(item: Any) -> str | None:
    if isinstance(item, dict):
        value = item.get("messageId")
        if isinstance(value, str):
            try:
                value.encode()  # a lone surrogate can't go into the JSON reply
            except UnicodeEncodeError:
                return None
            return value[:MAX_MESSAGE_ID_LENGTH]
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number"}
    return names.get(type(value), "a number" if isinstance(value, float) else "a value")


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
