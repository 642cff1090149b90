"""Engine, column types, SQLite pragmas and the one place that commits.

HTTP requests run in `TransactionRoute` (commit before the response leaves, rollback on any
error); CLI commands and background jobs use `transaction()`. Services only flush.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Collection, Coroutine, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from sqlalchemy import (
    ARRAY,
    JSON,
    BigInteger,
    ColumnElement,
    DateTime,
    Engine,
    Integer,
    MetaData,
    any_,
    create_engine,
    event,
    literal,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator
from starlette.concurrency import run_in_threadpool

from audience.config import Settings
from audience.errors import NotFound

log = logging.getLogger("audience.db")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# Integer ids: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite.
BigId = BigInteger().with_variant(Integer, "sqlite")
# JSON documents: JSONB on PostgreSQL (indexable), JSON text on SQLite.
Json = JSON().with_variant(JSONB(), "postgresql")


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both databases (SQLite stores naive UTC text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    def bind_processor(self, dialect: Any) -> Callable[[datetime | None], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def sqlite_text(value: datetime | None) -> str | None:
            # The text SQLAlchemy's SQLite DATETIME stores ("2026-11-30 02:14:27.000000"), made
            # in one call: its own processor fills a format dict per value, and the processor
            # binds some 40,000 dates per 3,000 messages.
            if value is None:
                return None
            if value.tzinfo is UTC:  # the usual case: drop "+00:00"
                return value.isoformat(" ", "microseconds")[:26]
            naive = self.process_bind_param(value, dialect)  # refuses a naive one
            return None if naive is None else naive.isoformat(" ", "microseconds")

        return sqlite_text


def utcnow() -> datetime:
    return datetime.now(UTC)


_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATETIME
_JSON_OPTIONS |= orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_SUBCLASS


def json_text(value: Any) -> str:
    """A JSON column's text: orjson, several times faster than json.dumps, which every JSON
    value the processor writes went through; json.dumps for what orjson leaves to it (integers
    beyond 64 bits; types JSON has no form for, which it refuses as before)."""
    try:
        return orjson.dumps(value, option=_JSON_OPTIONS).decode()
    except TypeError:
        return json.dumps(value)


def make_engine(settings: Settings) -> Engine:
    if not settings.is_sqlite:
        return create_engine(
            settings.url,
            pool_size=10,
            max_overflow=20,
            pool_pre_ping=True,
            json_serializer=json_text,
            # psycopg prepares a query run five times on a connection, and PostgreSQL then may
            # settle on a generic plan, blind to the values: for the processor's lookups that
            # tripled the database's CPU per message (docs/decisions.md). Plan every time.
            connect_args={"prepare_threshold": None},
        )
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        settings.url, connect_args={"check_same_thread": False}, json_serializer=json_text
    )
    synchronous = settings.sqlite_synchronous.upper()
    if synchronous not in {"FULL", "NORMAL", "EXTRA", "OFF"}:
        raise ValueError(
            f"AUDIENCE_SQLITE_SYNCHRONOUS must be FULL, NORMAL, EXTRA or OFF, not {synchronous}"
        )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _: Any) -> None:
        # Autocommit at the driver level: SQLAlchemy's "begin" hook below emits BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        # Writers take the lock up front so a read never has to upgrade (and fail) mid-transaction.
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def server_warnings(engine: Engine) -> list[str]:
    """PostgreSQL settings that can lose committed data on a crash (R-OPS-5), or leave the
    planner without statistics."""
    if engine.dialect.name != "postgresql":
        return []
    warnings = []
    with engine.connect() as connection:
        fsync = connection.execute(text("SHOW fsync")).scalar()
        synchronous_commit = connection.execute(text("SHOW synchronous_commit")).scalar()
        autovacuum = connection.execute(text("SHOW autovacuum")).scalar()
    if autovacuum == "off":
        warnings.append(
            "autovacuum is off: tables are never analyzed, so lookups may read whole tables "
            "(ingestion measured 2-4x slower); turn it on or run ANALYZE regularly"
        )
    if fsync == "off":
        warnings.append("fsync is off: a crash of the server can corrupt the whole database")
    if synchronous_commit == "off":
        warnings.append(
            "synchronous_commit is off: a crash can lose recently accepted data "
            "that audience already answered as stored"
        )
    return warnings


class WriterTurns:
    """SQLite's one writer, shared fairly within a process by ingestion requests and the
    processor.

    Left to SQLite, waiting writers poll in its busy handler (sleeps of up to 100 ms) and the
    processor, which starts its next batch at once, wins nearly every time: requests then
    wait for seconds. Here requests queue for the writer and the processor takes a turn only
    when none is waiting, or after `patience` seconds so that a flood can't stall it; during
    its batch it checks `requests_waiting` and stops early to let them in.
    """

    def __init__(self, *, patience: float = 0.5) -> None:
        self.patience = patience
        self._writer = threading.Lock()
        self._changed = threading.Condition()
        self._waiting = 0

    def queue(self) -> None:
        """A request is about to wait for the writer (call `acquire` next, from any thread)."""
        with self._changed:
            self._waiting += 1

    def requests_waiting(self) -> bool:
        return self._waiting > 0  # a racy read is fine: a hint to stop a batch early

    def acquire(self) -> None:
        """The request's turn; `release` after its commit (from any thread)."""
        self._writer.acquire()
        self.leave()

    def leave(self) -> None:
        """No longer waiting (got the writer, or gave up)."""
        with self._changed:
            self._waiting -= 1
            self._changed.notify_all()

    def release(self) -> None:
        self._writer.release()

    @contextmanager
    def processor_turn(self) -> Iterator[None]:
        with self._changed:
            self._changed.wait_for(lambda: self._waiting == 0, timeout=self.patience)
        with self._writer:
            yield


class Database:
    """The engine and session factories of one running app (or CLI command)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = make_engine(settings)
        # Only SQLite has a single writer to share; PostgreSQL's writers don't block each other.
        self.writer_turns = WriterTurns() if self.engine.dialect.name == "sqlite" else None
        self._reader = sessionmaker(self.engine, expire_on_commit=False)
        writer_bind = self.engine.execution_options(sqlite_immediate=True)
        self._writer = sessionmaker(writer_bind, expire_on_commit=False)

    def session(self, *, write: bool) -> Session:
        return (self._writer if write else self._reader)()

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[Session]:
        """A unit of work outside HTTP: commit on success, rollback on error."""
        session = self.session(write=write)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


_READ_METHODS = {"GET", "HEAD", "OPTIONS"}


class TransactionRoute(APIRoute):
    """Each request gets one session; it commits before the response is sent, or rolls back."""

    # None: GET/HEAD/OPTIONS read, other methods write. ReadRoute says a POST only reads.
    writes: bool | None = None

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        writes = self.writes

        async def run(request: Request) -> Response:
            database: Database = request.app.state.database
            write = request.method not in _READ_METHODS if writes is None else writes
            session = database.session(write=write)
            request.state.session = session
            try:
                response = await handler(request)
                if response.status_code < 400:
                    await run_in_threadpool(session.commit)
                else:
                    await run_in_threadpool(session.rollback)
                return response
            except BaseException:
                await run_in_threadpool(session.rollback)
                raise
            finally:
                await run_in_threadpool(session.close)

        return run


class ReadRoute(TransactionRoute):
    """A route that only reads whatever its method (a search with a body): on SQLite it takes
    no write lock, so searches never wait for ingestion's writes."""

    writes = False


def one_of(session: Session, column: Any, values: Collection[Any]) -> ColumnElement[bool]:
    """`column IN values`; on PostgreSQL `column = ANY(array)`, one parameter for them all.

    psycopg caches its parse of a query's text only up to a length, and an IN list of a batch's
    500 keys is longer: the processor's lookups were parsed anew every batch (5% of its time).
    """
    if session.get_bind().dialect.name == "postgresql":
        any_value: ColumnElement[bool] = column == any_(literal(list(values), ARRAY(column.type)))
        return any_value
    in_values: ColumnElement[bool] = column.in_(values)
    return in_values


def insert_ignore(session: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Insert rows, skipping any whose key exists already (idempotent and safe under races)."""
    if not rows:
        return
    # One statement run with many parameter sets: it compiles once (cached), where a multi-row
    # VALUES would compile anew for every number of rows.
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement: Any = dialect.insert(model.__table__).on_conflict_do_nothing()
    session.execute(statement, rows)


def escape_like(text: str) -> str:
    """`text` for a LIKE pattern (with `escape="\\"`), its wildcards taken literally."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def request_session(request: Request) -> Session:
    session: Session = request.state.session
    return session


M = TypeVar("M", bound=Base)


def get_scoped(
    session: Session, model: type[M], *, environment_id: int, id: int, what: str, lock: bool = False
) -> M:
    """The row of `model` with this `id` in this environment (`lock`: FOR UPDATE), else
    NotFound: 404 `not_found`, "{what} {id} not found" - a row of another environment is
    not found, never forbidden."""
    query = select(model).filter_by(environment_id=environment_id, id=id)
    row = session.scalar(query.with_for_update() if lock else query)
    if row is None:
        raise NotFound(what, id)
    return row
