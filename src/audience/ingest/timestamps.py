"""Message timestamps (R-ING-6): ISO 8601 parsing and clock-skew correction."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from audience.events.timing import too_far_ahead


def parse_timestamp(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 string (no zone means UTC), else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        return None


# Messages keep datetimes until they are serialised: orjson writes RFC 3339 in C, several times
# faster than isoformat(). The stored form is `2024-05-01T12:00:00.123456Z` (no fraction on a
# whole second).
JSON_OPTIONS = orjson.OPT_UTC_Z


def format_timestamp(value: datetime) -> str:
    """A UTC datetime as it is stored in payloads."""
    return orjson.dumps(value.astimezone(UTC), option=JSON_OPTIONS)[1:-1].decode()


# Every message of a batch shares the envelope's sentAt: parse it once.
_parse_sent_at = lru_cache(maxsize=64)(parse_timestamp)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def stamp(
    message: dict[str, Any],
    *,
    received_at: datetime,
    warnings: list[dict[str, str]],
) -> None:
    """Sets `receivedAt` and the corrected `timestamp` (datetimes) on `message`, with warnings.

    The client's event time is `originalTimestamp`, or `timestamp` when only that is given (the
    server libraries send `timestamp`); it is kept as `originalTimestamp`. With a `sentAt` (the
    client's clock when it sent the batch) the stored time is
    `receivedAt - (sentAt - originalTimestamp)`, which cancels the client's clock skew.
    """
    field = "originalTimestamp"
    raw = message.get(field)
    if raw is None:
        field = "timestamp"
        raw = message.get(field)
        if raw is not None:
            message["originalTimestamp"] = raw
    timestamp = received_at
    if raw is not None:
        original = parse_timestamp(raw)
        if original is None:
            warnings.append(
                {
                    "code": "invalid_timestamp",
                    "message": f"{field} {_shown(raw)} is not an ISO 8601 time; "
                    "the server time was used",
                    "field": field,
                }
            )
        else:
            timestamp = _corrected(message, original, received_at, warnings)
    if too_far_ahead(timestamp, received_at):
        warnings.append(
            {
                "code": "future_timestamp",
                "message": f"timestamp {format_timestamp(timestamp)} is more than 24 hours "
                "in the future; kept as given",
                "field": "timestamp",
            }
        )
    message["timestamp"] = timestamp
    message["receivedAt"] = received_at


def _corrected(
    message: dict[str, Any],
    original: datetime,
    received_at: datetime,
    warnings: list[dict[str, str]],
) -> datetime:
    raw = message.get("sentAt")
    if raw is None:
        return original
    sent_at = _parse_sent_at(raw) if isinstance(raw, str) else None
    if sent_at is None:
        warnings.append(
            {
                "code": "invalid_timestamp",
                "message": f"sentAt {_shown(raw)} is not an ISO 8601 time; "
                "the timestamp was not corrected for clock skew",
                "field": "sentAt",
            }
        )
        return original
    try:
        return received_at - (sent_at - original)
    except OverflowError:
        warnings.append(
            {
                "code": "invalid_timestamp",
                "message": "sentAt and the timestamp are too far apart to correct; "
                "the timestamp was not corrected for clock skew",
                "field": "sentAt",
            }
        )
        return original
