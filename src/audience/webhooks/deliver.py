"""The webhook sender: takes due deliveries from the outbox, POSTs them, records the outcome.

A pass claims a few due deliveries in a short transaction (on PostgreSQL `FOR UPDATE SKIP
LOCKED`, so two senders never take the same row; SQLite has one writer) by moving their
`next_attempt_at` past a lease, sends them with no transaction open, then records each outcome.
A sender that dies mid-send leaves the row to be retried when the lease ends: delivery is at
least once, and receivers dedupe on `X-Audience-Delivery`.

2xx is success. Anything else (another status, a redirect, a timeout, a refused address) is a
failed attempt, retried after 30 s, doubling, at most 2 h apart, until MAX_ATTEMPTS.

An idle sender looks at the outbox once a second, and at once when a commit in its own process
has queued deliveries (`_queued`): a segment change reaches its webhook well within a second.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session, object_session

from audience import __version__
from audience.db import Database, utcnow
from audience.schemas import unix
from audience.webhooks import signing, ssrf
from audience.webhooks.models import (
    FAILED,
    PENDING,
    SUCCEEDED,
    WebhookDelivery,
    WebhookSubscription,
)
from audience.webhooks.service import prune_deliveries

log = logging.getLogger("audience.webhooks")

MAX_ATTEMPTS = 10
FIRST_DELAY = 30.0  # seconds before the second attempt; doubles after each failure
MAX_DELAY = 2 * 3600.0
BATCH_SIZE = 10
TIMEOUT = httpx.Timeout(10.0, connect=5.0)
DEADLINE = 20.0  # seconds for a whole attempt, however slowly a receiver trickles bytes
RESPONSE_CAP = 64 * 1024  # bytes of a response read; the rest is never downloaded
KEPT_RESPONSE = 1000  # characters of it kept in the delivery log
LEASE = timedelta(seconds=60 + BATCH_SIZE * DEADLINE)  # > the time a pass may take
PRUNE_EVERY = 3600.0  # seconds between prunings of the delivery log
PRUNE_CHUNK = 5000

Clock = Callable[[], datetime]

_queued = threading.Event()  # a commit in this process queued deliveries: senders look now
_QUEUED_KEY = "webhooks_queued"


@event.listens_for(WebhookDelivery, "after_insert")
def _note_queued(_mapper: Any, _connection: Any, delivery: WebhookDelivery) -> None:
    session = object_session(delivery)
    if session is not None:
        session.info[_QUEUED_KEY] = True


# Both events also fire when a savepoint is released or rolled back: only the outermost
# transaction's end counts.
@event.listens_for(Session, "after_commit")
def _wake_senders(session: Session) -> None:
    if not session.in_nested_transaction() and session.info.pop(_QUEUED_KEY, False):
        _queued.set()


@event.listens_for(Session, "after_rollback")
def _forget_queued(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(_QUEUED_KEY, None)


def backoff(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt."""
    return float(min(FIRST_DELAY * 2 ** (attempts - 1), MAX_DELAY))


@dataclass(frozen=True)
class Claimed:
    """A delivery taken for one attempt, with what sending it needs."""

    id: int
    environment_id: int
    topic: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    url: str
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    response: str | None = None
    retry_after: float | None = None


def claim(
    session: Session, *, now: datetime, limit: int, lease: timedelta = LEASE
) -> list[Claimed]:
    """Take up to `limit` due deliveries (oldest due first) of active subscriptions."""
    rows = session.execute(
        select(WebhookDelivery, WebhookSubscription)
        .join(WebhookSubscription, WebhookSubscription.id == WebhookDelivery.subscription_id)
        .where(
            WebhookDelivery.status == PENDING,
            WebhookDelivery.next_attempt_at <= now,
            WebhookSubscription.active.is_(True),
        )
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
        .with_for_update(of=WebhookDelivery, skip_locked=True)
    ).all()
    if not rows:
        return []
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_([delivery.id for delivery, _ in rows]))
        .values(next_attempt_at=now + lease),
        execution_options={"synchronize_session": False},
    )
    claimed = []
    for delivery, subscription in rows:
        signing_secrets = [subscription.secret]
        expires = subscription.previous_secret_expires_at
        if subscription.previous_secret and expires is not None and expires > now:
            signing_secrets.append(subscription.previous_secret)
        claimed.append(
            Claimed(
                id=delivery.id,
                environment_id=delivery.environment_id,
                topic=delivery.topic,
                payload=dict(delivery.payload),
                attempts=delivery.attempts,
                created_at=delivery.created_at,
                url=subscription.url,
                secrets=tuple(signing_secrets),
            )
        )
    return claimed


def record(session: Session, claimed: Claimed, outcome: Outcome, *, now: datetime) -> str:
    """Store an attempt's outcome; returns the delivery's new status."""
    attempts = claimed.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "last_attempt_at": now,
        "last_status_code": outcome.status_code,
        "last_error": None if outcome.error is None else outcome.error[:1000],
        "last_response": outcome.response,
    }
    if outcome.ok:
        values |= {"status": SUCCEEDED, "delivered_at": now, "next_attempt_at": None}
    elif attempts >= MAX_ATTEMPTS:
        values |= {"status": FAILED, "next_attempt_at": None}
    else:
        delay = max(backoff(attempts), min(outcome.retry_after or 0.0, MAX_DELAY))
        values |= {"next_attempt_at": now + timedelta(seconds=delay)}
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.id, WebhookDelivery.status == PENDING)
        .values(**values),
        execution_options={"synchronize_session": False},
    )
    return str(values.get("status", PENDING))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def _text(raw: bytes) -> str | None:
    if not raw:
        return None
    # PostgreSQL text can't hold NUL.
    return raw.decode("utf-8", "replace").replace("\x00", "")[:KEPT_RESPONSE] or None


class Deliverer:
    """Sends due webhook deliveries: `run_once` for one pass, `run_forever` in a thread."""

    def __init__(
        self,
        database: Database,
        *,
        allow_private: bool | None = None,
        clock: Clock = utcnow,
        batch_size: int = BATCH_SIZE,
        timeout: httpx.Timeout = TIMEOUT,
        deadline: float = DEADLINE,
        resolve: ssrf.Resolver = ssrf.system_resolve,
    ) -> None:
        self.database = database
        if allow_private is None:
            allow_private = database.settings.webhook_allow_private
        self.allow_private = allow_private
        self.clock = clock
        self.batch_size = batch_size
        self.deadline = deadline
        self.resolve = resolve
        # No proxies from the environment (they would bypass the address check), no redirects.
        self.client = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)
        self.log_days = database.settings.webhook_log_days
        self.pruned_at = -PRUNE_EVERY  # monotonic seconds: the first loop prunes

    def close(self) -> None:
        self.client.close()

    def run_once(self) -> int:
        """Attempt the due deliveries of one pass; returns how many were attempted."""
        # A read first: an idle sender must not take SQLite's writer every second.
        now = self.clock()
        with self.database.transaction(write=False) as session:
            due = session.scalar(
                select(WebhookDelivery.id)
                .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
                .limit(1)
            )
        if due is None:
            return 0
        with self.database.transaction() as session:
            claimed = claim(session, now=self.clock(), limit=self.batch_size)
        for delivery in claimed:
            outcome = self.send(delivery)
            with self.database.transaction() as session:
                status = record(session, delivery, outcome, now=self.clock())
            log.info(
                "webhook delivery %s (%s) attempt %s: %s",
                delivery.id,
                delivery.topic,
                delivery.attempts + 1,
                status if outcome.ok else f"{status}, {outcome.error}",
            )
        return len(claimed)

    def prune(self) -> int:
        """Drop finished deliveries older than AUDIENCE_WEBHOOK_LOG_DAYS from the log, a chunk
        per transaction (short write locks); returns how many went."""
        self.pruned_at = time.monotonic()
        if not self.log_days:
            return 0
        before = self.clock() - timedelta(days=self.log_days)
        total = 0
        while True:
            with self.database.transaction() as session:
                pruned = prune_deliveries(session, before=before, limit=PRUNE_CHUNK)
            total += pruned
            if pruned < PRUNE_CHUNK:
                return total

    def drain(self) -> int:
        """Attempt until nothing is due (tests, `audience worker --once`)."""
        total = 0
        while attempted := self.run_once():
            total += attempted
        return total

    def run_forever(self, stop: threading.Event, *, idle_seconds: float = 1.0) -> None:
        try:
            while not stop.is_set():
                try:
                    if time.monotonic() - self.pruned_at >= PRUNE_EVERY:
                        self.prune()
                    if self.run_once():
                        continue
                except Exception:  # keep going: the database may be back in a moment
                    log.exception("webhook sender error")
                    stop.wait(idle_seconds)
                    continue
                self._idle(stop, idle_seconds)
        finally:
            self.close()

    @staticmethod
    def _idle(stop: threading.Event, seconds: float) -> None:
        """Until `seconds` pass, a local commit queues deliveries, or `stop`."""
        deadline = time.monotonic() + seconds
        while not (stop.is_set() or _queued.wait(0.5) or time.monotonic() > deadline):
            pass
        _queued.clear()  # before the next look, so a commit during it wakes us again

    def body(self, delivery: Claimed) -> bytes:
        envelope = {
            "id": str(delivery.id),
            "topic": delivery.topic,
            "created_at": unix(delivery.created_at),
            "environment_id": str(delivery.environment_id),
            "data": delivery.payload,
        }
        return orjson.dumps(envelope)

    def send(self, delivery: Claimed) -> Outcome:
        """One attempt: never raises, whatever the receiver does."""
        body = self.body(delivery)
        timestamp = int(self.clock().timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"audience-webhooks/{__version__}",
            "Accept-Encoding": "identity",
            "X-Audience-Delivery": str(delivery.id),
            "X-Audience-Topic": delivery.topic,
            "X-Audience-Attempt": str(delivery.attempts + 1),
            signing.HEADER: signing.header(delivery.secrets, timestamp, body),
        }
        try:
            url = ssrf.parse(delivery.url)
            targets = ssrf.addresses(url, allow_private=self.allow_private, resolve=self.resolve)
        except ssrf.Refused as refused:
            return Outcome(ok=False, error=f"refused: url {refused}")
        error = "no address to connect to"
        for address in targets[:4]:
            try:
                return self._post(url, address, headers, body)
            except httpx.ConnectError as exc:  # the next address of the host may answer
                error = f"connection failed: {str(exc) or type(exc).__name__}"
            except httpx.TimeoutException as exc:
                return Outcome(ok=False, error=f"timeout: {str(exc) or type(exc).__name__}")
            except (httpx.HTTPError, OSError, ValueError) as exc:
                return Outcome(ok=False, error=f"{type(exc).__name__}: {exc}")
        return Outcome(ok=False, error=error)

    def _post(
        self, url: httpx.URL, address: ssrf.IPAddress, headers: dict[str, str], body: bytes
    ) -> Outcome:
        # Connect to the address that was checked, with the URL's own Host header and TLS name.
        pinned = url.copy_with(host=str(address))
        headers = {**headers, "Host": url.netloc.decode("ascii")}
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        started = time.monotonic()
        with self.client.stream(
            "POST", pinned, content=body, headers=headers, extensions=extensions
        ) as response:
            received = bytearray()
            for chunk in response.iter_raw():
                received += chunk
                if len(received) >= RESPONSE_CAP or time.monotonic() - started > self.deadline:
                    break
            code = response.status_code
        ok = 200 <= code < 300
        return Outcome(
            ok=ok,
            status_code=code,
            error=None if ok else f"HTTP {code}",
            response=_text(bytes(received)),
            retry_after=None if ok else _retry_after(response),
        )
