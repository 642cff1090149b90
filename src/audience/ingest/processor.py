"""The processor: applies inbox messages in order, in batches, one transaction per batch.

Per batch: find duplicates (R-ING-7), resolve identities for the whole batch in a few queries,
apply each message's effects, insert events in bulk (ON CONFLICT DO NOTHING keeps dedupe in the
database), store failures (R-ING-9) and delete the inbox rows, all in one commit. A message that
raises unexpectedly doesn't block the others: the batch is redone one message at a time, each in
its own savepoint, and the bad one goes to the failed-messages store.

Only one processor works at a time (a PostgreSQL advisory lock; SQLite's write lock), which is
what keeps per-user order (R-ING-8) when `audience serve` and `audience worker` both run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from audience.db import Database, insert_ignore, utcnow
from audience.environments.models import Environment
from audience.events.models import Event
from audience.ingest import effects, inbox
from audience.ingest.mapping import keys_of, traits_of
from audience.ingest.models import FailedMessage, InboxMessage, ProcessedMessage
from audience.ingest.resolve import Failed, Resolver

log = logging.getLogger("audience.processor")

BATCH_SIZE = 500
# Kinds whose effects can fail after the profile is written (the company of group, identify).
_MAY_FAIL_LATE = frozenset({"group", "identify"})
_LOCK_KEY = 0x61756469  # "audi": the PostgreSQL advisory lock that makes one processor at a time


class Batch:
    """The messages of one environment within a batch, and the rows they produce."""

    def __init__(self, session: Session, environment: Environment) -> None:
        self.session = session
        self.environment = environment
        self.resolver = Resolver(session, environment, before_merge=self.flush_events)
        self.events: list[dict[str, Any]] = []
        self.processed: list[dict[str, Any]] = []
        self.failed: list[FailedMessage] = []

    def flush_events(self) -> None:
        """Insert pending events now (a merge must see them to move them)."""
        self.session.flush()
        insert_ignore(self.session, Event, self.events)
        self.events = []

    def finish(self) -> None:
        self.flush_events()
        insert_ignore(self.session, ProcessedMessage, self.processed)
        self.session.add_all(self.failed)


def _timestamp(payload: dict[str, Any], fallback: datetime) -> datetime:
    try:
        return datetime.fromisoformat(str(payload["timestamp"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return fallback


def _seen(session: Session, environment_id: int, message_ids: list[str]) -> set[str]:
    """Message ids already applied in this environment (events or other processed kinds)."""
    seen: set[str] = set()
    for model in (Event, ProcessedMessage):
        query = select(model.message_id).where(
            model.environment_id == environment_id, model.message_id.in_(message_ids)
        )
        seen.update(session.scalars(query))
    return seen


def _apply_one(batch: Batch, message: effects.Message) -> None:
    session, environment = batch.session, batch.environment
    payload = message.payload
    traits = traits_of(payload)
    keys = keys_of(payload, traits)
    if message.kind == "alias":
        user = batch.resolver.alias(
            str(payload["previousId"]), keys, message.message_id, message.warnings
        )
    else:
        user = batch.resolver.resolve(keys, message.message_id, message.warnings)
    effects.apply_profile(
        session, environment, user, message, effects.profile_for(environment, message)
    )
    effects.touch(environment, user, message)
    if message.kind in effects.EVENT_KINDS:
        batch.events.append(effects.event_of(environment, user, message))
    elif message.kind == "group":
        group_traits = payload.get("traits") if isinstance(payload.get("traits"), dict) else {}
        effects.join_company(
            session, environment, user, message, str(payload["groupId"]), group_traits or {}
        )


def _apply(session: Session, rows: Sequence[InboxMessage]) -> None:
    for environment_id, group in groupby(rows, key=lambda row: row.environment_id):
        environment = session.get(Environment, environment_id)
        if environment is None:  # deleted since: its messages go with it
            continue
        batch = Batch(session, environment)
        group_rows = list(group)
        seen = _seen(session, environment_id, [row.message_id for row in group_rows])
        messages = []
        for row in group_rows:
            if row.message_id in seen:
                continue
            seen.add(row.message_id)
            payload = dict(row.payload)
            messages.append(
                (
                    row,
                    effects.Message(
                        payload,
                        row.message_id,
                        _timestamp(payload, row.received_at),
                        warnings=list(payload.get("warnings") or []),
                    ),
                )
            )
        batch.resolver.prefetch(keys_of(m.payload, traits_of(m.payload)) for _, m in messages)
        for row, message in messages:
            try:
                if message.kind in _MAY_FAIL_LATE:
                    # A company that can't be stored fails the message after the profile was
                    # written: a savepoint takes that back (nothing half-applied, R-ING-4).
                    with session.begin_nested():
                        _apply_one(batch, message)
                else:
                    _apply_one(batch, message)
            except Failed as failure:
                batch.failed.append(_failure(row, failure.code, failure.message, failure.stage))
                if message.kind in _MAY_FAIL_LATE:  # its cached users may be rolled back
                    batch.resolver = Resolver(session, environment, before_merge=batch.flush_events)
                continue
            if message.kind not in effects.EVENT_KINDS or message.warnings:
                batch.processed.append(
                    {
                        "environment_id": environment_id,
                        "message_id": message.message_id,
                        "kind": message.kind,
                        "warnings": message.warnings,
                        "processed_at": utcnow(),
                    }
                )
        batch.finish()


def _failure(row: InboxMessage, code: str, message: str, stage: str) -> FailedMessage:
    return FailedMessage(
        environment_id=row.environment_id,
        message_id=row.message_id,
        payload=row.payload,
        error_code=code,
        error_message=message[:2000],
        stage=stage,
        received_at=row.received_at,
    )


class Processor:
    def __init__(self, database: Database, *, batch_size: int = BATCH_SIZE) -> None:
        self.database = database
        self.batch_size = batch_size

    def _locked(self, session: Session) -> bool:
        if session.get_bind().dialect.name != "postgresql":
            return True  # BEGIN IMMEDIATE: SQLite has one writer at a time anyway
        return bool(session.scalar(text(f"SELECT pg_try_advisory_xact_lock({_LOCK_KEY})")))

    def run_once(self) -> int:
        """Process one batch; returns how many inbox messages it took (0: nothing to do)."""
        with self.database.transaction() as session:
            if not self._locked(session):
                return 0
            rows = inbox.take_batch(session, self.batch_size)
            if not rows:
                return 0
            try:
                with session.begin_nested():
                    _apply(session, rows)
            except Exception:
                log.exception("a batch failed; applying its messages one at a time")
                session.expunge_all()
                rows = inbox.take_batch(session, self.batch_size)
                for row in rows:
                    self._apply_alone(session, row)
            inbox.delete(session, [row.id for row in rows])
            return len(rows)

    def _apply_alone(self, session: Session, row: InboxMessage) -> None:
        try:
            with session.begin_nested():
                _apply(session, [row])
        except Exception as exc:
            log.exception("message %s failed", row.message_id)
            session.add(_failure(row, "internal_error", f"{type(exc).__name__}: {exc}", "apply"))

    def drain(self) -> int:
        """Process until the inbox is empty (tests, `audience worker --once`)."""
        total = 0
        while processed := self.run_once():
            total += processed
        return total

    def run_forever(self, stop: threading.Event, *, idle_seconds: float = 0.1) -> None:
        while not stop.is_set():
            try:
                if self.run_once():
                    continue
            except Exception:  # keep going: the database may be back in a moment
                log.exception("processor error")
                stop.wait(1.0)
            stop.wait(idle_seconds)
