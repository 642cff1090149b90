"""The inbox: accepted messages waiting for the processor (the durability point, R-ING-4).

`append` runs in the request's transaction; the processor calls `take_batch` and, in the same
transaction as the effects, `delete`. Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Connection, Table, select
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from audience.db import one_of
from audience.ingest.models import InboxMessage

_DELETE_CHUNK = 5000  # below every SQLite build's bound-parameter limit
_COLUMNS = "inbox (environment_id, message_id, received_at, payload)"
_INSERT = f"INSERT INTO {_COLUMNS} VALUES (?, ?, ?, ?)"  # noqa: S608 - constant text
_COPY = f"COPY {_COLUMNS} FROM STDIN (FORMAT BINARY)"
_COPY_TYPES = ["int8", "varchar", "timestamptz", "jsonb"]


def append(
    session: Session,
    *,
    environment_id: int,
    received_at: datetime,
    messages: Sequence[tuple[str, bytes]],
) -> None:
    """Adds `(messageId, serialised payload)` pairs in one statement, in the session's transaction.

    This is the hot path, so it goes to the driver: the payloads are already JSON (orjson), and
    SQLAlchemy's per-row parameter processing cost more than the insert. PostgreSQL: one binary
    COPY (about 3x an executemany, which psycopg still runs as one INSERT per row). SQLite: one
    executemany, looped in C.
    """
    if not messages:
        return
    connection = session.connection()  # begins the transaction (BEGIN IMMEDIATE on SQLite)
    driver: Any = connection.connection.driver_connection
    driver_error = connection.dialect.loaded_dbapi.Error
    postgresql = connection.dialect.name == "postgresql"
    try:
        if postgresql:
            _copy(driver, environment_id, received_at, messages)
            return
        stamp = _stored_datetime(connection, received_at)
        # Text, not bytes: sqlite3 would store bytes as a BLOB, which SQLite's JSON refuses.
        rows = [(environment_id, mid, stamp, document.decode()) for mid, document in messages]
        driver.executemany(_INSERT, rows)
    except driver_error as exc:
        # The same exception SQLAlchemy raises for its own statements (OperationalError, ...).
        statement = _COPY if postgresql else _INSERT
        raise DBAPIError.instance(statement, None, exc, driver_error) from exc


def _stored_datetime(connection: Connection, value: datetime) -> Any:
    """`value` as the model's column type binds it (naive UTC text on SQLite), computed once."""
    dialect = connection.dialect
    processor = InboxMessage.__table__.c.received_at.type.dialect_impl(dialect).bind_processor(
        dialect
    )
    return value if processor is None else processor(value)


def _as_is(document: bytes) -> bytes:
    return document


def _copy(
    driver: Any, environment_id: int, received_at: datetime, messages: Sequence[tuple[str, bytes]]
) -> None:
    from psycopg.types.json import Jsonb

    with driver.cursor() as cursor, cursor.copy(_COPY) as copy:
        copy.set_types(_COPY_TYPES)
        for message_id, document in messages:
            # Jsonb(bytes, as-is): a bare str would be stored as a JSON string, not an object.
            copy.write_row((environment_id, message_id, received_at, Jsonb(document, _as_is)))


@dataclass(frozen=True, slots=True)
class Waiting:
    """A message in the inbox, as the processor reads it (plain rows: no ORM objects to track)."""

    id: int
    environment_id: int
    message_id: str
    received_at: datetime
    payload: dict[str, Any]


_TABLE = cast(Table, InboxMessage.__table__)


def take_batch(session: Session, limit: int) -> list[Waiting]:
    """The oldest waiting messages, in id (acceptance) order."""
    columns = (_TABLE.c.id, _TABLE.c.environment_id, _TABLE.c.message_id, _TABLE.c.received_at)
    query = select(*columns, _TABLE.c.payload).order_by(_TABLE.c.id).limit(limit)
    return [Waiting(*row) for row in session.execute(query)]


def delete(session: Session, ids: Sequence[int]) -> None:
    """Removes processed messages (in the transaction that applied their effects)."""
    for start in range(0, len(ids), _DELETE_CHUNK):
        chunk = list(ids[start : start + _DELETE_CHUNK])
        session.execute(sql_delete(_TABLE).where(one_of(session, _TABLE.c.id, chunk)))
