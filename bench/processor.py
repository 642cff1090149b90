"""The processor alone, and what candidate fixes to it would gain (measured, not guessed).

    .venv/bin/python bench/processor.py --database sqlite|postgresql [--messages 5000]
        [--users 100000] [--variants baseline,partial_phone_index]

Fills an inbox once through the real accept path (`audience serve` with AUDIENCE_PROCESSOR=false,
the workload of bench/ingest.py), then for each variant copies that database (SQLite: the file;
PostgreSQL: CREATE DATABASE ... TEMPLATE) and drains it with `Processor.drain()` in a fresh
process with the variant's patches applied. Reports wall time, the processor's CPU per message
(robust when other work shares the machine) and, on PostgreSQL, the backend's CPU, and checks
that every variant leaves the same rows.

The variants are monkeypatches of src/ (or schema changes to the copy) for measurement only;
each names the change it stands for (see docs/benchmarks.md):

- baseline: src/ as it is.
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

PATCHES: dict[str, list[Callable[[], None]]] = {
    "baseline": [],
    "partial_phone_index": [],
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
                    done = subprocess.run(
                        command,
                        env=ingest.server_env(target),
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
        same = "yes" if counts == reference else f"NO {counts}"
        print(
            f"{name:<20} {n / figures['wall']:>8,.0f} {cpu:>11.2f} {backend:>14}"
            f" {figures['statements'] / n:>8.1f} {gain:>16}  {same}"
        )
    print(f"rows: {reference}")
    for name, figures, _ in results:
        if figures.get("users_indexes"):
            print(f"{name}: users index scans (index, scans, entries read):")
            for index, scans, read in figures["users_indexes"]:
                print(f"    {index:<45} {scans:>9,} {read:>14,}")


if __name__ == "__main__":
    main()
