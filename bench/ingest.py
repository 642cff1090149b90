"""Ingestion benchmark: a real `audience serve` driven over HTTP with realistic /v1/batch requests.

    .venv/bin/python bench/ingest.py --database sqlite|postgresql [--messages 200000]
        [--users 100000] [--concurrency 8] [--gzip] [--profile DIR] [--json FILE]

What it does, in one run:

1. Builds the workload up front (not timed): `--messages` messages in batches of 100, about
   15% identify / 55% track / 25% page / 5% group, over `--users` distinct people (each with a
   userId and a browser anonymousId; 10% of track/page calls carry only the anonymousId, as a
   browser does before login), realistic traits, properties and context (user agent, locale, ip,
   page, UTM on some URLs), ~40 KB per batch.
2. Starts `audience serve` on a free port of 127.0.0.1, on a fresh database (SQLite: a temporary
   data dir; PostgreSQL: a new database `bench_<random>` on --postgres-url, dropped at the end).
   The processor runs inside serve, as by default.
3. Posts every batch once with `--concurrency` keep-alive connections (a small raw HTTP/1.1
   client, so the load generator takes little of the machine's two cores), and polls /healthz.
   Reports accepted messages/s and accept latency; then waits until `ingestion.waiting == 0`:
   end-to-end processed messages/s = messages / (first request -> inbox empty).
4. Checks the outcome in the database (event rows, users, failed messages).
5. Raw floor, same run, same kind of database, fresh migrated schema, the server stopped: the same
   messages' rows inserted straight with the driver, one transaction per 500 messages (the
   processor's batch): one user upsert per message (executemany; jsonb `||` / `json_patch`
   merge of custom attributes), the users' ids read back (PostgreSQL: RETURNING; SQLite: one
   SELECT), then the events (PostgreSQL: binary COPY; SQLite: executemany). Ratio = end-to-end /
   raw.

`--profile DIR` samples the server with py-spy (`pip install py-spy`) during the accept phase and
during the drain, writes raw collapsed stacks there and prints the top costs of the processor.
Only 127.0.0.1 is ever contacted; every loop is bounded (one send per batch, at most 3 attempts,
a time limit on the drain).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gzip
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

HOST = "127.0.0.1"
BATCH = 100
RAW_CHUNK = 500  # the processor's batch size: one transaction per chunk in the raw floor
APP_TOKEN = "pk_bench_" + "b" * 24
API_KEY = "sk_bench_" + "k" * 40
MIX = (("identify", 15), ("track", 55), ("page", 25), ("group", 5))
ANONYMOUS_SHARE = 0.10  # track/page calls sent before login: anonymousId only

# --- workload ---------------------------------------------------------------------------------

USER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.6367.82 Mobile Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.67",
)
LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "pt-BR", "nl-NL", "pl-PL")
EVENTS = (
    "Product Viewed",
    "Product Added",
    "Product Removed",
    "Cart Viewed",
    "Checkout Started",
    "Checkout Step Completed",
    "Payment Info Entered",
    "Order Completed",
    "Coupon Applied",
    "Products Searched",
    "Product List Viewed",
    "Signed Up",
    "Signed In",
    "Signed Out",
    "Video Playback Started",
    "Video Playback Completed",
    "Feature Used",
    "Invite Sent",
    "Subscription Upgraded",
    "Support Ticket Opened",
)
CATEGORIES = ("shoes", "shirts", "bags", "books", "garden", "kitchen", "toys", "sports")
PATHS = (
    "/",
    "/pricing",
    "/docs",
    "/docs/install",
    "/blog",
    "/blog/launch",
    "/features",
    "/about",
    "/careers",
    "/contact",
    "/shop",
    "/shop/item",
    "/cart",
    "/checkout",
)
PLANS = ("free", "starter", "pro", "enterprise")
FIRST = (
    "Ann",
    "Ben",
    "Chloé",
    "Dmitri",
    "Eva",
    "Farah",
    "Gustav",
    "Hana",
    "Ivan",
    "Jun",
    "Kemal",
    "Lucía",
    "Mateo",
    "Nora",
    "Oskar",
    "Priya",
    "Quentin",
    "Rosa",
    "Sven",
    "Tara",
)
LAST = (
    "Smith",
    "Müller",
    "García",
    "Rossi",
    "Kowalski",
    "Nguyen",
    "Silva",
    "Dubois",
    "Jensen",
    "Novak",
    "Tanaka",
    "Okafor",
    "Larsen",
    "Moreau",
    "Schmidt",
    "Costa",
)
INDUSTRIES = ("software", "retail", "finance", "health", "education", "logistics", "media")
UTM = (
    ("google", "cpc", "spring_sale"),
    ("newsletter", "email", "may_digest"),
    ("twitter", "social", "launch"),
    ("partner", "referral", "affiliates"),
)
COMPANIES = 2000


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _user_ids(index: int) -> tuple[str, str]:
    return f"user-{index:06d}", f"anon-{index:06d}-{(index * 2654435761) % 2**32:08x}"


def _context(rng: random.Random, index: int, url: str | None) -> dict[str, Any]:
    context: dict[str, Any] = {
        "library": {"name": "analytics.js", "version": "next-1.72.0"},
        "userAgent": USER_AGENTS[index % len(USER_AGENTS)],
        "locale": LOCALES[index % len(LOCALES)],
        "ip": f"203.0.{index % 250}.{(index * 7) % 250 + 1}",
    }
    if url is not None:
        path = url.split("?")[0].removeprefix("https://shop.example.com")
        context["page"] = {
            "path": path,
            "referrer": "https://www.google.com/",
            "search": "",
            "title": f"Example shop - {path.strip('/') or 'home'}",
            "url": url,
        }
    return context


def _url(rng: random.Random) -> str:
    url = "https://shop.example.com" + rng.choice(PATHS)
    if rng.random() < 0.2:
        source, medium, campaign = rng.choice(UTM)
        url += f"?utm_source={source}&utm_medium={medium}&utm_campaign={campaign}"
    return url


def make_message(rng: random.Random, kind: str, user: int, moment: datetime) -> dict[str, Any]:
    user_id, anonymous_id = _user_ids(user)
    message: dict[str, Any] = {
        "type": kind,
        "messageId": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "anonymousId": anonymous_id,
        "userId": user_id,
        "timestamp": _stamp(moment - timedelta(milliseconds=rng.randrange(60_000))),
    }
    if kind in ("track", "page") and rng.random() < ANONYMOUS_SHARE:
        del message["userId"]
    if kind == "identify":
        first, last = FIRST[user % len(FIRST)], LAST[user % len(LAST)]
        message["traits"] = {
            "email": f"{first.lower()}.{user}@example.com",
            "firstName": first,
            "lastName": last,
            "plan": rng.choice(PLANS),
            "createdAt": _stamp(moment - timedelta(days=user % 900)),
            "logins": rng.randrange(1, 500),
            "newsletter": rng.random() < 0.4,
            "city": "Berlin",
            "country": "DE",
            "accountRole": rng.choice(("owner", "admin", "member")),
        }
        message["context"] = _context(rng, user, None)
    elif kind == "track":
        price = round(rng.uniform(3, 300), 2)
        quantity = rng.randrange(1, 4)
        message["event"] = rng.choice(EVENTS)
        message["properties"] = {
            "product_id": f"p-{rng.randrange(5000):05d}",
            "sku": f"SKU-{rng.randrange(10**6):06d}",
            "category": rng.choice(CATEGORIES),
            "price": price,
            "quantity": quantity,
            "revenue": round(price * quantity, 2),
            "currency": "EUR",
            "coupon": rng.choice(("", "SPRING10", "WELCOME")),
        }
        message["context"] = _context(rng, user, None)
    elif kind == "page":
        url = _url(rng)
        path = url.split("?")[0].removeprefix("https://shop.example.com")
        message["name"] = path.strip("/").replace("/", " ").title() or "Home"
        message["properties"] = {
            "url": url,
            "path": path,
            "title": f"Example shop - {path.strip('/') or 'home'}",
            "referrer": "https://www.google.com/",
            "search": "",
        }
        message["context"] = _context(rng, user, url)
        if "utm_source" in url:
            source, medium, campaign = (part.split("=")[1] for part in url.split("?")[1].split("&"))
            message["context"]["campaign"] = {"source": source, "medium": medium, "name": campaign}
    else:  # group
        company = rng.randrange(COMPANIES)
        message["groupId"] = f"company-{company:04d}"
        message["traits"] = {
            "name": f"Company {company}",
            "industry": INDUSTRIES[company % len(INDUSTRIES)],
            "plan": PLANS[company % len(PLANS)],
            "employees": 10 + company * 3,
            "website": f"https://company{company}.example.com",
        }
        message["context"] = _context(rng, user, None)
    return message


@dataclass
class Workload:
    bodies: list[bytes]  # the JSON bodies, uncompressed (the raw floor reads them back)
    requests: list[bytes]  # the full HTTP requests
    messages: int
    kinds: Counter[str]
    users_touched: int
    bytes_json: int
    bytes_sent: int


def build_workload(
    *, messages: int, users: int, port: int, use_gzip: bool, seed: int = 7
) -> Workload:
    rng = random.Random(seed)
    kinds = [kind for kind, weight in MIX for _ in range(weight)]
    authorization = base64.b64encode(f"{APP_TOKEN}:".encode()).decode()
    bodies, requests, counts, touched = [], [], Counter[str](), set()
    now = datetime.now(UTC)
    for start in range(0, messages, BATCH):
        batch = []
        for _ in range(min(BATCH, messages - start)):
            kind = rng.choice(kinds)
            user = rng.randrange(users)
            touched.add(user)
            counts[kind] += 1
            batch.append(make_message(rng, kind, user, now))
        body = orjson.dumps({"batch": batch, "sentAt": _stamp(now)})
        payload = gzip.compress(body, compresslevel=6) if use_gzip else body
        head = (
            f"POST /v1/batch HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
            f"Authorization: Basic {authorization}\r\nContent-Type: application/json\r\n"
            + ("Content-Encoding: gzip\r\n" if use_gzip else "")
            + f"Content-Length: {len(payload)}\r\n\r\n"
        )
        bodies.append(body)
        requests.append(head.encode() + payload)
    return Workload(
        bodies=bodies,
        requests=requests,
        messages=messages,
        kinds=counts,
        users_touched=len(touched),
        bytes_json=sum(map(len, bodies)),
        bytes_sent=sum(map(len, requests)),
    )


# --- databases --------------------------------------------------------------------------------


@dataclass
class Target:
    """A fresh database for one server (or for the raw floor), and how to reach it."""

    kind: str
    data_dir: Path
    url: str | None  # AUDIENCE_DATABASE_URL (PostgreSQL), None for SQLite in data_dir
    name: str | None = None  # PostgreSQL database name

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / "audience.db"


@contextlib.contextmanager
def fresh_database(kind: str, root: Path, label: str, postgres_url: str) -> Iterator[Target]:
    data_dir = root / label
    data_dir.mkdir()
    if kind == "sqlite":
        yield Target(kind, data_dir, None)
        return
    import psycopg

    name = f"bench_{secrets.token_hex(4)}_{label}"
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield Target(kind, data_dir, postgres_url.rsplit("/", 1)[0] + "/" + name, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def server_env(target: Target) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AUDIENCE_")}
    env.update(
        AUDIENCE_DATA_DIR=str(target.data_dir),
        AUDIENCE_BOOTSTRAP_APP_TOKEN=APP_TOKEN,
        AUDIENCE_BOOTSTRAP_API_KEY=API_KEY,
        AUDIENCE_BOOTSTRAP_ADMIN_PASSWORD="bench-password",
        AUDIENCE_LOG_LEVEL="warning",
    )
    if target.url:
        env["AUDIENCE_DATABASE_URL"] = target.url
    return env


def query(target: Target, sql: str) -> list[tuple[Any, ...]]:
    if target.kind == "sqlite":
        with contextlib.closing(sqlite3.connect(target.sqlite_path)) as connection:
            return connection.execute(sql).fetchall()
    import psycopg

    assert target.url is not None
    with psycopg.connect(target.url) as connection:
        return connection.execute(sql).fetchall()


# --- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(
    target: Target, port: int, log: Path, *, processor: bool = True
) -> Iterator[subprocess.Popen[bytes]]:
    command = [sys.executable, "-m", "audience", "serve", "--host", HOST, "--port", str(port)]
    env = server_env(target)
    if not processor:
        env["AUDIENCE_PROCESSOR"] = "false"
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                code = process.returncode
                raise SystemExit(f"audience serve exited ({code}):\n{log.read_text()}")
            if time.monotonic() > deadline:
                raise SystemExit(f"audience serve not healthy within 60 s:\n{log.read_text()}")
            with contextlib.suppress(OSError):
                status, _ = asyncio.run(_get(port, "/healthz"))
                if status == 200:
                    break
            time.sleep(0.2)
        yield process
    finally:
        stop(process)


@contextlib.contextmanager
def worker(target: Target, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`audience worker`: the processor in its own process (serve runs with it off)."""
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "audience", "worker"],
            env=server_env(target),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds(database: str | None) -> float | None:
    """CPU time of the PostgreSQL backends serving `database` (their title names it).

    Backends that ended since are missed; the server's pool keeps its connections, so this is
    close. Other sessions' databases on the same server are not counted.
    """
    if database is None:
        return None
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f" {database} ".encode() not in (entry / "cmdline").read_bytes():
                continue
            total += cpu_seconds(int(entry.name))
        except OSError:
            continue
    return total


@contextlib.contextmanager
def analyzing(target: Target, every: float) -> Iterator[None]:
    """ANALYZE the run's database every `every` seconds, as autovacuum would (PostgreSQL).

    For a server with autovacuum off: without statistics the planner can pick a wrong index for
    the processor's per-message lookups and read every user each time.
    """
    if not every or target.kind != "postgresql":
        yield
        return
    import threading

    import psycopg

    stop_event = threading.Event()

    def loop() -> None:
        assert target.url is not None
        with psycopg.connect(target.url, autocommit=True) as connection:
            while not stop_event.wait(every):
                connection.execute("ANALYZE")

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop_event.set()
        thread.join(timeout=60)


# --- a small HTTP/1.1 client (keep-alive, pre-built requests) ---------------------------------


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length, chunked, close = 0, False, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if not chunked:
        return status, await reader.readexactly(length), close
    parts = []
    while size := int((await reader.readline()).split(b";")[0], 16):
        parts.append(await reader.readexactly(size))
        await reader.readline()
    await reader.readline()
    return status, b"".join(parts), close


async def _get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
        status, body, _ = await asyncio.wait_for(_response(reader), 30)
        return status, body
    finally:
        writer.close()


@dataclass
class Accepted:
    accepted: int = 0
    rejected: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    started: float = 0.0
    finished: float = 0.0
    drained: float | None = None
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, inbox waiting)
    waiting_at_accept_end: int = 0


async def _post_all(port: int, workload: Workload, concurrency: int, result: Accepted) -> None:
    next_index = itertools.count()
    total = len(workload.requests)

    async def worker() -> None:
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        while (index := next(next_index)) < total:
            for attempt in range(3):
                try:
                    if connection is None:
                        connection = await asyncio.open_connection(HOST, port)
                    reader, writer = connection
                    started = time.perf_counter()
                    writer.write(workload.requests[index])
                    status, body, close = await asyncio.wait_for(_response(reader), 120)
                    result.latencies.append(time.perf_counter() - started)
                    if close:
                        writer.close()
                        connection = None
                except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
                    result.errors[type(exc).__name__] += 1
                    if connection is not None:
                        connection[1].close()
                    connection = None
                    continue
                if status == 200:
                    answer = orjson.loads(body)
                    result.accepted += answer["accepted"]
                    result.rejected += len(answer.get("rejected") or ())
                    break
                result.errors[f"HTTP {status}"] += 1
                if status != 503 or attempt == 2:
                    break
                await asyncio.sleep(1)
        if connection is not None:
            connection[1].close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _waiting(port: int) -> int | None:
    try:
        status, body = await _get(port, "/healthz")
    except (OSError, asyncio.IncompleteReadError, TimeoutError):
        return None
    return int(orjson.loads(body)["ingestion"]["waiting"]) if status == 200 else None


async def run_load(
    port: int, workload: Workload, concurrency: int, max_drain: float, on_accepted: Any
) -> Accepted:
    result = Accepted()
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            waiting = await _waiting(port)
            if waiting is not None:
                result.samples.append((time.perf_counter(), waiting))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 0.5)

    sampler = asyncio.create_task(sample())
    result.started = time.perf_counter()
    await _post_all(port, workload, concurrency, result)
    result.finished = time.perf_counter()
    done.set()
    await sampler
    on_accepted()
    first = True
    deadline = result.finished + max_drain
    while time.perf_counter() < deadline:
        waiting = await _waiting(port)
        now = time.perf_counter()
        if waiting is not None:
            result.samples.append((now, waiting))
            if first:
                result.waiting_at_accept_end = waiting
                first = False
            if waiting == 0:
                result.drained = now
                break
        await asyncio.sleep(0.1)
    return result


# --- the raw floor ----------------------------------------------------------------------------

_USER_COLUMNS = (
    "environment_id, user_key, user_id, email, first_name, last_name, gender, status, "
    "unsubscribed_from_emails, session_count, page_views, custom_attributes, attribute_times, "
    "first_seen_at, last_seen_at, last_request_at, browser, language, created_at, updated_at"
)
_EVENT_COLUMNS = (
    "environment_id, user_id, name, kind, timestamp, received_at, message_id, properties, "
    "page_url, session_id, source, library"
)
_STANDARD = {"email", "firstName", "lastName", "createdAt", "city", "country", "name"}


@dataclass
class RawRows:
    chunks: list[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[str]]]
    events: int


def raw_rows(workload: Workload, *, sqlite: bool) -> RawRows:
    """Per 500 messages: (user upsert rows, event rows with the user's userId, distinct userIds).

    Every message upserts its person (keyed by the person's userId, also for anonymous-only calls:
    the floor doesn't resolve identities); track and page also insert an event row.
    """

    def when(text: str) -> Any:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else moment

    received = datetime.now(UTC)
    received_value = when(_stamp(received))
    messages = (message for body in workload.bodies for message in orjson.loads(body)["batch"])
    chunks, events = [], 0
    while chunk := list(itertools.islice(messages, RAW_CHUNK)):
        users, rows, user_ids = [], [], set()
        for message in chunk:
            user_id = "user-" + message["anonymousId"].split("-")[1]
            user_ids.add(user_id)
            traits = message.get("traits", {}) if message["type"] == "identify" else {}
            custom = {key: value for key, value in traits.items() if key not in _STANDARD}
            moment = when(message["timestamp"])
            users.append(
                (
                    1,
                    uuid.uuid4().hex,
                    user_id,
                    traits.get("email"),
                    traits.get("firstName"),
                    traits.get("lastName"),
                    "unknown",
                    "user",
                    False,
                    1,
                    1 if message["type"] == "page" else 0,
                    orjson.dumps(custom).decode(),
                    "{}",
                    moment,
                    moment,
                    moment,
                    "Chrome",
                    message["context"]["locale"],
                    received_value,
                    received_value,
                )
            )
            if message["type"] in ("track", "page"):
                properties = message["properties"]
                rows.append(
                    (
                        1,
                        user_id,
                        message.get("event") or message.get("name"),
                        message["type"],
                        moment,
                        received_value,
                        message["messageId"],
                        orjson.dumps(properties).decode(),
                        properties.get("url"),
                        None,
                        "ingest",
                        "analytics.js",
                    )
                )
        events += len(rows)
        chunks.append((users, rows, sorted(user_ids)))
    return RawRows(chunks, events)


def _raw_environment_sql(sqlite: bool) -> str:
    now = "CURRENT_TIMESTAMP" if sqlite else "now()"
    return (
        "INSERT INTO environments (id, name, slug, app_token, settings, created_at) "
        f"VALUES (1, 'Raw', 'raw', 'pk_raw', '{{}}', {now})"
    )


def raw_sqlite(target: Target, rows: RawRows) -> float:
    connection = sqlite3.connect(target.sqlite_path, isolation_level=None)
    try:
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "foreign_keys=ON"):
            connection.execute(f"PRAGMA {pragma}")
        connection.execute(_raw_environment_sql(sqlite=True))
        upsert = (
            f"INSERT INTO users ({_USER_COLUMNS}) VALUES ({', '.join('?' * 20)}) "
            "ON CONFLICT (environment_id, user_id) DO UPDATE SET "
            "email = coalesce(excluded.email, users.email), "
            "first_name = coalesce(excluded.first_name, users.first_name), "
            "last_name = coalesce(excluded.last_name, users.last_name), "
            "custom_attributes = json_patch(users.custom_attributes, excluded.custom_attributes), "
            "session_count = users.session_count + 1, "
            "page_views = users.page_views + excluded.page_views, "
            "last_seen_at = max(users.last_seen_at, excluded.last_seen_at), "
            "updated_at = excluded.updated_at"
        )
        insert = (
            f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({', '.join('?' * 12)}) "
            "ON CONFLICT (environment_id, message_id) DO NOTHING"
        )
        started = time.perf_counter()
        for users, events, user_ids in rows.chunks:
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(upsert, users)
            marks = ", ".join("?" * len(user_ids))
            select = (
                f"SELECT user_id, id FROM users WHERE environment_id = 1 AND user_id IN ({marks})"
            )
            ids = dict(connection.execute(select, user_ids))
            connection.executemany(insert, [(e[0], ids[e[1]], *e[2:]) for e in events])
            connection.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        connection.close()


def raw_postgresql(target: Target, rows: RawRows) -> float:
    import psycopg

    assert target.url is not None
    with psycopg.connect(target.url) as connection:
        connection.execute(_raw_environment_sql(sqlite=False))
        connection.commit()
        upsert = (
            f"INSERT INTO users ({_USER_COLUMNS}) VALUES ({', '.join(['%s'] * 20)}) "
            "ON CONFLICT (environment_id, user_id) DO UPDATE SET "
            "email = coalesce(EXCLUDED.email, users.email), "
            "first_name = coalesce(EXCLUDED.first_name, users.first_name), "
            "last_name = coalesce(EXCLUDED.last_name, users.last_name), "
            "custom_attributes = users.custom_attributes || EXCLUDED.custom_attributes, "
            "session_count = users.session_count + 1, "
            "page_views = users.page_views + EXCLUDED.page_views, "
            "last_seen_at = greatest(users.last_seen_at, EXCLUDED.last_seen_at), "
            "updated_at = EXCLUDED.updated_at"
        )
        copy_sql = f"COPY events ({_EVENT_COLUMNS}) FROM STDIN (FORMAT BINARY)"
        types = [
            "int8",
            "int8",
            "varchar",
            "varchar",
            "timestamptz",
            "timestamptz",
            "varchar",
            "jsonb",
            "text",
            "varchar",
            "varchar",
            "varchar",
        ]
        started = time.perf_counter()
        for users, events, _ in rows.chunks:
            with connection.cursor() as cursor:
                # The ids come back with the upserts (one pipeline), not from a SELECT: on a
                # fresh table without statistics that SELECT can read the wrong index.
                cursor.executemany(upsert + " RETURNING user_id, id", users, returning=True)
                ids = {}
                while True:
                    for user_id, id_ in cursor.fetchall():
                        ids[user_id] = id_
                    if not cursor.nextset():
                        break
                with cursor.copy(copy_sql) as copy:
                    copy.set_types(types)
                    for event in events:
                        copy.write_row((event[0], ids[event[1]], *event[2:]))
            connection.commit()
        return time.perf_counter() - started


# --- profiling --------------------------------------------------------------------------------


def start_profile(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("py-spy not found (pip install py-spy): no profile", file=sys.stderr)
        return None
    command = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--rate",
        "100",
        "--format",
        "raw",
        "--nolineno",
        "--threads",
        "--idle",
        "--nonblocking",
        "-o",
        str(output),
    ]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()


def _frame(frame: str) -> str:
    """`Class.func (audience/ingest/effects.py)` -> `audience/ingest/effects.py:Class.func`."""
    name, _, where = frame.partition(" (")
    return f"{where.rstrip(')')}:{name}" if where else name


# Library frames worth naming beside audience's own: where the ORM and the driver spend.
_LIBRARY = (
    "sqlalchemy/orm/session.py:Session._autoflush",
    "sqlalchemy/orm/session.py:Session.flush",
    "sqlalchemy/sql/elements.py:ClauseElement._compile_w_cache",
    "sqlalchemy/engine/default.py:DefaultDialect.do_execute",
    "sqlalchemy/engine/default.py:DefaultDialect.do_executemany",
    "sqlalchemy/engine/default.py:DefaultDialect.do_commit",
    "psycopg/connection.py:Connection.wait",
)


def summarise_profile(path: Path, top: int = 22) -> str:
    """Where the processor thread's time goes (stacks through `run_forever`), by share.

    Inclusive shares of audience's functions and of a few library frames (the ORM's flushes, SQL
    compilation, the driver's calls), then the leaf frames (self time).
    """
    if not path.exists():
        return f"(no profile at {path})"
    inclusive, own, total = Counter[str](), Counter[str](), 0
    idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        frames = [_frame(frame) for frame in stack.split(";")]
        if not count_text.isdigit() or not any(
            frame.endswith("Processor.run_forever") for frame in frames
        ):
            continue  # another thread's (the webhook sender's, too), or a line cut short
        count = int(count_text)
        total += count
        leaf = frames[-1]
        if leaf.endswith(("Condition.wait", "Event.wait", "run_forever")):
            idle += count
        own[leaf] += count
        for name in set(frames):
            inclusive[name] += count
    if not total:
        return "(no processor samples)"
    lines = [
        f"processor thread: {total} samples at 100/s, {idle / total:.0%} idle",
        "  inclusive, audience functions:",
    ]
    ours = [
        (name, count)
        for name, count in inclusive.most_common()
        if name.startswith("audience/") and not name.endswith("run_forever")
    ]
    lines += [f"    {count / total:6.1%}  {name}" for name, count in ours[:top]]
    lines.append("  inclusive, ORM and driver:")
    lines += [f"    {inclusive[name] / total:6.1%}  {name}" for name in _LIBRARY if inclusive[name]]
    lines.append("  self (leaf frames):")
    lines += [f"    {count / total:6.1%}  {name}" for name, count in own.most_common(top // 2)]
    return "\n".join(lines)


# --- main -------------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else float("nan")


def revision() -> str:
    """The commit benchmarked, `+changes` when the work tree differs from it."""
    where = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=where, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + (" + uncommitted changes in src/" if dirty else "")


def _cpu_marks(pids: dict[str, int], database: str | None) -> dict[str, float | None]:
    marks: dict[str, float | None] = {name: cpu_seconds(pid) for name, pid in pids.items()}
    marks["postgres"] = postgres_cpu_seconds(database)
    marks["client"] = time.process_time()
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--gzip", action="store_true", help="gzip the request bodies")
    parser.add_argument(
        "--worker",
        action="store_true",
        help="run the processor as `audience worker` beside serve (AUDIENCE_PROCESSOR=false)",
    )
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--analyze",
        type=float,
        default=0,
        metavar="SECONDS",
        help="PostgreSQL: ANALYZE the database this often (for a server with autovacuum off)",
    )
    parser.add_argument("--max-drain", type=float, default=1800, help="seconds to wait for it")
    parser.add_argument("--profile", type=Path, help="directory for py-spy profiles")
    parser.add_argument("--no-raw", action="store_true", help="skip the raw floor")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON too")
    args = parser.parse_args()
    if not args.postgres_url.startswith(("postgresql://postgres@127.0.0.1", "postgresql://127.")):
        parser.error("only a PostgreSQL server on 127.0.0.1 is used")

    args.revision = revision()
    port = free_port()
    started = time.perf_counter()
    workload = build_workload(
        messages=args.messages, users=args.users, port=port, use_gzip=args.gzip
    )
    print(
        f"workload: {workload.messages:,} messages in {len(workload.requests):,} batches, "
        f"{dict(workload.kinds)}, {workload.users_touched:,} distinct users, "
        f"{workload.bytes_json / len(workload.bodies) / 1024:.1f} KB JSON per batch"
        + (
            f", {workload.bytes_sent / len(workload.requests) / 1024:.1f} KB gzipped"
            if args.gzip
            else ""
        )
        + f" (built in {time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    load_before = os.getloadavg()
    root = Path(tempfile.mkdtemp(prefix="audience-bench-"))
    try:
        with (
            fresh_database(args.database, root, "serve", args.postgres_url) as target,
            contextlib.ExitStack() as stack,
        ):
            server = stack.enter_context(
                serve(target, port, root / "serve.log", processor=not args.worker)
            )
            pids = {"serve": server.pid}
            if target.kind == "postgresql":
                args.autovacuum = query(target, "SHOW autovacuum")[0][0]
            stack.enter_context(analyzing(target, args.analyze))
            if args.worker:
                pids["worker"] = stack.enter_context(worker(target, root / "worker.log")).pid
            spied = pids.get("worker", server.pid)
            profiler = None
            if args.profile:
                args.profile.mkdir(parents=True, exist_ok=True)
                profiler = start_profile(spied, args.profile / "accept.txt")
            cpu = {"start": _cpu_marks(pids, target.name)}

            def accepted() -> None:
                nonlocal profiler
                cpu["accept"] = _cpu_marks(pids, target.name)
                if args.profile:
                    previous = profiler
                    profiler = start_profile(spied, args.profile / "drain.txt")
                    stop_profile(previous)

            print(f"sending with {args.concurrency} connections to {HOST}:{port} ...", flush=True)
            result = asyncio.run(
                run_load(port, workload, args.concurrency, args.max_drain, accepted)
            )
            cpu["drain"] = _cpu_marks(pids, target.name)
            stop_profile(profiler)
            stack.close()  # stop the processes before counting (the database stays till the end)
            counts = {
                name: query(target, f"SELECT count(*) FROM {table}")[0][0]
                for name, table in (
                    ("event rows", "events"),
                    ("users", "users"),
                    ("identities", "identities"),
                    ("companies", "companies"),
                    ("attribute changes", "attribute_changes"),
                    ("failed messages", "failed_messages"),
                    ("inbox left", "inbox"),
                )
            }
        raw_seconds, raw_events = None, 0
        if not args.no_raw:
            print("raw floor: inserting the same rows with the driver ...", flush=True)
            rows = raw_rows(workload, sqlite=args.database == "sqlite")
            raw_events = rows.events
            with fresh_database(args.database, root, "raw", args.postgres_url) as raw:
                subprocess.run(
                    [sys.executable, "-m", "audience", "migrate"],
                    env=server_env(raw),
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                runner = raw_sqlite if args.database == "sqlite" else raw_postgresql
                raw_seconds = runner(raw, rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    load_after = os.getloadavg()
    report(args, workload, result, cpu, counts, raw_seconds, raw_events, load_before, load_after)


def report(
    args: argparse.Namespace,
    workload: Workload,
    result: Accepted,
    cpu: dict[str, dict[str, float | None]],
    counts: dict[str, int],
    raw_seconds: float | None,
    raw_events: int,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
) -> None:
    n = workload.messages
    accept_seconds = result.finished - result.started
    expected_events = workload.kinds["track"] + workload.kinds["page"]
    accepted_rate = result.accepted / accept_seconds
    e2e_seconds = (result.drained or time.perf_counter()) - result.started
    processed_by_accept_end = result.accepted - result.waiting_at_accept_end
    drain_seconds = e2e_seconds - accept_seconds
    e2e_rate = (result.accepted if result.drained else processed_by_accept_end) / e2e_seconds
    raw_rate = n / raw_seconds if raw_seconds else None
    p50, p99 = percentile(result.latencies, 0.5), percentile(result.latencies, 0.99)
    mode = "processor in `audience worker`" if args.worker else "processor inside serve"
    if args.database == "postgresql":
        mode += f"; server autovacuum {getattr(args, 'autovacuum', '?')}"
        if args.analyze:
            mode += f"; bench runs ANALYZE every {args.analyze:g} s"
    table: list[tuple[str, str]] = [
        ("audience revision (at start)", args.revision),
        ("database", args.database + (", gzip" if args.gzip else "") + f"; {mode}"),
        (
            "messages sent / accepted / rejected",
            f"{n:,} / {result.accepted:,} / {result.rejected:,}",
        ),
        ("request errors", ", ".join(f"{k}: {v}" for k, v in result.errors.items()) or "none"),
        ("accept phase", f"{accept_seconds:.1f} s"),
        ("ACCEPTED messages/s", f"{accepted_rate:,.0f}"),
        (
            "accept latency p50 / p99 (100-message batch)",
            f"{p50 * 1000:,.0f} / {p99 * 1000:,.0f} ms",
        ),
        (
            "processed while accepting",
            f"{processed_by_accept_end:,} ({processed_by_accept_end / accept_seconds:,.0f}/s)",
        ),
        (
            "drain after accept",
            f"{result.waiting_at_accept_end:,} in {drain_seconds:.1f} s "
            f"({result.waiting_at_accept_end / max(drain_seconds, 1e-9):,.0f}/s)"
            + ("" if result.drained else " - NOT DRAINED, --max-drain reached"),
        ),
        ("end-to-end (first request -> inbox empty)", f"{e2e_seconds:.1f} s"),
        ("END-TO-END processed messages/s", f"{e2e_rate:,.0f}"),
        ("  of which event rows/s (track + page)", f"{e2e_rate * expected_events / n:,.0f}"),
    ]
    if raw_seconds:
        assert raw_rate is not None
        table += [
            (
                "RAW floor (driver upserts + events, 500/txn)",
                f"{raw_seconds:.1f} s = {raw_rate:,.0f} messages/s "
                f"({raw_events / raw_seconds:,.0f} event rows/s)",
            ),
            ("RATIO end-to-end / raw", f"{e2e_rate / raw_rate:.1%}"),
        ]

    def spent(name: str, phase: str, before: str) -> float:
        end, start = cpu[phase].get(name), cpu[before].get(name)
        return (end or 0.0) - (start or 0.0)

    for name in ("serve", "worker", "postgres"):
        if cpu["start"].get(name) is None:
            continue
        accept_cpu, drain_cpu = spent(name, "accept", "start"), spent(name, "drain", "accept")
        table.append(
            (
                f"{name} CPU: accept / drain phase (ms per message)",
                f"{accept_cpu:.1f} s / {drain_cpu:.1f} s "
                f"({(accept_cpu + drain_cpu) * 1000 / n:.2f} ms per message in all)",
            )
        )
    table.append(("load generator CPU", f"{spent('client', 'accept', 'start'):.1f} s"))
    table.append(
        (
            "machine load average before / after (2 cores)",
            f"{load_before[0]:.1f} / {load_after[0]:.1f}",
        )
    )
    table.append(
        ("expected event rows / users", f"{expected_events:,} / {workload.users_touched:,}")
    )
    table += [(name, f"{value:,}") for name, value in counts.items()]
    width = max(len(name) for name, _ in table)
    print()
    print(f"{'audience ingestion benchmark':<{width}}  (100 messages per batch)")
    print("-" * (width + 42))
    for name, value in table:
        print(f"{name:<{width}}  {value}")
    print()
    if args.profile:
        for phase in ("accept", "drain"):
            print(f"== py-spy, {phase} phase ({args.profile / (phase + '.txt')}) ==")
            print(summarise_profile(args.profile / f"{phase}.txt"))
            print()
    if args.json:
        figures = {
            "revision": args.revision,
            "database": args.database,
            "gzip": args.gzip,
            "worker": args.worker,
            "analyze": args.analyze,
            "messages": n,
            "users": args.users,
            "concurrency": args.concurrency,
            "kinds": dict(workload.kinds),
            "accepted": result.accepted,
            "accept_seconds": accept_seconds,
            "accepted_per_second": accepted_rate,
            "latency_p50_ms": p50 * 1000,
            "latency_p99_ms": p99 * 1000,
            "processed_while_accepting": processed_by_accept_end,
            "drain_seconds": drain_seconds,
            "drained": result.drained is not None,
            "end_to_end_seconds": e2e_seconds,
            "end_to_end_per_second": e2e_rate,
            "raw_seconds": raw_seconds,
            "raw_per_second": raw_rate,
            "ratio": (e2e_rate / raw_rate) if raw_rate else None,
            "cpu": cpu,
            "counts": counts,
            "load": [load_before, load_after],
        }
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
