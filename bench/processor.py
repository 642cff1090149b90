"""The processor alone, and what candidate fixes to it would gain (measured, not guessed).

    .venv/bin/python bench/processor.py --database sqlite|postgresql [--messages 5000]
        [--users 100000] [--variants baseline,partial_phone_index]

Fills an inbox once through the real accept path (`audience serve` with AUDIENCE_PROCESSOR=false,
the workload of bench/ingest.py), then for each variant copies that database (SQLite: the file;
PostgreSQL: CREATE DATABASE ... TEMPLATE) and drains it with `Processor.drain()` in a fresh
process with the variant's patches applied. Reports wall time, the processor's CPU per message
(robust when other work shares the machine) and, on PostgreSQL, the backend's CPU, and checks
that every variant leaves the same rows as the first one, column by column (`content`).

The variants are monkeypatches of src/ (or schema changes to the copy) for measurement only;
each names the change it stands for (see docs/benchmarks.md):

- baseline: src/ as it is.
- original: src/ with `audience.ingest` taken from the directory `BENCH_ORIGINAL_INGEST` names
  (a copy of src/audience/ingest before a change), to compare a change with what it replaces.
- stdlib_json: JSON columns written by json.dumps, as before `audience.db.json_text` (orjson).
- generic_datetime: SQLite dates bound by SQLAlchemy's DATETIME processor, as before
  `audience.db.UtcDateTime.bind_processor`.
- in_lists: `IN (…)` lists on PostgreSQL too, as before `audience.db.one_of` (`= ANY(array)`).
- explain_slow: not a fix; PostgreSQL logs the plans of statements over 3 ms (auto_explain) to
  its server log, e.g. /var/log/postgresql/postgresql-15-main.log.
- prepared: psycopg's default preparing of repeated queries, as before `audience.db` turned it
  off; custom_plans: that, with `plan_cache_mode=force_custom_plan`.
- partial_phone_index: `ix_users_environment_id_phone` made partial (`WHERE phone IS NOT
  NULL`), a schema change applied to the copy: without statistics PostgreSQL's planner picks
  that index for `environment_id = ? AND user_id = ?` and reads every user of the environment.

Two environment variables look inside a drain: `BENCH_STATEMENTS=FILE` appends the most
frequent SQL statements with their counts to FILE, `BENCH_CPROFILE=FILE` writes cProfile stats.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import ingest  # the sibling benchmark: workload, databases, server

COUNTED = ("events", "users", "identities", "attribute_changes", "companies", "failed_messages")


# --- candidate fixes, as patches -------------------------------------------------------------
# The fixes measured here first (negative cache, user_id check, definitions cache, events
# executemany) are in src/ now; add a function per new candidate and name it in PATCHES.


def stdlib_json() -> None:
    """JSON columns written by json.dumps, as before `audience.db.json_text` (orjson)."""
    import json

    import audience.db
    import audience.ingest.bulk

    audience.db.json_text = json.dumps
    audience.ingest.bulk.json_text = json.dumps


def generic_datetime() -> None:
    """SQLite dates bound by SQLAlchemy's own DATETIME processor, as before
    `audience.db.UtcDateTime.bind_processor`."""
    from sqlalchemy.types import TypeDecorator

    import audience.db

    audience.db.UtcDateTime.bind_processor = TypeDecorator.bind_processor  # type: ignore[method-assign]


def in_lists() -> None:
    """`IN (…)` lists on PostgreSQL too, as before `audience.db.one_of` (`= ANY(array)`)."""
    import audience.companies.service
    import audience.db
    import audience.ingest.inbox
    import audience.ingest.processor
    import audience.ingest.resolve

    def one_of(session: Any, column: Any, values: Any) -> Any:
        return column.in_(values)

    for module in (
        audience.db,
        audience.companies.service,
        audience.ingest.inbox,
        audience.ingest.processor,
        audience.ingest.resolve,
    ):
        module.one_of = one_of  # type: ignore[attr-defined]


def custom_plans() -> None:
    """psycopg's default preparing, with `plan_cache_mode=force_custom_plan` (plans for the
    values of each execution), against `audience.db`'s no preparing at all."""
    import audience.db

    original = audience.db.create_engine

    def create_engine(url: Any, **kwargs: Any) -> Any:
        if str(url).startswith("postgresql"):
            kwargs["connect_args"] = {"options": "-c plan_cache_mode=force_custom_plan"}
        return original(url, **kwargs)

    audience.db.create_engine = create_engine  # type: ignore[assignment]


def prepared() -> None:
    """psycopg's default: a query run five times on a connection is prepared (PostgreSQL may
    then use a generic plan), as before `audience.db` turned preparing off."""
    import audience.db

    original = audience.db.create_engine

    def create_engine(url: Any, **kwargs: Any) -> Any:
        if str(url).startswith("postgresql"):
            kwargs["connect_args"] = {"prepare_threshold": 5}
        return original(url, **kwargs)

    audience.db.create_engine = create_engine  # type: ignore[assignment]


def explain_slow() -> None:
    """Not a fix, a look inside: PostgreSQL logs the plan of every statement over 3 ms to its
    server log (auto_explain, with actual rows), with preparing off as in `audience.db`."""
    import audience.db

    original = audience.db.create_engine

    def create_engine(url: Any, **kwargs: Any) -> Any:
        if str(url).startswith("postgresql"):
            kwargs["connect_args"] = {
                "prepare_threshold": None,
                "options": "-c session_preload_libraries=auto_explain"
                " -c auto_explain.log_min_duration=3 -c auto_explain.log_analyze=on",
            }
        return original(url, **kwargs)

    audience.db.create_engine = create_engine  # type: ignore[assignment]


PATCHES: dict[str, list[Callable[[], None]]] = {
    "baseline": [],
    "original": [],
    "partial_phone_index": [],
    "stdlib_json": [stdlib_json],
    "in_lists": [in_lists],
    "generic_datetime": [generic_datetime],
    "prepared": [prepared],
    "custom_plans": [custom_plans],
    "explain_slow": [explain_slow],
}
# Schema changes, applied to the variant's copy before it drains.
PARTIAL_PHONE_INDEX = (
    "DROP INDEX ix_users_environment_id_phone",
    "CREATE INDEX ix_users_environment_id_phone ON users (environment_id, phone) "
    "WHERE phone IS NOT NULL",
)
SCHEMA: dict[str, tuple[str, ...]] = {"partial_phone_index": PARTIAL_PHONE_INDEX}


def apply_schema(target: ingest.Target, statements: tuple[str, ...]) -> None:
    if not statements:
        return
    if target.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(target.sqlite_path) as connection:
            for statement in statements:
                connection.execute(statement)
        return
    import psycopg

    assert target.url is not None
    with psycopg.connect(target.url) as connection:
        for statement in statements:
            connection.execute(statement)


def original_src(root: Path) -> Path:
    """A copy of src/ whose `audience.ingest` is the one in BENCH_ORIGINAL_INGEST."""
    ingest_dir = os.environ.get("BENCH_ORIGINAL_INGEST")
    if not ingest_dir:
        raise SystemExit("the original variant needs BENCH_ORIGINAL_INGEST=<a copy of ingest/>")
    src = root / "original-src"
    if not src.exists():
        shutil.copytree(Path(__file__).parent.parent / "src", src)
        shutil.rmtree(src / "audience" / "ingest")
        shutil.copytree(ingest_dir, src / "audience" / "ingest")
    return src


# Columns that differ between runs whatever the code does: ids, random keys, wall-clock times.
VOLATILE = {"id", "user_key", "created_at", "updated_at", "changed_at", "processed_at"}
VOLATILE |= {"member_since", "failed_at", "next_attempt_at"}
COMPARED = (
    "users",
    "identities",
    "events",
    "attribute_changes",
    "companies",
    "company_memberships",
    "processed_messages",
    "failed_messages",
    "user_tags",
    "webhook_deliveries",
)


def content(target: ingest.Target) -> dict[str, Counter[str]]:
    """The rows of the processor's tables with ids replaced by what they stand for (a user by
    its userId or its anonymous ids, a company by its company_id), comparable across runs."""
    if target.kind == "sqlite":
        import sqlite3

        connection: Any = sqlite3.connect(target.sqlite_path)
    else:
        import psycopg

        connection = psycopg.connect(target.url)

    def rows(table: str) -> list[dict[str, Any]]:
        cursor = connection.execute(f"SELECT * FROM {table}")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    try:
        tables = {table: rows(table) for table in COMPARED}
    finally:
        connection.close()
    anonymous: dict[int, list[str]] = {}
    for row in tables["identities"]:
        anonymous.setdefault(row["user_id"], []).append(row["value"])
    users = {
        row["id"]: f"{row['user_id']}|{sorted(anonymous.get(row['id'], []))}"
        for row in tables["users"]
    }
    companies = {row["id"]: row["company_id"] for row in tables["companies"]}

    def normal(table: str, name: str, value: Any) -> Any:
        if name in ("user_id", "merged_into_id") and table != "users":
            return users.get(value, value)
        if name == "merged_into_id":
            return users.get(value, value)
        if name == "attribute_times":  # create_user stamps user_id with the time it runs
            times = json.loads(value) if isinstance(value, str) else dict(value)
            times.pop("user_id", None)
            return times
        if name == "company_id" and table == "company_memberships":
            return companies.get(value, value)
        if isinstance(value, str) and value[:1] in '{["':  # SQLite's JSON text, by value
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    return {
        table: Counter(
            repr(
                sorted((k, repr(normal(table, k, v))) for k, v in row.items() if k not in VOLATILE)
            )
            for row in found
        )
        for table, found in tables.items()
    }


def differences(a: dict[str, Counter[str]], b: dict[str, Counter[str]]) -> str:
    """'' when `a` and `b` hold the same rows, else a short account of the first differences."""
    notes = []
    for table in COMPARED:
        only_a, only_b = a[table] - b[table], b[table] - a[table]
        if only_a or only_b:
            notes.append(
                f"{table}: {sum(only_a.values())} rows only in the reference, "
                f"{sum(only_b.values())} only here; e.g. {next(iter(only_a), '')[:600]} / "
                f"{next(iter(only_b), '')[:600]}"
            )
    return "\n".join(notes)


def run_variant(name: str, database: str | None) -> None:
    """In the child: patch, drain, print the figures as one JSON line."""
    for patch in PATCHES[name]:
        patch()
    from sqlalchemy import event

    from audience.config import Settings
    from audience.db import Database
    from audience.ingest.processor import Processor

    db = Database(Settings())
    statements = 0

    kinds: Counter[str] = Counter()

    def count(_conn: Any, _cursor: Any, sql: str, *_: Any) -> None:
        nonlocal statements
        statements += 1
        kinds[" ".join(sql.split())[:70]] += 1

    event.listen(db.engine, "before_cursor_execute", count)
    # ua-parser compiles its regexes on first use (0.3 s, once per process): not the drain's.
    from ua_parser import parse

    parse("Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0")
    profile_path = os.environ.get("BENCH_CPROFILE")  # a file: cProfile stats of the drain
    profiler = cProfile.Profile() if profile_path else None
    started, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    processed = Processor(db).drain()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if profiler is not None and profile_path:
        profiler.disable()
        profiler.dump_stats(profile_path)
    backend = ingest.postgres_cpu_seconds(database)  # before the pool's connections close
    db.dispose()
    figures = {"processed": processed, "wall": wall, "cpu": cpu, "backend": backend}
    if path := os.environ.get("BENCH_STATEMENTS"):  # a file: which statements, most first
        with open(path, "a") as out:
            out.writelines(f"{times:8,}  {sql}\n" for sql, times in kinds.most_common(20))
    print(json.dumps({**figures, "statements": statements}))


# --- the parent -------------------------------------------------------------------------------


def copy_database(kind: str, base: ingest.Target, root: Path, label: str, url: str) -> Any:
    """A context manager giving a copy of `base` (the filled inbox)."""
    import contextlib

    @contextlib.contextmanager
    def copied() -> Any:
        if kind == "sqlite":
            data_dir = root / label
            shutil.copytree(base.data_dir, data_dir)
            yield ingest.Target(kind, data_dir, None)
            return
        import psycopg

        name = f"{base.name}_{label}"
        data_dir = root / label
        data_dir.mkdir()
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{base.name}"')
        try:
            yield ingest.Target(kind, data_dir, url.rsplit("/", 1)[0] + "/" + name, name)
        finally:
            with psycopg.connect(url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return copied()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--variants", default=",".join(PATCHES))
    parser.add_argument(
        "--repeat", type=int, default=1, help="run the variants round-robin N times; keep each best"
    )
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # the child's side
    parser.add_argument("--backend-database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        run_variant(args.variant, args.backend_database)
        return
    variants = args.variants.split(",")
    unknown = set(variants) - set(PATCHES)
    if unknown:
        parser.error(f"unknown variants: {', '.join(sorted(unknown))}")

    port = ingest.free_port()
    workload = ingest.build_workload(
        messages=args.messages, users=args.users, port=port, use_gzip=False
    )
    root = Path(tempfile.mkdtemp(prefix="audience-bench-processor-"))
    results: list[tuple[str, dict[str, Any], dict[str, int]]] = []
    reference_rows: dict[str, Counter[str]] | None = None  # the first run's, to compare with
    load_before = os.getloadavg()
    try:
        with ingest.fresh_database(args.database, root, "base", args.postgres_url) as base:
            with ingest.serve(base, port, root / "serve.log", processor=False):
                accepted = asyncio.run(ingest.run_load(port, workload, 8, 0.0, lambda: None))
            seconds = accepted.finished - accepted.started
            print(
                f"inbox filled through serve with the processor off: {accepted.accepted:,} "
                f"messages at {accepted.accepted / seconds:,.0f}/s, latency p50 / p99 "
                f"{ingest.percentile(accepted.latencies, 0.5) * 1000:,.0f} / "
                f"{ingest.percentile(accepted.latencies, 0.99) * 1000:,.0f} ms; "
                "draining it per variant ...",
                flush=True,
            )
            for variant in [name for _ in range(args.repeat) for name in variants]:
                with copy_database(
                    args.database, base, root, f"{variant}_{len(results)}", args.postgres_url
                ) as target:
                    apply_schema(target, SCHEMA.get(variant, ()))
                    command = [sys.executable, __file__, "--variant", variant]
                    if target.name:
                        command += ["--backend-database", target.name]
                    env = ingest.server_env(target)
                    if variant == "original":
                        env["PYTHONPATH"] = str(original_src(root))
                    done = subprocess.run(
                        command,
                        env=env,
                        capture_output=True,
                        text=True,
                        check=False,
                    )
                    if done.returncode != 0:
                        raise SystemExit(f"{variant} failed:\n{done.stderr[-3000:]}")
                    figures = json.loads(done.stdout.strip().splitlines()[-1])
                    counts = {
                        table: ingest.query(target, f"SELECT count(*) FROM {table}")[0][0]
                        for table in COUNTED
                    }
                    if target.name:  # which indexes the users lookups went through
                        figures["users_indexes"] = ingest.query(
                            target,
                            "SELECT indexrelname, idx_scan, idx_tup_read FROM pg_stat_user_indexes"
                            " WHERE relname = 'users' AND idx_scan > 0 ORDER BY idx_tup_read DESC",
                        )
                    rows = content(target)
                    if reference_rows is None:
                        reference_rows = rows
                    elif difference := differences(reference_rows, rows):
                        figures["differences"] = difference
                    results.append((variant, figures, counts))
                    print(
                        f"  {variant}: {figures['processed'] / figures['wall']:,.0f} messages/s, "
                        f"{figures['cpu'] * 1000 / figures['processed']:.2f} ms CPU per message",
                        flush=True,
                    )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()

    best: dict[str, tuple[str, dict[str, Any], dict[str, int]]] = {}
    for name, figures, counts in results:  # the least disturbed run of each variant
        if name not in best or figures["cpu"] < best[name][1]["cpu"]:
            best[name] = (name, figures, counts)
    results = [best[name] for name in variants]
    baseline = next((figures for name, figures, _ in results if name == "baseline"), None)
    reference = results[0][2]
    print()
    print(
        f"processor only, {args.database}, {workload.messages:,} messages "
        f"({dict(workload.kinds)}), {workload.users_touched:,} users; "
        f"load average {load_before[0]:.1f} -> {load_after[0]:.1f} on 2 cores; "
        f"best of {args.repeat} per variant"
    )
    header = f"{'variant':<20} {'msgs/s':>8} {'CPU ms/msg':>11} {'db CPU ms/msg':>14}"
    header += f" {'SQL/msg':>8}"
    header += f" {'CPU vs baseline':>16}  same rows"
    print(header)
    print("-" * len(header))
    for name, figures, counts in results:
        n = figures["processed"]
        cpu = figures["cpu"] * 1000 / n
        backend = "-" if figures["backend"] is None else f"{figures['backend'] * 1000 / n:.2f}"
        gain = "" if baseline is None else f"{baseline['cpu'] / figures['cpu']:.2f}x"
        same = "yes" if counts == reference and not figures.get("differences") else "NO"
        print(
            f"{name:<20} {n / figures['wall']:>8,.0f} {cpu:>11.2f} {backend:>14}"
            f" {figures['statements'] / n:>8.1f} {gain:>16}  {same}"
        )
    print(f"rows: {reference}")
    for name, figures, counts in results:
        if counts != reference or figures.get("differences"):
            print(f"{name} differs from {results[0][0]}: {counts}\n{figures.get('differences')}")
    for name, figures, _ in results:
        if figures.get("users_indexes"):
            print(f"{name}: users index scans (index, scans, entries read):")
            for index, scans, read in figures["users_indexes"]:
                print(f"    {index:<45} {scans:>9,} {read:>14,}")


if __name__ == "__main__":
    main()
