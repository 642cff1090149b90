"""Expression indexes on `users` for the custom attributes that saved segments filter on.

Each index is `(environment_id, <expression>)` where the expression is rendered from the very
function the filter compiler uses (`compile.custom_attribute`, lowered for strings as `compare`
lowers them), so the planner can match it. One index serves every environment, so the wanted
set is global: `sync_segment_indexes(engine)` derives it from all saved segments, creates what
is missing and drops `ix_users_ca_*` indexes nobody wants any more.

PostgreSQL builds them `CONCURRENTLY` (no write lock on users) on an autocommit connection,
under an advisory lock so two processes don't race; an INVALID leftover of an interrupted build
is dropped and rebuilt. SQLite builds them in one write transaction (its writer lock serialises
processes). Call it after the transaction that saved the segment has committed: a concurrent
build waits for every open transaction, the caller's own included. `IndexKeeper` does that in a
thread of `audience serve`: woken after each segment write, and every few minutes anyway for
segments another process changed.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, select, text
from sqlalchemy.dialects.postgresql.base import PGDialect
from sqlalchemy.dialects.sqlite.base import SQLiteDialect
from sqlalchemy.orm import Session

from audience.db import Database, WriterTurns
from audience.segments.compile import custom_attribute
from audience.segments.filters import Condition, FilterError, parse_filter, walk
from audience.segments.jsonsql import _safe_path_key
from audience.segments.language import EXACT_FIELDS
from audience.segments.models import Segment
from audience.segments.service import load_definitions
from audience.users.models import User

log = logging.getLogger("audience.segments.indexes")

PREFIX = "ix_users_ca_"
# Standard columns with indexes of their own (models and migrations): none is made for them.
_OWN_INDEX = frozenset(
    {"id", "email", "phone", "created_at", "last_seen_at", "user_id", "user_key"}
)
INDEXABLE = ("string", "number", "boolean", "date", "datetime")
# Any constant: the key of the advisory lock that serialises index builds on PostgreSQL.
_LOCK_KEY = 0x5E6_1DE5
_LOCK_PATIENCE = 3600.0  # seconds: builds on a large users table take minutes

Wanted = tuple[str, str, str]
"""(model, name, type): model "user" for a custom attribute, "column" for a standard column of
users; company attributes get none (companies are joined)."""


@dataclass(frozen=True)
class CustomIndex:
    name: str
    expression: str  # SQL text, identical to what the compiler generates
    postgresql: bool

    def create_sql(self) -> str:
        # id last on PostgreSQL: pages order by (expression, id); SQLite indexes hold the rowid.
        columns = f"environment_id, ({self.expression})" + (", id" if self.postgresql else "")
        concurrently = "CONCURRENTLY " if self.postgresql else ""
        return f"CREATE INDEX {concurrently}IF NOT EXISTS {self.name} ON users ({columns})"

    def drop_sql(self) -> str:
        return drop_sql(self.name, self.postgresql)


@dataclass(frozen=True)
class CombinedIndex:
    """PostgreSQL: one GIN index (btree_gin) over every indexed attribute's expression. The
    planner won't AND several single-attribute btrees (it reads one and checks the rest on each
    row: 200 ms for 3 conditions over 1M users); a multi-column GIN intersects all the
    conditions inside one index scan (25 ms). The btrees stay, for sorting."""

    name: str
    expressions: tuple[str, ...]
    postgresql: bool = True

    def create_sql(self) -> str:
        columns = ", ".join(["environment_id", *(f"({e})" for e in self.expressions)])
        return f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {self.name} ON users USING gin ({columns})"

    def drop_sql(self) -> str:
        return drop_sql(self.name, self.postgresql)


AnyIndex = CustomIndex | CombinedIndex
_GIN_COLUMNS = 31  # PostgreSQL allows 32 index columns; environment_id takes one


def combined_index(indexes: Iterable[CustomIndex]) -> CombinedIndex | None:
    """The GIN over these attributes' expressions, when there are two or more to combine."""
    expressions = sorted(index.expression for index in indexes)[:_GIN_COLUMNS]
    if len(expressions) < 2:
        return None
    digest = hashlib.sha256("\0".join(expressions).encode()).hexdigest()[:16]
    return CombinedIndex(PREFIX + "gin_" + digest, tuple(expressions))


def drop_sql(name: str, postgresql: bool) -> str:
    return f"DROP INDEX {'CONCURRENTLY ' if postgresql else ''}IF EXISTS {name}"


def filter_expression(name: str, type_: str, *, dialect: str) -> ColumnElement[Any]:
    """A custom attribute as a filter compares it: strings lowered (compile._Compiler.compare)."""
    expression = custom_attribute(name, type_, dialect=dialect)
    return func.lower(expression) if type_ == "string" else expression


def index_for(model: str, name: str, type_: str, *, dialect: str) -> CustomIndex | None:
    """The index serving filters on a custom attribute (model "user") or a standard column of
    users (model "column"), None when there can be none (a list, a company attribute, a key
    SQLite reads through json_each) or the column has an index of its own."""
    if model not in ("user", "column") or type_ not in INDEXABLE:
        return None
    if model == "column":
        if name in _OWN_INDEX:
            return None
        column = getattr(User, name)  # as the compiler reads it
        qualified = f"users.{column.property.columns[0].name}"
        # As the compiler compares a standard column: strings lowered unless an identifier.
        expression: ColumnElement[Any] = (
            func.lower(column) if type_ == "string" and name not in EXACT_FIELDS else column
        )
    elif dialect == "sqlite" and not _safe_path_key(name):
        return None
    else:
        expression = filter_expression(name, type_, dialect=dialect)
        qualified = "users.custom_attributes"
    pg = dialect == "postgresql"
    sql_dialect = PGDialect() if pg else SQLiteDialect()  # type: ignore[no-untyped-call]
    compiled = expression.compile(dialect=sql_dialect, compile_kwargs={"literal_binds": True})
    # Unqualified: SQLite refuses "users." in an index; both match columns once resolved.
    text_ = str(compiled).replace(qualified, qualified.removeprefix("users."))
    key = f"{type_}\0{name}" if model == "user" else f"column\0{type_}\0{name}"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return CustomIndex(PREFIX + digest, text_, dialect == "postgresql")


def wanted_by_segments(session: Session) -> set[Wanted]:
    """The user custom attributes and standard columns that saved segments filter on (all
    environments)."""
    wanted: set[Wanted] = set()
    definitions: dict[int, Any] = {}
    for environment_id, raw in session.execute(select(Segment.environment_id, Segment.filter)):
        if environment_id not in definitions:
            definitions[environment_id] = load_definitions(session, environment_id=environment_id)
        try:
            parsed = parse_filter(raw, definitions=definitions[environment_id], allow_segments=True)
        except FilterError:  # a definition changed since: nothing to index for it
            continue
        for node in walk(parsed):
            if isinstance(node, Condition):
                field = node.field
                if field.scope == "user":
                    wanted.add(("user" if field.custom else "column", field.name, field.type))
    return wanted


def existing_indexes(connection: Connection) -> dict[str, bool]:
    """Our indexes on users: name -> usable (False: an interrupted concurrent build)."""
    if connection.dialect.name == "postgresql":
        rows = connection.execute(
            text(
                "SELECT c.relname, i.indisvalid FROM pg_index i "
                "JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_class t ON t.oid = i.indrelid "
                "WHERE t.relname = 'users' AND t.relnamespace = to_regnamespace(current_schema()) "
                "AND c.relname LIKE :prefix"
            ),
            {"prefix": PREFIX + "%"},
        )
        return {name: bool(valid) for name, valid in rows}
    rows = connection.execute(
        text(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users' "
            "AND name LIKE :prefix"
        ),
        {"prefix": PREFIX + "%"},
    )
    return {name: True for (name,) in rows}


@dataclass
class SyncResult:
    created: list[str]
    dropped: list[str]


def sync_custom_attribute_indexes(
    engine: Engine, *, wanted: Iterable[Wanted], writer_turns: WriterTurns | None = None
) -> SyncResult:
    """Make the `ix_users_ca_*` indexes exactly those of `wanted`. Idempotent; safe to run from
    several processes at once. Takes an Engine: PostgreSQL needs its own autocommit connection.
    On SQLite, `writer_turns` (the app's) makes the build queue for the writer like a request."""
    dialect = engine.dialect.name
    singles = [
        index
        for model, name, type_ in wanted
        if (index := index_for(model, name, type_, dialect=dialect)) is not None
    ]
    indexes: dict[str, AnyIndex] = {index.name: index for index in singles}
    postgresql = dialect == "postgresql"
    result = SyncResult([], [])
    with engine.connect() as connection:  # nothing to do is the common case: no lock for it
        if postgresql and _has_btree_gin(connection):
            combined = combined_index(singles)
            if combined is not None:
                indexes[combined.name] = combined
        if existing_indexes(connection) == dict.fromkeys(indexes, True):
            return result
    if postgresql:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            _lock(connection)
            try:
                _apply(connection, indexes, result, postgresql=True)
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _LOCK_KEY})
        return result
    if writer_turns is not None:
        writer_turns.queue()
        writer_turns.acquire()
    try:
        # BEGIN IMMEDIATE (db.make_engine's hook): the write lock up front, one sync at a time.
        with engine.execution_options(sqlite_immediate=True).begin() as connection:
            _apply(connection, indexes, result, postgresql=False)
    finally:
        if writer_turns is not None:
            writer_turns.release()
    return result


def _has_btree_gin(connection: Connection) -> bool:
    """Whether migration 0009 could install btree_gin (it needs the right to create it)."""
    query = text("SELECT 1 FROM pg_extension WHERE extname = 'btree_gin'")
    return connection.execute(query).first() is not None


def _lock(connection: Connection) -> None:
    """Take the advisory lock by polling: a session blocked in pg_advisory_lock is a running
    transaction, which the other session's CREATE INDEX CONCURRENTLY would wait for (deadlock)."""
    deadline = time.monotonic() + _LOCK_PATIENCE
    query = text("SELECT pg_try_advisory_lock(:key)")
    while not connection.execute(query, {"key": _LOCK_KEY}).scalar_one():
        if time.monotonic() > deadline:
            raise TimeoutError("another process has been building indexes for too long")
        time.sleep(0.2)


def _apply(
    connection: Connection,
    indexes: dict[str, AnyIndex],
    result: SyncResult,
    *,
    postgresql: bool,
) -> None:
    existing = existing_indexes(connection)
    for name, valid in sorted(existing.items()):
        if name not in indexes or not valid:
            connection.execute(text(drop_sql(name, postgresql)))
            if name not in indexes:
                result.dropped.append(name)
    for name, index in sorted(indexes.items()):
        if not existing.get(name, False):
            connection.execute(text(index.create_sql()))
            result.created.append(name)
    # Statistics of the new expressions: without them both planners may keep a worse index.
    if postgresql and result.created:
        connection.execute(text("ANALYZE users"))
    for name in [] if postgresql else result.created:
        connection.execute(text(f"ANALYZE {name}"))


def sync_segment_indexes(engine: Engine, writer_turns: WriterTurns | None = None) -> SyncResult:
    """What to call after a segment is created, updated or deleted (once committed)."""
    with Session(engine) as session:
        wanted = wanted_by_segments(session)
    return sync_custom_attribute_indexes(engine, wanted=wanted, writer_turns=writer_turns)


class IndexKeeper:
    """Keeps the indexes in step with the saved segments from a background thread: `wake()`
    after a segment write has committed (a request never waits for a build), and a full check
    every `interval` seconds for segments saved by another process."""

    def __init__(self, database: Database, *, interval: float = 300.0) -> None:
        self.database = database
        self.interval = interval
        self._woken = threading.Event()
        self.synced = threading.Event()  # set after each sync attempt (tests wait on it)

    def wake(self) -> None:
        self._woken.set()

    def sync_once(self) -> SyncResult:
        self._woken.clear()  # before reading: a wake during the sync means "run again"
        try:
            return sync_segment_indexes(self.database.engine, self.database.writer_turns)
        finally:
            self.synced.set()

    def run_forever(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                result = self.sync_once()
                if result.created or result.dropped:
                    log.info(
                        "segment indexes created %s, dropped %s", result.created, result.dropped
                    )
            except Exception:  # the database may be back in a moment; the next wake retries
                log.exception("segment index sync failed")
            deadline = time.monotonic() + self.interval
            while not (stop.is_set() or self._woken.wait(1.0) or time.monotonic() > deadline):
                pass
