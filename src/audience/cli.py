"""The `audience` command line (also `python -m audience`).

Every command reads the same Settings as `serve` (AUDIENCE_* variables), opens its own Database,
does its work in one `transaction()` and disposes the engine. Only `serve` and `migrate` change
the schema; the other commands refuse to run on a database that is not at the latest migration,
so an operator never migrates a production database by accident with a read-only command.
User errors (bad input, unknown environment, unreachable database) print one red line and exit 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, NoReturn

import typer
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from pydantic import ValidationError
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy import Engine, func, inspect, make_url, select
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from audience import __version__
from audience.agents.models import ROLES
from audience.agents.service import create_agent, list_agents
from audience.config import Settings
from audience.db import Database, server_warnings
from audience.environments.service import (
    Bootstrapped,
    bootstrap,
    create_api_key,
    create_environment,
    get_environment,
    list_api_keys,
    list_environments,
    revoke_api_key,
)
from audience.errors import AudienceError
from audience.migrations import alembic_config, upgrade
from audience.users.models import User

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="audience",
    help="audience: a self-hosted customer data platform.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
environments_app = typer.Typer(
    name="environments", help="List and create environments (tenants).", no_args_is_help=True
)
keys_app = typer.Typer(
    name="keys", help="Manage the secret API keys of an environment.", no_args_is_help=True
)
users_app = typer.Typer(
    name="users", help="Look at the users of an environment.", no_args_is_help=True
)
agents_app = typer.Typer(
    name="agents", help="Manage agents (people who use the web app).", no_args_is_help=True
)
for group in (environments_app, keys_app, users_app, agents_app):
    app.add_typer(group)

EnvironmentOption = Annotated[
    str, typer.Option("--environment", "-e", help="Slug of the environment.", show_default=True)
]


# --- plumbing -------------------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    err.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(1)


def print_table(headers: tuple[str, ...], rows: Iterable[tuple[str, ...]]) -> None:
    rows = list(rows)
    # Columns never shrink below their content: a narrow (or piped, 80-column) console would
    # otherwise cut app tokens and emails short with an ellipsis, or fold them.
    widths = [max([cell_len(h), *(cell_len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    table = Table(
        *(Column(h, no_wrap=True, min_width=w) for h, w in zip(headers, widths, strict=True))
    )
    for row in rows:
        table.add_row(*map(escape, row))  # names are user input: never read them as markup
    out.print(table, crop=False)


def load_settings(**overrides: Any) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"AUDIENCE_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        )
        fail(f"invalid setting: {problems}")
    updates = {key: value for key, value in overrides.items() if value is not None}
    return settings.model_copy(update=updates) if updates else settings


def describe_database(settings: Settings) -> str:
    """The database location for messages, never with its password."""
    return make_url(settings.url).render_as_string(hide_password=True)


def _driver_message(exc: SQLAlchemyError) -> str:
    # The driver's own first line says what went wrong (refused, auth failed) without the URL.
    cause = exc.orig if isinstance(exc, DBAPIError) else exc
    return str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__


def migration_state(engine: Engine) -> tuple[set[str], set[str]]:
    """(revisions the database is at, revisions this audience's migrations end at)."""
    heads = set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())
    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    return current, heads


def require_migrated(db: Database) -> None:
    current, heads = migration_state(db.engine)
    if not current:
        fail(
            f"the database {describe_database(db.settings)} is not initialised: run "
            "`audience migrate` (or `audience serve`, which migrates on start)"
        )
    if current != heads:
        fail(
            f"the database schema is at {', '.join(sorted(current))} but this audience expects "
            f"{', '.join(sorted(heads))}: run `audience migrate`"
        )


@contextmanager
def open_database(settings: Settings | None = None, *, migrated: bool = True) -> Iterator[Database]:
    """A Database for one command; service and database errors become a clean exit 1."""
    settings = settings or load_settings()
    try:
        db = Database(settings)
    except (ValueError, OSError, SQLAlchemyError) as exc:  # bad setting, unwritable data dir
        fail(str(exc))
    try:
        if migrated:
            require_migrated(db)
        yield db
    except AudienceError as exc:
        fail(f"{exc.field}: {exc.message}" if exc.field else exc.message)
    except SQLAlchemyError as exc:
        fail(f"database {describe_database(settings)}: {_driver_message(exc)}")
    finally:
        db.dispose()


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "-"


# --- serve and migrate ----------------------------------------------------------------------


def public_base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104 - display only
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}"


def print_bootstrap(created: Bootstrapped, settings: Settings, base_url: str) -> None:
    """Shown once, at first start: the plain keys are not stored and cannot be shown again."""
    out.rule("[bold green]audience: first start[/]")
    out.print("Created environments, keys and the owner agent. [bold]Store the keys now[/]:")
    out.print("only their hashes are kept and they are never shown again.\n")
    for environment in created.environments:
        plain = created.api_keys[environment.slug]
        fixed = environment.slug == "production" and settings.bootstrap_api_key
        out.print(f"[bold]{escape(environment.name)}[/] (slug [cyan]{environment.slug}[/])")
        token = escape(environment.app_token)
        out.print(f"  app token (public, ingestion only): {token}", soft_wrap=True)
        if fixed:
            # The operator supplied it; echoing it would only put a secret into the logs.
            out.print(f"  API key: {plain[:10]}… (from AUDIENCE_BOOTSTRAP_API_KEY)", soft_wrap=True)
        else:
            out.print(f"  API key (secret): {plain}", soft_wrap=True)
    out.print(f"\nOwner agent: {escape(created.admin_email)}", soft_wrap=True)
    if created.admin_password:
        out.print(f"  generated password: {escape(created.admin_password)}", soft_wrap=True)
    else:
        out.print("  password: from AUDIENCE_BOOTSTRAP_ADMIN_PASSWORD")
    out.print(f"\nREST API: {base_url}/api/v1   docs: {base_url}/api/v1/docs", soft_wrap=True)
    lookup = f"{base_url}/api/v1/users/lookup?user_id=…"
    out.print(f'Try: curl -H "Authorization: Bearer <API key>" "{lookup}"', soft_wrap=True)
    out.rule()


def run_bootstrap(db: Database, settings: Settings) -> Bootstrapped | None:
    try:
        with db.transaction() as session:
            return bootstrap(
                session,
                app_token=settings.bootstrap_app_token,
                api_key=settings.bootstrap_api_key,
                admin_email=settings.bootstrap_admin_email,
                admin_password=settings.bootstrap_admin_password,
            )
    except IntegrityError:
        # Another `serve` started at the same moment and bootstrapped first: nothing to do.
        return None


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: AUDIENCE_HOST, else 127.0.0.1).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default: AUDIENCE_PORT, else 8000).")
    ] = None,
    migrate: Annotated[
        bool,
        typer.Option(
            "--migrate/--no-migrate",
            help="Run database migrations before serving (--no-migrate: require them done).",
        ),
    ] = True,
) -> None:
    """Serve the REST API (and everything else) with uvicorn.

    On start: migrates the database, and on an empty database creates the environments
    production and staging, their keys and the owner agent, printing them once.
    """
    import uvicorn

    from audience.app import create_app

    settings = load_settings(host=host, port=port)
    base_url = public_base_url(settings.host, settings.port)
    with open_database(settings, migrated=False) as db:
        for warning in server_warnings(db.engine):
            err.rule("[bold red]WARNING: PostgreSQL is not durable[/]", style="red")
            err.print(f"[bold red]{warning}[/]", soft_wrap=True)
            err.print("Set it back to on in postgresql.conf for production use.", soft_wrap=True)
        if settings.is_sqlite and settings.sqlite_synchronous.upper() not in ("FULL", "EXTRA"):
            err.print(
                f"[yellow]SQLite synchronous={settings.sqlite_synchronous.upper()}: the last "
                "commits before a power loss may be lost (AUDIENCE_SQLITE_SYNCHRONOUS).[/]"
            )
        if migrate:
            upgrade(db.engine)
        else:
            require_migrated(db)
        created = run_bootstrap(db, settings)
        if created is not None:
            print_bootstrap(created, settings, base_url)
        out.print(
            f"audience {__version__} on {describe_database(settings)}; "
            f"API docs at {base_url}/api/v1/docs",
            soft_wrap=True,
        )
        uvicorn.run(
            create_app(settings, database=db),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level.lower(),
            # R-SEC-6: uvicorn's access log prints query strings (lookup?email=…), i.e. PII.
            access_log=False,
        )


@app.command("worker")
def worker(
    once: Annotated[
        bool, typer.Option("--once", help="Process what is waiting, then exit.")
    ] = False,
) -> None:
    """Run the ingestion processor on its own (set AUDIENCE_PROCESSOR=false for serve then).

    It applies accepted /v1 messages to profiles, events and companies. Only one processor
    works at a time, so running it beside `serve`'s own is safe, just not faster. It also
    sends queued webhooks and runs bulk operation and export jobs (any number of senders and
    job runners may run).
    """
    import signal
    import threading

    from audience.ingest.processor import Processor
    from audience.jobs.runner import JobRunner
    from audience.webhooks.deliver import Deliverer

    with open_database() as db:
        processor = Processor(db)
        sender = Deliverer(db)
        runner = JobRunner(db)
        if once:
            out.print(f"processed {processor.drain()} messages")
            out.print(f"ran {runner.drain()} jobs")  # before sending: deletes queue webhooks
            out.print(f"attempted {sender.drain()} webhook deliveries")
            sender.close()
            return
        stop = threading.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
        out.print(f"processing messages from {describe_database(db.settings)} (Ctrl-C stops)")
        webhooks = threading.Thread(
            target=sender.run_forever, args=(stop,), name="webhook-sender", daemon=True
        )
        webhooks.start()
        jobs = threading.Thread(target=runner.run_forever, args=(stop,), name="jobs", daemon=True)
        jobs.start()
        processor.run_forever(stop)
        webhooks.join(timeout=30)
        jobs.join(timeout=30)


@app.command("migrate")
def migrate_command() -> None:
    """Bring the database schema to the latest migration (serve also does this on start)."""
    with open_database(migrated=False) as db:
        before, heads = migration_state(db.engine)
        upgrade(db.engine)
        where = describe_database(db.settings)
        target = ", ".join(sorted(heads))
        if before == heads:
            out.print(f"Database {where} is already at the latest migration ({target}).")
        else:
            out.print(f"Migrated database {where} to the latest migration ({target}).")


# --- environments and keys ------------------------------------------------------------------


def slugify(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


@environments_app.command("list")
def environments_list() -> None:
    """List environments with their public app tokens."""
    with open_database() as db, db.transaction(write=False) as session:
        environments = list_environments(session)
    print_table(
        ("id", "slug", "name", "app token", "created"),
        ((str(e.id), e.slug, e.name, e.app_token, when(e.created_at)) for e in environments),
    )


@environments_app.command("create")
def environments_create(
    name: Annotated[str, typer.Argument(help="Display name, e.g. 'EU production'.")],
    slug: Annotated[
        str | None,
        typer.Option(help="Lowercase letters, digits and dashes (default: NAME in that form)."),
    ] = None,
) -> None:
    """Create an environment with an app token and a first API key (shown once)."""
    with open_database() as db, db.transaction() as session:
        environment = create_environment(session, name=name, slug=slug or slugify(name))
        _, plain = create_api_key(session, environment_id=environment.id)
    out.print(f"Created environment {escape(environment.name)} (slug {environment.slug}).")
    out.print(f"app token (public, ingestion only): {environment.app_token}", soft_wrap=True)
    out.print(f"API key (secret, shown once): {plain}", soft_wrap=True)


@keys_app.command("list")
def keys_list(environment: EnvironmentOption = "production") -> None:
    """List the API keys of an environment (prefixes only; keys are stored hashed)."""
    with open_database() as db, db.transaction(write=False) as session:
        env = get_environment(session, environment)
        keys = list_api_keys(session, environment_id=env.id)
    print_table(
        ("id", "name", "prefix", "created", "last used", "revoked"),
        (
            (
                str(k.id),
                k.name,
                f"{k.prefix}…",
                when(k.created_at),
                when(k.last_used_at),
                when(k.revoked_at),
            )
            for k in keys
        ),
    )


@keys_app.command("create")
def keys_create(
    environment: EnvironmentOption = "production",
    name: Annotated[str, typer.Option(help="A label to tell keys apart.")] = "default",
) -> None:
    """Create an API key; its plain text is printed once and cannot be shown again."""
    with open_database() as db, db.transaction() as session:
        env = get_environment(session, environment)
        key, plain = create_api_key(session, environment_id=env.id, name=name)
    out.print(f"Created API key {key.id} ({escape(key.name)}) for {environment}. Store it now:")
    out.print(plain, soft_wrap=True)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[int, typer.Argument(metavar="ID", help="Key id, as in `keys list`.")],
    environment: EnvironmentOption = "production",
) -> None:
    """Revoke an API key: requests made with it are refused from now on."""
    with open_database() as db, db.transaction() as session:
        env = get_environment(session, environment)
        key = revoke_api_key(session, environment_id=env.id, key_id=key_id)
    out.print(f"Revoked API key {key.id} ({escape(key.name)}, {key.prefix}…) of {environment}.")


# --- users ----------------------------------------------------------------------------------


@users_app.command("count")
def users_count(environment: EnvironmentOption = "production") -> None:
    """Print the number of users (merged-away users excluded)."""
    with open_database() as db, db.transaction(write=False) as session:
        env = get_environment(session, environment)
        live = (User.environment_id == env.id, User.merged_into_id.is_(None))
        count = session.scalar(select(func.count()).select_from(User).where(*live))
    typer.echo(count or 0)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


@users_app.command("get")
def users_get(
    environment: EnvironmentOption = "production",
    user_id: Annotated[str | None, typer.Option(help="Your id for the user.")] = None,
    email: Annotated[str | None, typer.Option(help="Email (case-insensitive).")] = None,
) -> None:
    """Print one user's stored row as JSON (timestamps in ISO 8601, UTC)."""
    if (user_id is None) == (email is None):
        fail("give exactly one of --user-id or --email")
    by, value = ("user_id", user_id) if user_id is not None else ("email", str(email))
    matches = User.user_id == value if by == "user_id" else func.lower(User.email) == value.lower()
    with open_database() as db, db.transaction(write=False) as session:
        env = get_environment(session, environment)
        live = (User.environment_id == env.id, User.merged_into_id.is_(None))
        users = list(session.scalars(select(User).where(*live, matches).limit(2)))
    columns = [attr.key for attr in inspect(User).column_attrs]
    rows = [{key: _json_value(getattr(user, key)) for key in columns} for user in users]
    if not rows:
        fail(f"no user with {by} {value} in {environment}")
    if len(rows) > 1:
        fail(f"several users have email {email} in {environment}; use --user-id")
    typer.echo(json.dumps(rows[0], indent=2, ensure_ascii=False, default=str))


# --- agents ---------------------------------------------------------------------------------


@agents_app.command("list")
def agents_list() -> None:
    """List agents and their roles."""
    with open_database() as db, db.transaction(write=False) as session:
        agents = list_agents(session)
    print_table(
        ("id", "email", "name", "role", "created"),
        ((str(a.id), a.email, a.name, a.role, when(a.created_at)) for a in agents),
    )


@agents_app.command("create")
def agents_create(
    email: Annotated[str, typer.Option(help="Sign-in email.")],
    password: Annotated[
        str,
        typer.Option(
            prompt=True,
            hide_input=True,
            confirmation_prompt=True,
            help="At least 8 characters. Asked for when not given (keeps it out of shell history).",
        ),
    ],
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}.")] = "member",
) -> None:
    """Create an agent who can sign in to the web app."""
    with open_database() as db, db.transaction() as session:
        agent = create_agent(session, email=email, name=name, password=password, role=role)
    out.print(f"Created agent {agent.id}: {escape(agent.email)} ({agent.role}).", soft_wrap=True)
