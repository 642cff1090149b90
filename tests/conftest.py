"""Test databases and clients.

SQLite (default): the schema is migrated once into a template file, copied for every test.
PostgreSQL: set AUDIENCE_TEST_DATABASE_URL=postgresql://user@host:port/db; the suite creates a
private database from it, migrates it once, empties it after every test and drops it at the end.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, make_url, text

from audience.app import create_app
from audience.config import Settings
from audience.db import Base, Database
from audience.environments import service as environments
from audience.migrations import upgrade

PG_URL = os.environ.get("AUDIENCE_TEST_DATABASE_URL")


@pytest.fixture(scope="session")
def database_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database: a template file path (SQLite) or a private database URL."""
    if not PG_URL:
        directory = tmp_path_factory.mktemp("template")
        database = Database(Settings(data_dir=directory))
        upgrade(database.engine)
        database.dispose()
        yield str(directory / "audience.db")
        return
    server = make_url(PG_URL).set(drivername="postgresql+psycopg")
    name = f"audience_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    database = Database(Settings(database_url=url))
    upgrade(database.engine)
    database.dispose()
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings(database_template: str, tmp_path: Path) -> Settings:
    if PG_URL:
        return Settings(data_dir=tmp_path, database_url=database_template)
    shutil.copy(database_template, tmp_path / "audience.db")
    return Settings(data_dir=tmp_path)


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    database = Database(settings)
    try:
        yield database
    finally:
        if PG_URL:
            tables = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
            with database.engine.begin() as connection:
                connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
        database.dispose()


@pytest.fixture
def app(settings: Settings, database: Database) -> TestClient:
    return TestClient(create_app(settings, database=database), raise_server_exceptions=False)


@dataclass
class Tenant:
    """An environment with its keys and a client that sends its API key."""

    id: int
    slug: str
    app_token: str
    api_key: str
    client: TestClient


def make_tenant(app: TestClient, database: Database, slug: str) -> Tenant:
    with database.transaction() as session:
        environment = environments.create_environment(session, name=slug.title(), slug=slug)
        _, key = environments.create_api_key(session, environment_id=environment.id)
        tenant_id, token = environment.id, environment.app_token
    client = TestClient(
        app.app, headers={"Authorization": f"Bearer {key}"}, raise_server_exceptions=False
    )
    return Tenant(tenant_id, slug, token, key, client)


@pytest.fixture
def tenant(app: TestClient, database: Database) -> Tenant:
    return make_tenant(app, database, "production")


@pytest.fixture
def other_tenant(app: TestClient, database: Database) -> Tenant:
    return make_tenant(app, database, "staging")


@pytest.fixture
def api(tenant: Tenant) -> TestClient:
    """The REST client of the default tenant."""
    return tenant.client
