"""Durability (R-ING-4, R-ING-7): a real `audience serve` killed with SIGKILL mid-stream.

Two sender threads post /v1/batch requests to a real server process (on the test's SQLite file,
or on the suite's private PostgreSQL database with AUDIENCE_TEST_DATABASE_URL) while the test
kills the process with SIGKILL at random moments and starts it again. The server's own processor
runs all along, so kills land in the accept path and in the middle of processor batches alike.

What a sender does with a request that failed:
- the connection was refused (the server is down): nothing was sent, so it waits and sends again;
- the request was sent but no answer came back (the kill landed in between): *ambiguous*, it may
  or may not have been committed. Even-numbered batches are then sent again with the same
  messageIds, as the SDKs retry, which exercises dedupe of a batch that may be stored twice;
  odd-numbered ones are abandoned.
Every fourth acknowledged batch is also delivered a second time, as when a reply is lost on its
way back: both copies may then wait in the inbox at once, across restarts.

Then the processor drains the inbox (/healthz until `ingestion.waiting == 0`) and the test proves:
- every acknowledged (2xx) message is stored exactly once: one events row per track/page
  messageId, on the user of its userId, and identify's traits on that user, however many times
  it was delivered;
- no message of an ambiguous batch is stored twice, and a batch is all there or not at all (one
  request is one transaction);
- no profile is half-applied: each identify sets two traits together, and they are both there or
  both absent; each user's `page_views` counter equals its page events (a counter and an events
  row are written by the same processor transaction, and a retried page is not counted twice);
- nothing is left in the inbox and nothing failed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from audience.config import Settings
from audience.db import Database
from audience.events.models import Event
from audience.ingest.models import FailedMessage, InboxMessage, ProcessedMessage
from audience.users.models import User
from tests.conftest import Tenant

KILLS = 3
SENDERS = 2
USERS_PER_BATCH = 5  # each: identify, two tracks, one page -> 20 messages per batch
MAX_BATCHES_PER_SENDER = 400
REQUEST_TIMEOUT = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`python -m audience serve` on 127.0.0.1, restartable, killable with SIGKILL."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        env = {
            name: value for name, value in os.environ.items() if not name.startswith("AUDIENCE_")
        }
        env.update(AUDIENCE_DATA_DIR=str(settings.data_dir), AUDIENCE_LOG_LEVEL="warning")
        if settings.database_url:  # PostgreSQL: the suite's private database, shared with us
            env["AUDIENCE_DATABASE_URL"] = settings.database_url
        self.env = env
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = ""
        self.lives = 0
        self._lock = threading.Lock()

    def url(self) -> str:
        with self._lock:
            return self.base_url

    def start(self) -> None:
        port = _free_port()
        self.lives += 1
        log = self.log_dir / f"serve-{self.lives}.log"
        command = [sys.executable, "-m", "audience", "serve", "--host", "127.0.0.1"]
        with log.open("wb") as output:
            process = subprocess.Popen(
                [*command, "--port", str(port)],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self.process = process
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"audience serve exited with {process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    with self._lock:
                        self.base_url = base_url
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"audience serve was not healthy within 30s:\n{log.read_text()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks, no flushes, open transactions cut off."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)
        assert self.process.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def health(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url()}/healthz", timeout=5)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@dataclass
class Sent:
    """One batch as sent: its messages, and what became of the request."""

    messages: list[dict[str, Any]]
    acked: bool = False
    ambiguous: int = 0  # requests of this batch that were sent but got no answer
    redelivered: bool = False  # acknowledged, then sent (and acknowledged) once more
    attempts: int = 0


@dataclass
class Ledger:
    batches: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    errors: list[str] = field(default_factory=list)

    def acked_count(self) -> int:
        with self.lock:
            return sum(1 for batch in self.batches if batch.acked)


def _batch(sender: int, number: int) -> list[dict[str, Any]]:
    """USERS_PER_BATCH new people: identify (two traits together), two tracks and a page each."""
    messages: list[dict[str, Any]] = []
    for n in range(USERS_PER_BATCH):
        person = f"d{sender}-{number}-{n}"
        messages += [
            {
                "type": "identify",
                "messageId": f"{person}:identify",
                "userId": person,
                "traits": {"plan": f"plan-{person}", "seats": number * 100 + n},
            },
            {"type": "track", "messageId": f"{person}:t1", "userId": person, "event": "Ordered"},
            {
                "type": "page",
                "messageId": f"{person}:p1",
                "userId": person,
                "name": "Pricing",
                "properties": {"path": "/pricing"},
            },
            {"type": "track", "messageId": f"{person}:t2", "userId": person, "event": "Paid"},
        ]
    return messages


def _send(
    server: ServerProcess, token: str, sender: int, ledger: Ledger, stop: threading.Event
) -> None:
    with httpx.Client(timeout=REQUEST_TIMEOUT, auth=(token, "")) as client:
        for number in range(MAX_BATCHES_PER_SENDER):
            if stop.is_set():
                return
            sent = Sent(_batch(sender, number))
            with ledger.lock:
                ledger.batches.append(sent)
            deadline = time.monotonic() + 60
            while not sent.acked and time.monotonic() < deadline:
                sent.attempts += 1
                try:
                    response = client.post(
                        f"{server.url()}/v1/batch", json={"batch": sent.messages}
                    )
                except httpx.ConnectError:  # nothing was sent: the server is down, try again
                    time.sleep(0.05)
                    continue
                except httpx.TransportError:  # sent, but no answer: it may have been stored
                    sent.ambiguous += 1
                    if number % 2:
                        break  # abandoned: may or may not be stored, but never twice
                    time.sleep(0.05)
                    continue  # sent again with the same messageIds, as the SDKs retry
                if response.status_code == 503:  # nothing stored; Retry-After
                    time.sleep(0.2)
                    continue
                if response.status_code != 200:
                    ledger.errors.append(f"batch {sender}/{number}: {response.status_code}")
                    return
                reply = response.json()
                if reply.get("accepted") != len(sent.messages) or reply.get("rejected"):
                    ledger.errors.append(f"batch {sender}/{number}: {reply}")
                    return
                sent.acked = True
            if not sent.acked and not sent.ambiguous:
                ledger.errors.append(f"batch {sender}/{number}: never sent within 60s")
                return
            if sent.acked and number % 4 == 1:
                # Delivered again although acknowledged, as when a reply is lost on the way:
                # both copies may wait in the inbox together (R-ING-7 must hold across them).
                with contextlib.suppress(httpx.TransportError):
                    response = client.post(
                        f"{server.url()}/v1/batch", json={"batch": sent.messages}
                    )
                    sent.redelivered = response.status_code == 200
            time.sleep(0.01)  # a steady stream rather than a flood: keeps the drain short


def _wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def _drained(server: ServerProcess) -> bool:
    return bool(server.health()["ingestion"]["waiting"] == 0)


def test_acknowledged_messages_survive_sigkill_exactly_once(
    settings: Settings, database: Database, tenant: Tenant, tmp_path: Path
) -> None:
    server = ServerProcess(settings, tmp_path)
    ledger = Ledger()
    stop = threading.Event()
    rng = random.Random(20240601)
    senders = [
        threading.Thread(
            target=_send, args=(server, tenant.app_token, n, ledger, stop), daemon=True
        )
        for n in range(SENDERS)
    ]
    try:
        server.start()
        for thread in senders:
            thread.start()
        for _ in range(KILLS):
            # Let this life acknowledge some batches, then kill it at a random moment.
            floor = ledger.acked_count() + 3
            _wait_for(lambda floor=floor: ledger.acked_count() >= floor, 30, "acknowledgements")
            time.sleep(rng.uniform(0.02, 0.3))
            server.kill()
            time.sleep(rng.uniform(0.0, 0.3))  # senders meet a dead server for a while
            server.start()
        floor = ledger.acked_count() + 4
        _wait_for(lambda: ledger.acked_count() >= floor, 30, "acknowledgements after restarts")
        stop.set()
        for thread in senders:
            thread.join(timeout=90)
            assert not thread.is_alive(), "a sender did not finish"
        assert ledger.errors == []
        _wait_for(lambda: _drained(server), 180, "the processor to drain the inbox")
    finally:
        stop.set()
        server.stop()
    assert server.lives == KILLS + 1
    _check(database, tenant, ledger)


def _check(database: Database, tenant: Tenant, ledger: Ledger) -> None:
    with database.transaction(write=False) as session:
        inbox_left = session.scalar(
            select(func.count())
            .select_from(InboxMessage)
            .where(InboxMessage.environment_id == tenant.id)
        )
        failed = list(
            session.scalars(
                select(FailedMessage.error_message).where(FailedMessage.environment_id == tenant.id)
            )
        )
        events = session.execute(
            select(Event.message_id, Event.kind, User.user_id)
            .join(User, User.id == Event.user_id)
            .where(Event.environment_id == tenant.id)
        ).all()
        processed = list(
            session.scalars(
                select(ProcessedMessage.message_id).where(
                    ProcessedMessage.environment_id == tenant.id
                )
            )
        )
        users = session.execute(
            select(
                User.user_id,
                User.custom_attributes,
                User.page_views,
                User.merged_into_id,
            ).where(User.environment_id == tenant.id)
        ).all()
    assert inbox_left == 0
    assert failed == []

    copies = Counter(message_id for message_id, _, _ in events)
    assert [mid for mid, n in copies.items() if n > 1] == []  # nothing stored twice
    applied = set(copies) | set(processed)
    owner = {message_id: user_id for message_id, _, user_id in events}
    sent_ids = {m["messageId"] for batch in ledger.batches for m in batch.messages}
    assert applied <= sent_ids  # nothing out of thin air

    acked = [batch for batch in ledger.batches if batch.acked]
    ambiguous = [batch for batch in ledger.batches if not batch.acked]
    assert len(acked) >= 3 * KILLS + 4
    assert any(batch.redelivered for batch in acked)
    for batch in acked:
        for message in batch.messages:
            message_id = message["messageId"]
            if message["type"] == "identify":
                assert message_id in processed, f"acknowledged {message_id} is lost"
            else:  # track, page: one events row on the user of its userId
                assert copies[message_id] == 1, f"acknowledged {message_id} is lost"
                assert owner[message_id] == message["userId"]
    for batch in ambiguous:  # one request is one transaction: all of it or none of it
        present = [m["messageId"] in applied for m in batch.messages]
        assert all(present) or not any(present), batch.messages[0]["messageId"]

    page_events = Counter(user_id for _, kind, user_id in events if kind == "page")
    by_user_id = {}
    for user_id, custom, page_views, merged_into_id in users:
        assert merged_into_id is None  # distinct people: nothing may merge them
        assert user_id is not None
        by_user_id[user_id] = custom
        # the counter and the events rows of page calls are written together, and only once
        assert page_views == page_events[user_id], user_id
        # identify's two traits are written together or not at all
        plan, seats = custom.get("plan"), custom.get("seats")
        assert (plan is None) == (seats is None), f"{user_id} is half-applied: {custom}"
    for batch in acked:
        for message in batch.messages:
            if message["type"] == "identify":
                custom = by_user_id[message["userId"]]
                assert custom == message["traits"], message["userId"]
    print(
        f"durability: {len(ledger.batches)} batches, {len(acked)} acknowledged, "
        f"{sum(b.ambiguous for b in ledger.batches)} unanswered requests, "
        f"{len(ambiguous)} batches abandoned, "
        f"{sum(b.redelivered for b in ledger.batches)} delivered twice, {len(copies)} events"
    )
