"""Column types of audience.db: what they store, checked against SQLAlchemy's own conversions
and read back from the database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select
from sqlalchemy.dialects import sqlite
from sqlalchemy.types import TypeDecorator

from audience.db import Database, UtcDateTime, json_text

MOMENTS = [
    datetime(2026, 11, 30, 2, 14, 27, tzinfo=UTC),
    datetime(2026, 11, 30, 2, 14, 27, 5, tzinfo=UTC),
    datetime.fromisoformat("2026-01-01T00:00:00Z"),
    datetime(2026, 1, 1, 5, 0, 0, 123, tzinfo=timezone(timedelta(hours=5))),
    datetime(2026, 7, 1, 12, tzinfo=ZoneInfo("Europe/Paris")),
    datetime(1, 1, 1, tzinfo=UTC),
]


@pytest.mark.parametrize("moment", MOMENTS, ids=str)
def test_sqlite_dates_are_stored_as_sqlalchemy_stores_them(moment: datetime) -> None:
    dialect = sqlite.dialect()
    column_type = UtcDateTime().dialect_impl(dialect)
    ours = column_type.bind_processor(dialect)
    theirs = TypeDecorator.bind_processor(column_type, dialect)
    assert ours is not None and theirs is not None
    assert ours(moment) == theirs(moment)
    assert ours(None) is None


def test_a_naive_date_is_refused() -> None:
    dialect = sqlite.dialect()
    process = UtcDateTime().dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    with pytest.raises(ValueError, match="naive"):
        process(datetime(2026, 1, 1))


def test_dates_read_back_as_the_same_instants(database: Database) -> None:
    table = Table(
        "db_type_check",
        MetaData(),
        Column("id", Integer, primary_key=True),
        Column("at", UtcDateTime()),
    )
    table.create(database.engine)
    try:
        with database.engine.begin() as connection:
            connection.execute(insert(table), [{"at": moment} for moment in MOMENTS])
            stored = list(connection.scalars(select(table.c.at).order_by(table.c.id)))
        assert stored == MOMENTS
        assert all(moment.tzinfo == UTC for moment in stored)
    finally:
        table.drop(database.engine)


def test_json_text_is_json_for_every_value_json_can_hold() -> None:
    assert json_text({"name": "é", 1: [1.5, None, True]}) == '{"name":"é","1":[1.5,null,true]}'
    assert json_text(10**30) == "1000000000000000000000000000000"  # beyond orjson's 64 bits
    with pytest.raises(TypeError):
        json_text({"when": datetime(2026, 1, 1, tzinfo=UTC)})
