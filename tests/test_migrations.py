"""The shipped migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

import warnings

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from audience.db import Database
from audience.models import Base


def test_migrated_schema_matches_the_models(database: Database) -> None:
    with warnings.catch_warnings():
        # SQLite can't reflect expression indexes; they are checked by name below.
        warnings.simplefilter("ignore")
        with database.engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_email_lookup_index_exists(database: Database) -> None:
    with database.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            names = [
                row[0]
                for row in connection.exec_driver_sql(
                    "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'users'"
                )
            ]
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                names = [index["name"] for index in inspect(connection).get_indexes("users")]
    assert "ix_users_environment_id_email_lower" in names
