"""Segments and search benchmark: filters over many users on fresh SQLite and PostgreSQL.

    .venv/bin/python bench/segments.py [--users 1000000] [--events-per-user 10]
        [--database sqlite,postgresql] [--runs 15] [--postgres-url URL]

Loads `--users` users with realistic custom attributes (plan, mrr, signed_up, country, beta,
tags) and users x `--events-per-user` events straight into a fresh migrated database (PostgreSQL
COPY; SQLite executemany in big transactions), runs ANALYZE, then times count + first page of 50
through segments.service.search_users (p50/p95 over `--runs`):

- an ad-hoc 3-condition custom-attribute filter sorted by a custom attribute, without and with
  the expression indexes of segments.indexes;
- "Purchased at least 3 times in the last 30 days";
- counting the members of a saved segment (segments.saved);

and, as the raw reference in the same run, hand-written SQL for the same questions through the
driver with the best index for it. Only 127.0.0.1 is contacted; the databases are dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import secrets
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event, make_url, text

from audience.attributes.models import AttributeDefinition
from audience.config import Settings
from audience.db import Database
from audience.environments import service as environments
from audience.migrations import upgrade
from audience.pagination import PageParams
from audience.segments import indexes, saved, service

ATTRIBUTES = {
    "plan": "string",
    "mrr": "number",
    "signed_up": "date",
    "country": "string",
    "beta": "boolean",
    "tags": "list",
}
PLANS = ["free"] * 60 + ["starter"] * 25 + ["pro"] * 12 + ["enterprise"] * 3
COUNTRIES = ["US"] * 30 + ["DE"] * 10 + ["GB"] * 10 + ["FR"] * 8 + ["IN", "BR", "JP", "CA"] * 5
COUNTRIES += ["ES", "IT", "NL", "SE", "PL", "AU", "MX", "KR", "CH", "AT"] * 2
EVENTS = ["Page Viewed"] * 50 + ["Clicked"] * 25 + ["Searched"] * 15 + ["Purchased"] * 10
TAGS = ["vip", "newsletter", "beta-tester", "partner", "churn-risk", "trial"]
AD_HOC = {
    "and": [
        {"field": "custom_attributes.plan", "op": "eq", "value": "pro"},
        {"field": "custom_attributes.country", "op": "eq", "value": "DE"},
        {"field": "custom_attributes.mrr", "op": "gte", "value": 500},
    ]
}
BEHAVIOUR = {"event": "Purchased", "count": {"gte": 3}, "within_days": 30}
NOW = datetime.now(UTC).replace(microsecond=0)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def timed(runs: int, work: Callable[[], Any]) -> tuple[float, float]:
    """(p50, p95) in milliseconds of `runs` calls, after one warm-up call."""
    work()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), percentile(times, 0.95)


# --- data -------------------------------------------------------------------------------------


def user_rows(users: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    for index in range(1, users + 1):
        plan = rng.choice(PLANS)
        mrr = 0 if plan == "free" else round(rng.lognormvariate(5, 1.2), 2)
        signed = NOW.date() - timedelta(days=rng.randrange(1500))
        attributes = {
            "plan": plan,
            "mrr": mrr,
            "signed_up": signed.isoformat(),
            "country": rng.choice(COUNTRIES),
            "beta": rng.random() < 0.05,
            "tags": rng.sample(TAGS, rng.randrange(3)),
        }
        created = NOW - timedelta(seconds=rng.randrange(1500 * 86400))
        yield index, f"u{index:010d}", orjson.dumps(attributes).decode(), created


def event_rows(users: int, per_user: int, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    """Events spread over 90 days; a tenth of users are active buyers, so 'Purchased ≥3 times
    in 30 days' finds a realistic minority."""
    id = 0
    for user in range(1, users + 1):
        buyer = rng.random() < 0.1
        for _ in range(per_user):
            id += 1
            name = "Purchased" if buyer and rng.random() < 0.4 else rng.choice(EVENTS)
            moment = NOW - timedelta(seconds=rng.randrange(90 * 86400))
            yield id, user, name, moment, f"m{id}"


def _naive(moment: datetime) -> str:
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def load_sqlite(path: Path, users: int, per_user: int, environment_id: int) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    rng = random.Random(1)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        user_sql = (
            "INSERT INTO users (id, environment_id, user_key, gender, status, "
            "unsubscribed_from_emails, session_count, page_views, custom_attributes, "
            "attribute_times, created_at, updated_at) "
            f"VALUES (?, {environment_id}, ?, 'unknown', 'user', 0, 0, 0, ?, '{{}}', ?, ?)"
        )
        event_sql = (
            "INSERT INTO events (id, environment_id, user_id, name, kind, timestamp, received_at, "
            f"message_id, properties) VALUES (?, {environment_id}, ?, ?, 'track', ?, ?, ?, '{{}}')"
        )
        batch: list[tuple[Any, ...]] = []

        def flush(sql: str) -> None:
            connection.execute("BEGIN")
            connection.executemany(sql, batch)
            connection.execute("COMMIT")
            batch.clear()

        for id, key, attributes, created in user_rows(users, rng):
            batch.append((id, key, attributes, _naive(created), _naive(created)))
            if len(batch) >= 100_000:
                flush(user_sql)
        flush(user_sql)
        for id, user, name, moment, message in event_rows(users, per_user, rng):
            batch.append((id, user, name, _naive(moment), _naive(moment), message))
            if len(batch) >= 200_000:
                flush(event_sql)
        flush(event_sql)
        connection.execute("ANALYZE")
    finally:
        connection.close()


def load_postgresql(url: str, users: int, per_user: int, environment_id: int) -> None:
    import psycopg

    rng = random.Random(1)
    with psycopg.connect(url) as connection:
        with connection.cursor() as cursor:
            columns = (
                "id, environment_id, user_key, gender, status, unsubscribed_from_emails, "
                "session_count, page_views, custom_attributes, attribute_times, created_at, "
                "updated_at"
            )
            with cursor.copy(f"COPY users ({columns}) FROM STDIN") as copy:
                for id, key, attributes, created in user_rows(users, rng):
                    row = (id, environment_id, key, "unknown", "user", False, 0, 0)
                    copy.write_row((*row, attributes, "{}", created, created))
            columns = (
                "id, environment_id, user_id, name, kind, timestamp, received_at, message_id, "
                "properties"
            )
            with cursor.copy(f"COPY events ({columns}) FROM STDIN") as copy:
                for id, user, name, moment, message in event_rows(users, per_user, rng):
                    row = (id, environment_id, user, name, "track", moment, moment, message, "{}")
                    copy.write_row(row)
            for table in ("users", "events"):
                cursor.execute(f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))")
        connection.commit()
        connection.autocommit = True
        # VACUUM too, as autovacuum would soon after a load: index-only scans need the
        # visibility map, and the behaviour query reads events from the index alone.
        connection.execute("VACUUM ANALYZE")


# --- databases --------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh(kind: str, root: Path, postgres_url: str, *, keep: bool = False) -> Iterator[Database]:
    root.mkdir(parents=True)
    if kind == "sqlite":
        database = Database(Settings(data_dir=root))
        try:
            yield database
        finally:
            database.dispose()
        return
    import psycopg

    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(postgres_url).set(drivername="postgresql+psycopg", database=name)
    database = Database(Settings(data_dir=root, database_url=url.render_as_string(False)))
    try:
        yield database
    finally:
        database.dispose()
        if keep:
            print(f"  postgresql: kept database {name} (drop it when done)")
        else:
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def search(database: Database, environment_id: int, filter: Any, sort: str) -> int:
    with database.transaction(write=False) as session:
        page = service.search_users(
            session,
            environment_id=environment_id,
            filter=filter,
            q=None,
            sort=sort,
            descending=False,
            params=PageParams(1, 50, None),
            now=NOW,
        )
        return page.total


def plans(database: Database, work: Callable[[], Any]) -> list[str]:
    """EXPLAIN of each users query `work` sends, with the very parameters it sent."""
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM users" in statement:
            sent.append((statement, parameters))

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        work()
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
    sqlite = database.engine.dialect.name == "sqlite"
    found = []
    with database.engine.connect() as connection:
        for statement, parameters in sent:
            explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
            rows = connection.exec_driver_sql(explain + statement, parameters).fetchall()
            found.append("\n".join(str(row[-1] if sqlite else row[0]) for row in rows))
    return found


def raw(database: Database, sqls: list[str], params: dict[str, Any]) -> Callable[[], Any]:
    def run() -> None:
        with database.engine.connect() as connection:
            for sql in sqls:
                connection.execute(text(sql), params).fetchall()

    return run


def raw_queries(pg: bool) -> tuple[list[str], list[str], list[str]]:
    """Hand-written SQL: (index DDL, ad-hoc count + page, behaviour count + page)."""
    if pg:
        plan, country = "lower(custom_attributes->>'plan')", "lower(custom_attributes->>'country')"
        mrr = "((custom_attributes->>'mrr')::float8)"
    else:
        plan = "lower(json_extract(custom_attributes, '$.plan'))"
        country = "lower(json_extract(custom_attributes, '$.country'))"
        mrr = "json_extract(custom_attributes, '$.mrr')"
    ddl = [
        f"CREATE INDEX ix_raw ON users (environment_id, {plan}, {country}, {mrr})",
        # Covering for "did E n times since t, per user": no pass over every user's events.
        "CREATE INDEX ix_raw_events ON events (environment_id, name, user_id, timestamp)",
    ]
    where = (
        f"environment_id = :env AND merged_into_id IS NULL AND {plan} = 'pro' "
        f"AND {country} = 'de' AND {mrr} >= 500"
    )
    ad_hoc = [
        f"SELECT count(*) FROM users WHERE {where}",
        f"SELECT * FROM users WHERE {where} ORDER BY {mrr}, id LIMIT 50",
    ]
    buyers = (
        "id IN (SELECT user_id FROM events WHERE environment_id = :env AND name = 'Purchased' "
        "AND timestamp >= :since GROUP BY user_id HAVING count(*) >= 3)"
    )
    live = "environment_id = :env AND merged_into_id IS NULL"
    behaviour = [
        f"SELECT count(*) FROM users WHERE {live} AND {buyers}",
        f"SELECT * FROM users WHERE {live} AND {buyers} ORDER BY created_at, id LIMIT 50",
    ]
    return ddl, ad_hoc, behaviour


def run_one(kind: str, args: argparse.Namespace, root: Path) -> list[tuple[str, str, str, str]]:
    rows: list[tuple[str, str, str, str]] = []

    def row(label: str, p50: float, p95: float, note: str = "") -> None:
        rows.append((label, f"{p50:.1f}", f"{p95:.1f}", note))
        print(f"  {kind:10} {label:58} p50 {p50:8.1f} ms  p95 {p95:8.1f} ms  {note}", flush=True)

    with fresh(kind, root / kind, args.postgres_url, keep=args.keep) as database:
        upgrade(database.engine)
        with database.transaction() as session:
            environment = environments.create_environment(session, name="Bench", slug="bench")
            env = environment.id
            for name, type_ in ATTRIBUTES.items():
                session.add(
                    AttributeDefinition(
                        environment_id=env, model="user", name=name, label=name, type=type_
                    )
                )
        started = time.perf_counter()
        if kind == "sqlite":
            load_sqlite(root / kind / "audience.db", args.users, args.events_per_user, env)
        else:
            url = database.engine.url.set(drivername="postgresql").render_as_string(False)
            load_postgresql(url, args.users, args.events_per_user, env)
        events = args.users * args.events_per_user
        print(
            f"  {kind}: loaded {args.users:,} users, {events:,} events and analysed in "
            f"{time.perf_counter() - started:.0f} s",
            flush=True,
        )
        sort = "custom_attributes.mrr"
        found = search(database, env, AD_HOC, sort)
        p50, p95 = timed(args.runs, lambda: search(database, env, AD_HOC, sort))
        row("ad-hoc 3 conditions, sort by mrr: no index", p50, p95, f"{found:,} users")
        started = time.perf_counter()
        wanted = {("user", name, type_) for name, type_ in ATTRIBUTES.items()}
        created = indexes.sync_custom_attribute_indexes(database.engine, wanted=wanted).created
        print(f"  {kind}: {len(created)} indexes built in {time.perf_counter() - started:.1f} s")
        p50, p95 = timed(args.runs, lambda: search(database, env, AD_HOC, sort))
        row("ad-hoc 3 conditions, sort by mrr: segments.indexes", p50, p95)
        if args.explain:
            for plan in plans(database, lambda: search(database, env, AD_HOC, sort)):
                print("    " + plan.replace("\n", "\n    "))
        found = search(database, env, BEHAVIOUR, "created_at")
        p50, p95 = timed(args.runs, lambda: search(database, env, BEHAVIOUR, "created_at"))
        row("Purchased >= 3 times in 30 days", p50, p95, f"{found:,} users")

        started = time.perf_counter()
        with database.transaction() as session:
            segment = saved.create_segment(
                session, environment_id=env, name="German pro payers", filter=AD_HOC, now=NOW
            )
            segment_id = segment.id
        print(
            f"  {kind}: saved segment created (members computed) in "
            f"{time.perf_counter() - started:.1f} s"
        )

        def count_members() -> None:
            with database.transaction(write=False) as session:
                saved.counts(session, segment_ids=[segment_id])

        def first_page() -> None:
            with database.transaction(write=False) as session:
                saved.members(
                    session, environment_id=env, id=segment_id, params=PageParams(1, 50, None)
                )

        row("saved segment: count members", *timed(args.runs, count_members))
        row("saved segment: count + first page of members", *timed(args.runs, first_page))

        ddl, ad_hoc, behaviour = raw_queries(kind == "postgresql")
        with database.engine.begin() as connection:
            for sql in ddl:
                connection.execute(text(sql))
            connection.execute(text("ANALYZE"))
        params = {"env": env, "since": NOW - timedelta(days=30)}
        if kind == "sqlite":
            params["since"] = _naive(params["since"])
        row(
            "raw SQL: ad-hoc count + page, composite index",
            *timed(args.runs, raw(database, ad_hoc, params)),
        )
        row(
            "raw SQL: behaviour count + page, (env, name, user_id, timestamp) index",
            *timed(args.runs, raw(database, behaviour, params)),
        )
        p50, p95 = timed(args.runs, lambda: search(database, env, BEHAVIOUR, "created_at"))
        row("Purchased >= 3 times in 30 days, with that events index", p50, p95)
        if args.explain:
            for plan in plans(database, lambda: search(database, env, BEHAVIOUR, "created_at")):
                print("    " + plan.replace("\n", "\n    "))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events-per-user", type=int, default=10)
    parser.add_argument("--database", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--explain", action="store_true", help="print the ad-hoc query plans")
    parser.add_argument(
        "--keep", action="store_true", help="keep the PostgreSQL database (to explore plans)"
    )
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    if make_url(args.postgres_url).host not in ("127.0.0.1", "localhost"):
        parser.error("only a PostgreSQL on 127.0.0.1 is used")
    print(f"load average before: {os.getloadavg()}")
    root = Path(tempfile.mkdtemp(prefix="bench-segments-"))
    try:
        for kind in args.database.split(","):
            run_one(kind, args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"load average after: {os.getloadavg()}")
    print("targets: ad-hoc p50 ≤ 100 ms (PostgreSQL), ≤ 300 ms (SQLite); saved segment ≤ 20 ms")


if __name__ == "__main__":
    main()
