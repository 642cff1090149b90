"""Failed messages (R-ING-9): list, inspect, delete, and replay them through the inbox.

A replay appends the message to the inbox as a new row with its own messageId, so it goes the
same way as a message just accepted: the processor applies it in order, and its dedupe (R-ING-7)
makes a replay of a message that was applied meanwhile a no-op. A replay that fails again lands
in the store as a new failed message; the replayed one keeps its row, with `replayed_at` set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from audience.db import get_scoped, utcnow
from audience.errors import Invalid, NotFound
from audience.ingest import inbox
from audience.ingest.messages import Defaults, Rejected, normalise
from audience.ingest.models import FailedMessage
from audience.ingest.timestamps import JSON_OPTIONS, parse_timestamp
from audience.pagination import Order, Page, PageParams, paginate

BULK_LIMIT = 1000


def failed_of(environment_id: int) -> Select[FailedMessage]:
    """Every query of failed messages starts here: one environment."""
    return select(FailedMessage).where(FailedMessage.environment_id == environment_id)


def get_failed(session: Session, *, environment_id: int, id: int) -> FailedMessage:
    return get_scoped(
        session, FailedMessage, environment_id=environment_id, id=id, what="failed message"
    )


def _filtered(
    environment_id: int,
    *,
    error_code: str | None,
    stage: str | None,
    replayed: bool | None,
    message_id: str | None = None,
) -> Select[FailedMessage]:
    query = failed_of(environment_id)
    if error_code is not None:
        query = query.where(FailedMessage.error_code == error_code)
    if stage is not None:
        query = query.where(FailedMessage.stage == stage)
    if message_id is not None:
        query = query.where(FailedMessage.message_id == message_id)
    if replayed is not None:
        column = FailedMessage.replayed_at
        query = query.where(column.is_not(None) if replayed else column.is_(None))
    return query


def list_failed(
    session: Session,
    *,
    environment_id: int,
    params: PageParams,
    error_code: str | None = None,
    stage: str | None = None,
    replayed: bool | None = None,
    message_id: str | None = None,
) -> Page:
    """Newest first (ids grow with the time of failure)."""
    query = _filtered(
        environment_id,
        error_code=error_code,
        stage=stage,
        replayed=replayed,
        message_id=message_id,
    )
    order = Order("id", FailedMessage.id, FailedMessage.id, descending=True)
    return paginate(session, query, order=order, params=params)


def delete_failed(session: Session, *, environment_id: int, id: int) -> None:
    failed = get_failed(session, environment_id=environment_id, id=id)
    session.delete(failed)
    session.flush()


def _edited(failed: FailedMessage, payload: dict[str, Any]) -> bytes:
    """An edited copy of the message, checked and normalised like a /v1 message.

    It must stay the same message (same `type` and `messageId`) so that dedupe still holds. Its
    times are corrected against the original `receivedAt`, as when it was first accepted.
    """
    message = dict(payload)
    message.pop("warnings", None)  # audience's own; normalise records fresh ones
    kind = failed.payload.get("type")
    given = message.get("type")
    if not isinstance(given, str) or given.lower() != kind:
        raise Invalid(f"payload.type must stay {kind!r}", field="payload.type")
    expected = _message_id(failed)
    given_id = message.get("messageId")
    same = isinstance(given_id, str | int) and not isinstance(given_id, bool)
    if not same or str(given_id) != expected:
        raise Invalid(
            f"payload.messageId must stay {expected!r}: a replay is the same message",
            field="payload.messageId",
        )
    # Server-stamped when first accepted: an edit can't move it.
    stored = failed.payload.get("receivedAt")
    received = parse_timestamp(stored) or failed.received_at or utcnow()
    try:
        accepted = normalise(message, kind=None, defaults=Defaults(), received_at=received)
    except Rejected as rejection:
        field = f"payload.{rejection.field}" if rejection.field else "payload"
        raise Invalid(rejection.message, field=field, code=rejection.code) from None
    return accepted.payload


def _requeue(
    session: Session, *, environment_id: int, items: Sequence[tuple[FailedMessage, bytes]]
) -> None:
    """Back into the inbox, in the given order; `replayed_at` marks each row."""
    now = utcnow()
    inbox.append(
        session,
        environment_id=environment_id,
        received_at=now,  # the inbox's waiting time (health lag); the payload keeps its times
        messages=[(_message_id(failed), document) for failed, document in items],
    )
    for failed, _ in items:
        failed.replayed_at = now
    session.flush()


def _message_id(failed: FailedMessage) -> str:
    return failed.message_id or str(failed.payload.get("messageId"))


def _stored(failed: FailedMessage) -> bytes:
    return orjson.dumps(failed.payload, option=JSON_OPTIONS)


def replay(
    session: Session,
    *,
    environment_id: int,
    id: int,
    payload: dict[str, Any] | None = None,
) -> FailedMessage:
    """Queue the message again, as stored or as `payload` (an edited copy)."""
    failed = get_failed(session, environment_id=environment_id, id=id)
    document = _stored(failed) if payload is None else _edited(failed, payload)
    _requeue(session, environment_id=environment_id, items=[(failed, document)])
    return failed


def replay_ids(session: Session, *, environment_id: int, ids: Sequence[int]) -> list[FailedMessage]:
    """Queue these messages again, oldest first; 404 (nothing queued) when one is unknown."""
    wanted = sorted(set(ids))
    query = failed_of(environment_id).where(FailedMessage.id.in_(wanted))
    found = list(session.scalars(query.order_by(FailedMessage.id)))
    missing = sorted(set(wanted) - {failed.id for failed in found})
    if missing:
        raise NotFound("failed message", ", ".join(map(str, missing[:10])))
    _requeue(
        session,
        environment_id=environment_id,
        items=[(failed, _stored(failed)) for failed in found],
    )
    return found


def replay_matching(
    session: Session,
    *,
    environment_id: int,
    error_code: str | None = None,
    stage: str | None = None,
) -> tuple[list[FailedMessage], int]:
    """Queue the oldest BULK_LIMIT not-yet-replayed matches; returns them and how many are left.

    Only messages not replayed yet match, so calling again moves on to the next ones.
    """
    query = _filtered(environment_id, error_code=error_code, stage=stage, replayed=False)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    found = list(session.scalars(query.order_by(FailedMessage.id).limit(BULK_LIMIT)))
    if found:
        _requeue(
            session,
            environment_id=environment_id,
            items=[(failed, _stored(failed)) for failed in found],
        )
    return found, total - len(found)
