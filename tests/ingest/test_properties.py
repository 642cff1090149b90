"""Property tests of message validation and timestamp correction (no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from audience.ingest.messages import (
    MAX_MESSAGE_ID_LENGTH,
    Defaults,
    normalise,
    validate_all,
)
from audience.ingest.timestamps import format_timestamp, parse_timestamp

RECEIVED = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
known = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["identify", "track", "page", "screen", "group", "alias", "x"])
        | json_values,
        "userId": st.text(max_size=8) | st.integers() | json_values,
        "anonymousId": st.text(max_size=8) | json_values,
        "event": st.text(max_size=8) | json_values,
        "groupId": st.text(max_size=8) | json_values,
        "previousId": st.text(max_size=8) | json_values,
        "messageId": st.text(max_size=120) | json_values,
        "timestamp": st.datetimes().map(str) | json_values,
        "originalTimestamp": st.datetimes().map(str) | json_values,
        "sentAt": st.datetimes().map(str) | json_values,
        "context": json_values,
        "properties": json_values,
        "warnings": json_values,
    },
)
messages = st.builds(
    lambda k, extra: {**extra, **k}, known, st.dictionaries(st.text(), json_values)
)


@settings(max_examples=300, deadline=None)
@given(items=st.lists(messages | json_values, max_size=5))
def test_every_item_is_accepted_as_valid_json_or_rejected_with_a_code(items: list[Any]) -> None:
    outcome = validate_all(items, kind=None, defaults=Defaults(), received_at=RECEIVED)
    assert len(outcome.accepted) + len(outcome.rejected) == len(items)
    for accepted in outcome.accepted:
        payload = orjson.loads(accepted.payload)
        assert payload["type"] in {"identify", "track", "page", "screen", "group", "alias"}
        assert payload["messageId"] == accepted.message_id
        assert 0 < len(accepted.message_id) <= MAX_MESSAGE_ID_LENGTH
        assert isinstance(payload.get("userId"), str) or isinstance(payload.get("anonymousId"), str)
        assert parse_timestamp(payload["timestamp"]) is not None
        assert parse_timestamp(payload["receivedAt"]) == RECEIVED
    orjson.dumps(outcome.reply())  # the reply always serialises


@settings(max_examples=300, deadline=None)
@given(skew=st.integers(-(10**10), 10**10), age=st.integers(0, 10**10))
def test_corrected_timestamp_cancels_the_client_clock_skew(skew: int, age: int) -> None:
    """Whatever the client's clock says, the stored time is when the event happened (as far as
    the server can tell: it takes the send as instantaneous)."""
    event = RECEIVED - timedelta(milliseconds=age)
    client_clock = timedelta(milliseconds=skew)
    original = event + client_clock
    sent = RECEIVED + client_clock  # sent "now" by the client's clock
    message = {
        "type": "track",
        "userId": "u",
        "event": "e",
        "originalTimestamp": format_timestamp(original),
        "sentAt": format_timestamp(sent),
    }
    payload = orjson.loads(
        normalise(message, kind=None, defaults=Defaults(), received_at=RECEIVED).payload
    )
    assert parse_timestamp(payload["timestamp"]) == event
