"""Bulk inserts of the processor's plain rows (new users, attribute history, identities).

SQLite: one driver executemany, which sqlite3 loops in C. PostgreSQL: one COPY. psycopg runs an
executemany as one INSERT per row (pipelined), and SQLAlchemy processes every parameter of
every row on the way; a batch writes 3 to 4 history rows per message, so that was a tenth of the
processor's time. COPY can't skip conflicts: only for rows no one else inserts (never events,
whose dedupe relies on ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import JSON, Connection, Table, insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from audience.db import Base, json_text


def insert_rows(session: Session, model: type[Base], rows: list[dict[str, Any]]) -> None:
    """Insert `rows` (column -> value, the same columns in each) into `model`'s table."""
    if not rows:
        return
    table = cast(Table, model.__table__)
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        _executemany(connection, table, rows)
        return
    from psycopg.types.json import Jsonb

    names = list(rows[0])
    # Jsonb for JSON columns: None becomes JSON null there, as SQLAlchemy's JSON type stores it.
    json_columns = {name for name in names if isinstance(table.c[name].type, JSON)}
    statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
    driver: Any = connection.connection.driver_connection
    driver_error = connection.dialect.loaded_dbapi.Error
    try:
        with driver.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(
                    [
                        Jsonb(row[name], json_text) if name in json_columns else row[name]
                        for name in names
                    ]
                )
    except driver_error as exc:  # as SQLAlchemy raises for its own statements
        raise DBAPIError.instance(statement, None, exc, driver_error) from exc


def _executemany(connection: Connection, table: Table, rows: list[dict[str, Any]]) -> None:
    """One driver executemany, each value converted by its column's bind processor: what
    `session.execute(insert(table), rows)` sends, without a parameter dict built per row."""
    dialect = connection.dialect
    compiled = insert(table).compile(dialect=dialect, column_keys=list(rows[0]))
    names = list(compiled.positiontup or ())
    processors = [
        table.c[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    ]
    columns = list(zip(names, processors, strict=True))
    parameters = [
        tuple(row[name] if process is None else process(row[name]) for name, process in columns)
        for row in rows
    ]
    connection.exec_driver_sql(compiled.string, parameters)
