"""The `audience` command line, run for real against a SQLite file in tmp_path.

These test the CLI, not the database, so they use SQLite even when the rest of the suite runs on
PostgreSQL (AUDIENCE_TEST_DATABASE_URL); only the durability check needs a PostgreSQL server.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import create_engine, inspect, make_url, select, text
from typer.testing import CliRunner

from audience.agents.models import Agent
from audience.agents.service import verify_password
from audience.cli import (
    agents_app,
    app,
    environments_app,
    keys_app,
    users_app,
)
from audience.config import Settings
from audience.db import Database, server_warnings
from audience.environments.models import ApiKey, Environment
from audience.environments.service import environment_for_api_key
from audience.users.models import User
from tests.serve import free_port, wait_until_healthy

API_KEY = re.compile(r"sk_[A-Za-z0-9_-]{20,}")
APP_TOKEN = re.compile(r"pk_[A-Za-z0-9_-]{20,}")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Only AUDIENCE_DATA_DIR set: the CLI reads its settings from the environment, like serve."""
    for name in list(os.environ):
        if name.startswith("AUDIENCE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AUDIENCE_DATA_DIR", str(tmp_path))
    return tmp_path


def run(*args: str, input: str | None = None) -> Any:
    result = CliRunner().invoke(app, list(args), input=input)
    # A user error is one clean line, never a traceback.
    assert "Traceback" not in result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@contextmanager
def database(data_dir: Path) -> Iterator[Database]:
    db = Database(Settings(data_dir=data_dir))
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def migrated(data_dir: Path) -> Path:
    assert run("migrate").exit_code == 0
    return data_dir


@pytest.fixture
def production(migrated: Path) -> str:
    """An environment `production` made with the CLI; returns its (once shown) API key."""
    result = run("environments", "create", "Production")
    assert result.exit_code == 0, result.output
    match = API_KEY.search(result.stdout)
    assert match is not None
    return match.group()


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["migrate"],
        ["environments", "list"],
        ["environments", "create"],
        ["keys", "list"],
        ["keys", "create"],
        ["keys", "revoke"],
        ["users", "count"],
        ["users", "get"],
        ["agents", "list"],
        ["agents", "create"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


def test_configuration_doc_names_every_setting_and_command() -> None:
    doc = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    for field in Settings.model_fields:
        assert f"AUDIENCE_{field.upper()}" in doc
    for command in ("serve", "migrate"):
        assert f"audience {command}" in doc
    for group in (environments_app, keys_app, users_app, agents_app):
        for command in group.registered_commands:
            assert f"audience {group.info.name} {command.name}" in doc


def test_migrate_creates_the_schema_and_is_idempotent(data_dir: Path) -> None:
    first = run("migrate")
    assert first.exit_code == 0
    assert "Migrated database" in first.stdout
    with database(data_dir) as db:
        tables = set(inspect(db.engine).get_table_names())
    assert {"alembic_version", "environments", "api_keys", "agents", "users"} <= tables
    again = run("migrate")
    assert again.exit_code == 0
    assert "already at the latest migration" in again.stdout


def test_commands_refuse_an_unmigrated_database(data_dir: Path) -> None:
    result = run("environments", "list")
    assert result.exit_code == 1
    assert "audience migrate" in result.stderr
    with database(data_dir) as db:
        assert "environments" not in inspect(db.engine).get_table_names()


def test_environments_create_prints_its_app_token_and_a_working_key(migrated: Path) -> None:
    result = run("environments", "create", "EU Production", "--slug", "eu")
    assert result.exit_code == 0, result.output
    token, key = APP_TOKEN.search(result.stdout), API_KEY.search(result.stdout)
    assert token is not None and key is not None
    with database(migrated) as db, db.transaction(write=False) as session:
        environment = session.scalar(select(Environment).where(Environment.slug == "eu"))
        assert environment is not None
        assert environment.name == "EU Production"
        assert environment.app_token == token.group()
        found = environment_for_api_key(session, key.group())
        assert found is not None and found[0].id == environment.id
        # Only the hash is stored.
        assert session.scalar(select(ApiKey.key_hash)) != key.group()


def test_environments_create_derives_the_slug_and_refuses_a_duplicate(migrated: Path) -> None:
    assert run("environments", "create", "EU Production").exit_code == 0
    duplicate = run("environments", "create", "EU production")
    assert duplicate.exit_code == 1
    assert "eu-production" in duplicate.stderr and "already exists" in duplicate.stderr


def test_environments_create_rejects_a_bad_slug(migrated: Path) -> None:
    result = run("environments", "create", "Shop", "--slug", "Not A Slug")
    assert result.exit_code == 1
    assert "slug" in result.stderr


def test_environments_list_shows_full_app_tokens(migrated: Path) -> None:
    created = run("environments", "create", "A fairly long environment name", "--slug", "long")
    token = APP_TOKEN.search(created.stdout)
    assert token is not None
    listed = run("environments", "list")
    assert listed.exit_code == 0
    assert token.group() in listed.stdout
    assert "A fairly long environment name" in listed.stdout


def test_keys_create_list_and_revoke(production: str, migrated: Path) -> None:
    created = run("keys", "create", "--environment", "production", "--name", "ci")
    assert created.exit_code == 0, created.output
    match = API_KEY.search(created.stdout)
    assert match is not None
    plain = match.group()

    listed = run("keys", "list")  # --environment defaults to production
    assert listed.exit_code == 0
    assert "ci" in listed.stdout and plain[:10] in listed.stdout
    assert plain not in listed.stdout and production not in listed.stdout

    with database(migrated) as db, db.transaction(write=False) as session:
        key_id = session.scalar(select(ApiKey.id).where(ApiKey.name == "ci"))
    revoked = run("keys", "revoke", str(key_id), "--environment", "production")
    assert revoked.exit_code == 0
    assert f"Revoked API key {key_id}" in revoked.stdout
    with database(migrated) as db, db.transaction(write=False) as session:
        assert environment_for_api_key(session, plain) is None
        assert environment_for_api_key(session, production) is not None


def test_keys_revoke_of_an_unknown_key_fails_cleanly(production: str) -> None:
    result = run("keys", "revoke", "999")
    assert result.exit_code == 1
    assert "not found" in result.stderr


def test_keys_of_an_unknown_environment_fail_cleanly(migrated: Path) -> None:
    result = run("keys", "list", "--environment", "nowhere")
    assert result.exit_code == 1
    assert "environment nowhere not found" in result.stderr


def test_agents_create_stores_a_hash_and_lists_the_agent(migrated: Path) -> None:
    result = run(
        "agents",
        "create",
        "--email",
        "ann@example.com",
        "--name",
        "Ann",
        "--password",
        "correct horse",
        "--role",
        "admin",
    )
    assert result.exit_code == 0, result.output
    assert "correct horse" not in result.output
    with database(migrated) as db, db.transaction(write=False) as session:
        agent = session.scalar(select(Agent).where(Agent.email == "ann@example.com"))
        assert agent is not None
        assert (agent.name, agent.role) == ("Ann", "admin")
        assert agent.password_hash != "correct horse"
        assert verify_password(agent, "correct horse")
    listed = run("agents", "list")
    assert "ann@example.com" in listed.stdout and "admin" in listed.stdout


def test_agents_create_asks_for_the_password_when_not_given(migrated: Path) -> None:
    result = run(
        "agents", "create", "--email", "bo@example.com", input="s3cret-pass\ns3cret-pass\n"
    )
    assert result.exit_code == 0, result.output
    with database(migrated) as db, db.transaction(write=False) as session:
        agent = session.scalar(select(Agent).where(Agent.email == "bo@example.com"))
        assert agent is not None and verify_password(agent, "s3cret-pass")
        assert agent.role == "member"


def test_agents_create_rejects_a_short_password_and_a_bad_role(migrated: Path) -> None:
    short = run("agents", "create", "--email", "c@example.com", "--password", "short")
    assert short.exit_code == 1
    assert "at least 8 characters" in short.stderr
    role = run(
        "agents",
        "create",
        "--email",
        "c@example.com",
        "--password",
        "long enough",
        "--role",
        "boss",
    )
    assert role.exit_code == 1
    assert "role must be one of" in role.stderr


def _add_users(data_dir: Path) -> None:
    with database(data_dir) as db, db.transaction() as session:
        environment = session.scalar(select(Environment).where(Environment.slug == "production"))
        assert environment is not None
        ann = User(
            environment_id=environment.id,
            user_key="k-ann",
            user_id="u-1",
            email="Ann@Example.com",
            name="Ann",
        )
        session.add(ann)
        session.flush()
        session.add(User(environment_id=environment.id, user_key="k-bo", user_id="u-2"))
        # Merged into Ann: kept for undo, but no longer a user of its own.
        session.add(
            User(
                environment_id=environment.id,
                user_key="k-old",
                user_id="u-3",
                merged_into_id=ann.id,
            )
        )


def test_users_count_excludes_merged_users(production: str, migrated: Path) -> None:
    _add_users(migrated)
    result = run("users", "count")
    assert result.exit_code == 0
    assert result.stdout.strip() == "2"


def test_users_get_prints_the_user_as_json(production: str, migrated: Path) -> None:
    _add_users(migrated)
    by_id = run("users", "get", "--user-id", "u-1")
    assert by_id.exit_code == 0, by_id.output
    user = json.loads(by_id.stdout)
    assert (user["user_id"], user["email"], user["name"]) == ("u-1", "Ann@Example.com", "Ann")
    assert user["created_at"].startswith("20")
    by_email = run("users", "get", "--email", "ann@example.com", "--environment", "production")
    assert json.loads(by_email.stdout)["user_id"] == "u-1"
    merged = run("users", "get", "--user-id", "u-3")
    assert merged.exit_code == 1
    assert "no user with user_id u-3" in merged.stderr
    neither = run("users", "get")
    assert neither.exit_code == 1
    assert "exactly one of --user-id or --email" in neither.stderr


class FakeServer:
    """Stands in for uvicorn.run (the process boundary): records what would be served."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, asgi_app: Any, **options: Any) -> None:
        self.calls.append({"app": asgi_app, **options})


def test_serve_bootstraps_an_empty_database_and_prints_it_once(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FakeServer()
    monkeypatch.setattr(uvicorn, "run", server)
    monkeypatch.setenv("AUDIENCE_PORT", "9123")
    first = run("serve", "--host", "127.0.0.2")
    assert first.exit_code == 0, first.output
    assert server.calls[0]["host"] == "127.0.0.2" and server.calls[0]["port"] == 9123
    assert "first start" in first.stdout
    keys = API_KEY.findall(first.stdout)
    assert len(keys) == 2  # production and staging
    assert "owner@localhost" in first.stdout and "generated password" in first.stdout
    assert "http://127.0.0.2:9123/api/v1/docs" in first.stdout
    with database(data_dir) as db, db.transaction(write=False) as session:
        slugs = set(session.scalars(select(Environment.slug)))
        assert slugs == {"production", "staging"}
        assert all(environment_for_api_key(session, key) is not None for key in keys)

    second = run("serve", "--port", "9124")
    assert second.exit_code == 0
    assert server.calls[1]["port"] == 9124
    assert "first start" not in second.stdout and not API_KEY.search(second.stdout)


def test_serve_does_not_echo_secrets_fixed_by_the_operator(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(uvicorn, "run", FakeServer())
    monkeypatch.setenv("AUDIENCE_BOOTSTRAP_API_KEY", "sk_fixed_by_the_operator_0123456789")
    monkeypatch.setenv("AUDIENCE_BOOTSTRAP_ADMIN_EMAIL", "boss@example.com")
    monkeypatch.setenv("AUDIENCE_BOOTSTRAP_ADMIN_PASSWORD", "operator-password")
    result = run("serve")
    assert result.exit_code == 0, result.output
    assert "sk_fixed_by_the_operator_0123456789" not in result.output
    assert "operator-password" not in result.output
    assert "boss@example.com" in result.stdout
    assert len(API_KEY.findall(result.stdout)) == 1  # staging's generated key only


def test_serve_no_migrate_refuses_an_unmigrated_database(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = FakeServer()
    monkeypatch.setattr(uvicorn, "run", server)
    result = run("serve", "--no-migrate")
    assert result.exit_code == 1
    assert "audience migrate" in result.stderr
    assert server.calls == []


def test_server_warnings_are_for_postgresql_only(data_dir: Path) -> None:
    with database(data_dir) as db:
        assert server_warnings(db.engine) == []


@pytest.mark.skipif(
    not os.environ.get("AUDIENCE_TEST_DATABASE_URL"), reason="needs AUDIENCE_TEST_DATABASE_URL"
)
def test_server_warnings_name_synchronous_commit_off() -> None:
    url = make_url(os.environ["AUDIENCE_TEST_DATABASE_URL"]).set(drivername="postgresql+psycopg")
    # A per-connection setting: the server itself is left alone.
    engine = create_engine(url, connect_args={"options": "-c synchronous_commit=off"})
    try:
        warnings = server_warnings(engine)
    finally:
        engine.dispose()
    assert any("synchronous_commit is off" in warning for warning in warnings)


# --- end to end: the real server process --------------------------------------------------------


def test_serve_end_to_end_creates_and_looks_up_a_user(tmp_path: Path) -> None:
    api_key = "sk_e2e_" + "k" * 40
    env = {name: value for name, value in os.environ.items() if not name.startswith("AUDIENCE_")}
    env.update(
        AUDIENCE_DATA_DIR=str(tmp_path),
        AUDIENCE_BOOTSTRAP_APP_TOKEN="pk_e2e_" + "t" * 20,
        AUDIENCE_BOOTSTRAP_API_KEY=api_key,
        AUDIENCE_BOOTSTRAP_ADMIN_EMAIL="owner@example.com",
        AUDIENCE_BOOTSTRAP_ADMIN_PASSWORD="e2e-owner-password",
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [
        sys.executable,
        "-m",
        "audience",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until_healthy(process, base, log)
        headers = {"Authorization": f"Bearer {api_key}"}
        with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
            body = {"user_id": "u-1", "email": "a@example.com", "name": "Ann"}
            created = client.post("/api/v1/users", json=body)
            assert created.status_code in (200, 201), created.text
            found = client.get("/api/v1/users/lookup", params={"user_id": "u-1"})
            assert found.status_code == 200, found.text
            user = found.json()
            assert user["type"] == "user"
            assert user["user_id"] == "u-1" and user["email"] == "a@example.com"
            assert isinstance(user["created_at"], int) and not isinstance(user["created_at"], bool)
            assert user["id"] == created.json()["id"]
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    output_text = log.read_text()
    assert "first start" in output_text
    assert api_key not in output_text and "e2e-owner-password" not in output_text


@pytest.mark.skipif(
    not os.environ.get("AUDIENCE_TEST_DATABASE_URL"), reason="needs AUDIENCE_TEST_DATABASE_URL"
)
def test_server_warnings_name_autovacuum_exactly_when_it_is_off() -> None:
    url = make_url(os.environ["AUDIENCE_TEST_DATABASE_URL"]).set(drivername="postgresql+psycopg")
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            off = connection.execute(text("SHOW autovacuum")).scalar() == "off"
        warnings = server_warnings(engine)
    finally:
        engine.dispose()
    assert any("autovacuum is off" in warning for warning in warnings) == off
