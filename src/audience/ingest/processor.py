"""The processor: applies inbox messages in order, in batches, one transaction per batch.

Per batch: find duplicates (R-ING-7), resolve identities for the whole batch in a few queries,
apply each message's effects, insert events in bulk (ON CONFLICT DO NOTHING keeps dedupe in the
database), store failures (R-ING-9) and delete the inbox rows, all in one commit. A message fails
before any of its effects is written (resolve.Failed, joins.company_data), so no message needs a
savepoint of its own. A message that raises unexpectedly doesn't block the others: the batch is
redone one message at a time, each in its own savepoint, and the bad one goes to the
failed-messages store.

Only one processor works at a time (a PostgreSQL advisory lock; SQLite's write lock), which is
what keeps per-user order (R-ING-8) when `audience serve` and `audience worker` both run.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import func, inspect, select, text
from sqlalchemy.orm import Session, make_transient_to_detached

from audience.attributes.service import cache_definitions, forget_definitions
from audience.db import Database, insert_ignore, one_of, utcnow
from audience.environments.models import Environment
from audience.events.models import Event
from audience.ingest import bulk, effects, inbox
from audience.ingest.inbox import Waiting
from audience.ingest.joins import Join, apply_joins, companies_of_message
from audience.ingest.models import FailedMessage, ProcessedMessage
from audience.ingest.resolve import Failed, Resolver
from audience.segments import membership
from audience.users import service as users
from audience.users.models import AttributeChange, Identity, User

log = logging.getLogger("audience.processor")

BATCH_SIZE = 500
_LEAST_BEFORE_YIELD = 20  # messages a SQLite batch applies before it may yield to requests
SEGMENT_REFRESH_SECONDS = 60.0  # time windows of segments move at least this often (R-SEG-3)
_LOCK_KEY = 0x61756469  # "audi": the PostgreSQL advisory lock that makes one processor at a time


class RowIds:
    """Ids for the batch's new users and identities, allocated by the batch itself.

    With its ids set, SQLAlchemy inserts a flush's new rows in one executemany. Without them it
    must read the ids back: one INSERT per row on SQLite, and on PostgreSQL a multi-row
    INSERT … RETURNING whose text differs with every row count, so psycopg parses each one
    anew (a third of the processor's CPU when group messages flush every few rows).

    SQLite: the processor's transaction holds the only writer from its start, so max(id) + 1
    onwards is free until it commits. PostgreSQL: the table's own sequence, taken in blocks
    (ids left unused are gaps, as after any rollback).
    """

    def __init__(self, session: Session) -> None:
        self.session = session
        # PostgreSQL ids taken from the sequence at a time: 1, 2, 4, … 64, so that a batch
        # creating few users leaves few unused.
        self.block = 1
        self.sqlite = session.get_bind().dialect.name == "sqlite"
        self.next: dict[type[Any], int] = {}  # SQLite
        self.free: dict[type[Any], list[int]] = {}  # PostgreSQL, the next one last

    def __call__(self, model: type[User] | type[Identity]) -> int:
        if self.sqlite:
            if model not in self.next:
                last = self.session.connection().scalar(select(func.max(model.id)))
                self.next[model] = (last or 0) + 1
            id = self.next[model]
            self.next[model] = id + 1
            return id
        free = self.free.setdefault(model, [])
        if not free:
            # Through the connection: a session query would autoflush the batch's new rows.
            taken = self.session.connection().scalars(
                text(
                    "SELECT nextval(pg_get_serial_sequence(:table, 'id'))"
                    " FROM generate_series(1, :n)"
                ),
                {"table": model.__tablename__, "n": self.block},
            )
            free.extend(sorted(taken, reverse=True))
            self.block = min(2 * self.block, 64)
        return free.pop()


_USER_COLUMNS = [attribute.key for attribute in User.__mapper__.column_attrs]


def _row(user: User, columns: list[str]) -> dict[str, Any]:
    state = user.__dict__
    return {key: state.get(key) for key in columns}


class Batch:
    """The messages of one environment within a batch, and the rows they produce."""

    def __init__(self, session: Session, environment: Environment) -> None:
        self.session = session
        self.environment = environment
        self.row_ids = RowIds(session)
        self.identities: list[tuple[User, str]] = []  # anonymous ids to insert, with their user
        self.users: list[User] = []  # new users, outside the session until `_insert_users`
        self.resolver = self._resolver()
        self.events: list[tuple[User, dict[str, Any]]] = []
        self.joins: list[Join] = []  # companies to join when the batch's users are flushed
        self.applied: list[effects.Message] = []
        self.failed: list[FailedMessage] = []
        self.touched: list[User] = []  # every resolved user: their segments are re-evaluated

    def _resolver(self) -> Resolver:
        return Resolver(
            self.session,
            self.environment,
            write_pending=self.write_pending,
            new_id=self.row_ids,
            identities_later=self.identities,
            users_later=self.users,
        )

    def write_pending(self) -> None:
        """Write the rows the batch has kept for later: new users first, then the attribute
        history, identities, company joins and events that refer to them. Before a merge (which
        moves them), an email or phone lookup (which reads users), tags, and at the end."""
        self._insert_users()
        self.session.flush()
        self._write_history()
        self._write_identities()
        joins, self.joins = self.joins, []
        apply_joins(self.session, self.environment, joins)
        for user, row in self.events:
            row["user_id"] = user.id
        insert_ignore(self.session, Event, [row for _, row in self.events])
        self.events = []

    def _insert_users(self) -> None:
        """The batch's new users in one statement, then into the session as loaded rows.

        The ORM's flush of a new object (a parameter dict per row, unit-of-work bookkeeping,
        on PostgreSQL one pipelined INSERT per row) was a fifth of the processor's time; this is
        one executemany (COPY on PostgreSQL). A user the session took in meanwhile (a webhook
        delivery about it) is left to the ORM's flush.
        """
        new = [user for user in self.users if inspect(user).transient]
        self.users.clear()
        if not new:
            return
        given = [key for key in _USER_COLUMNS if any(key in user.__dict__ for user in new)]
        bulk.insert_rows(self.session, User, [_row(user, given) for user in new])
        for user in new:
            for key in _USER_COLUMNS:  # NULL in the row: known, so not expired (read anew)
                user.__dict__.setdefault(key, None)
            make_transient_to_detached(user)
            self.session.add(user)

    def _write_history(self) -> None:
        """The attribute history kept since `users.history_later`, in one statement (as
        users.write_history does, without the ORM's bulk-insert bookkeeping per row)."""
        later = users.history_later(self.session)
        if later:
            rows = [{**row, "user_id": user.id} for user, rows in later for row in rows]
            later.clear()
            bulk.insert_rows(self.session, AttributeChange, rows)

    def _write_identities(self) -> None:
        """The anonymous ids attached since the last write, in one statement: cheaper than an
        ORM Identity object per new person."""
        if self.identities:
            now = utcnow()
            rows = [
                {
                    "environment_id": self.environment.id,
                    "user_id": user.id,
                    "kind": "anonymous_id",
                    "value": value,
                    "created_at": now,
                }
                for user, value in self.identities
            ]
            self.identities.clear()
            bulk.insert_rows(self.session, Identity, rows)

    def finish(self) -> None:
        self.write_pending()
        now = utcnow()
        processed = [
            {
                "environment_id": self.environment.id,
                "message_id": message.message_id,
                "kind": message.kind,
                "warnings": message.warnings,
                "processed_at": now,
            }
            # Events are their own record; other kinds, and warnings, need this one.
            for message in self.applied
            if message.kind not in effects.EVENT_KINDS or message.warnings
        ]
        insert_ignore(self.session, ProcessedMessage, processed)
        self.session.add_all(self.failed)
        ids = {user.id for user in self.touched}
        membership.refresh_users(self.session, environment_id=self.environment.id, user_ids=ids)


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
            model.environment_id == environment_id,
            one_of(session, model.message_id, message_ids),
        )
        seen.update(session.scalars(query))
    return seen


def _apply_one(batch: Batch, message: effects.Message) -> None:
    session, environment = batch.session, batch.environment
    payload = message.payload
    profile = effects.profile_for(environment, message)
    companies = companies_of_message(environment, message, profile)  # Failed: nothing written
    if message.kind == "alias":
        user = batch.resolver.alias(
            str(payload["previousId"]), message.keys, message.message_id, message.warnings
        )
    else:
        user = batch.resolver.resolve(message.keys, message.message_id, message.warnings)
    batch.touched.append(user)
    effects.apply_profile(session, environment, user, message, profile)
    if profile.tags:
        batch.write_pending()  # the tags' rows refer to the user's
        effects.tag(session, environment, user, message, profile.tags)
    effects.touch(environment, user, message)
    if message.kind in effects.EVENT_KINDS:
        batch.events.append((user, effects.event_of(environment, user, message)))
    batch.joins.extend(Join(user, message, data) for data in companies)


def _apply(
    session: Session,
    rows: Sequence[Waiting],
    should_yield: Callable[[int], bool] = lambda _: False,
) -> int:
    """Apply `rows` in order; returns how many leading rows are done.

    Before each message `should_yield(its position)` may stop the batch early: the rest stay in
    the inbox for the next one (the SQLite processor lets a waiting request write first).
    """
    position = 0  # rows[:position] are done
    for environment_id, group in groupby(rows, key=lambda row: row.environment_id):
        group_rows = list(group)
        environment = session.get(Environment, environment_id)
        if environment is not None:  # else deleted since: its messages go with it
            batch = Batch(session, environment)
            stopped = _apply_messages(batch, _fresh(session, group_rows, position), should_yield)
            batch.finish()
            if stopped is not None:
                return stopped
        position += len(group_rows)
    return position


def _fresh(
    session: Session, rows: list[Waiting], first_position: int
) -> list[tuple[int, Waiting, effects.Message]]:
    """The rows of one environment not applied before (R-ING-7), with their batch positions."""
    seen = _seen(session, rows[0].environment_id, [row.message_id for row in rows])
    fresh = []
    for position, row in enumerate(rows, first_position):
        if row.message_id in seen:
            continue
        seen.add(row.message_id)
        payload = dict(row.payload)
        timestamp = _timestamp(payload, row.received_at)
        warnings = list(payload.get("warnings") or [])
        fresh.append((position, row, effects.Message(payload, row.message_id, timestamp, warnings)))
    return fresh


def _apply_messages(
    batch: Batch,
    messages: list[tuple[int, Waiting, effects.Message]],
    should_yield: Callable[[int], bool],
) -> int | None:
    """Apply one environment's messages; the position it stopped at, if it yielded."""
    batch.resolver.prefetch(message.keys for _, _, message in messages)
    for position, row, message in messages:
        if should_yield(position):
            return position
        try:
            _apply_one(batch, message)
        except Failed as failure:
            batch.failed.append(_failure(row, failure.code, failure.message, failure.stage))
            continue
        batch.applied.append(message)
    return None


def _failure(row: Waiting, code: str, message: str, stage: str) -> FailedMessage:
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
        self.segments_refreshed = float("-inf")  # time.monotonic() of the last refresh

    def _locked(self, session: Session) -> bool:
        if session.get_bind().dialect.name != "postgresql":
            return True  # BEGIN IMMEDIATE: SQLite has one writer at a time anyway
        return bool(session.scalar(text(f"SELECT pg_try_advisory_xact_lock({_LOCK_KEY})")))

    def run_once(self) -> int:
        """Process one batch; returns how many inbox messages it took (0: nothing to do)."""
        turns = self.database.writer_turns
        if turns is None:
            return self._run_batch(self.batch_size)
        with turns.processor_turn():  # SQLite: after the requests waiting to write
            return self._run_batch(self.batch_size)

    def _run_batch(self, size: int) -> int:
        with self.database.transaction() as session:
            if not self._locked(session):
                return 0
            rows = inbox.take_batch(session, size)
            if not rows:
                return 0
            cache_definitions(session)
            users.history_later(session)
            try:
                with session.begin_nested():
                    rows = rows[: _apply(session, rows, self._should_yield)]
            except Exception:
                log.exception("a batch failed; applying its messages one at a time")
                session.expunge_all()
                forget_definitions(session)
                users.history_later(session).clear()
                rows = inbox.take_batch(session, size)
                for row in rows:
                    self._apply_alone(session, row)
            inbox.delete(session, [row.id for row in rows])
            return len(rows)

    def _should_yield(self, position: int) -> bool:
        """Stop a SQLite batch early for a waiting request, once it has done a little."""
        turns = self.database.writer_turns
        return turns is not None and position >= _LEAST_BEFORE_YIELD and turns.requests_waiting()

    def _apply_alone(self, session: Session, row: Waiting) -> None:
        session.flush()  # the failures kept so far: written, so the expunge below keeps them
        try:
            with session.begin_nested():
                _apply(session, [row])
        except Exception as exc:
            # The savepoint took back the users it inserted as rows, but not their objects,
            # which the session took in as loaded (Batch._insert_users): their ids are free.
            session.expunge_all()
            forget_definitions(session)
            users.history_later(session).clear()
            log.exception("message %s failed", row.message_id)
            session.add(_failure(row, "internal_error", f"{type(exc).__name__}: {exc}", "apply"))

    def drain(self) -> int:
        """Process until the inbox is empty (tests, `audience worker --once`)."""
        total = 0
        while processed := self.run_once():
            total += processed
        return total

    def refresh_segments(self, now: datetime | None = None) -> int:
        """Re-evaluate the segments with time windows (membership.refresh_segments), under the
        processor's lock so it never interleaves with a batch's membership changes."""
        self.segments_refreshed = time.monotonic()
        turns = self.database.writer_turns
        turn = turns.processor_turn() if turns is not None else nullcontext()
        with turn, self.database.transaction() as session:
            if not self._locked(session):
                return 0
            return membership.refresh_segments(session, now=now)

    def run_forever(self, stop: threading.Event, *, idle_seconds: float = 0.1) -> None:
        while not stop.is_set():
            try:
                if time.monotonic() - self.segments_refreshed >= SEGMENT_REFRESH_SECONDS:
                    self.refresh_segments()
                if self.run_once():
                    continue
            except Exception:  # keep going: the database may be back in a moment
                log.exception("processor error")
                stop.wait(1.0)
            stop.wait(idle_seconds)
