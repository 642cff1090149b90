"""Webhook subscriptions, the outbox they fill (`queue_event`), and the delivery log.

`queue_event` runs in the caller's transaction, so a change that rolls back sends nothing and a
committed one is delivered at least once. It is on the ingestion path (once per new user): the
environment's active subscriptions are read once per transaction and kept in `session.info`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, delete, func, inspect, select
from sqlalchemy.orm import Session

from audience.db import get_scoped, utcnow
from audience.errors import AudienceError, Conflict
from audience.pagination import Order, Page, PageParams, paginate
from audience.users.models import User
from audience.webhooks import signing, ssrf
from audience.webhooks.models import (
    FAILED,
    MAKE_PAYLOAD,
    PENDING,
    SUCCEEDED,
    WebhookDelivery,
    WebhookSubscription,
)

TOPICS = (
    "segment.entered",
    "segment.exited",
    "user.created",
    "user.deleted",
    "user.merged",
    "user.unmerged",
)
PING = "ping"  # sent on request to one subscription; not subscribable
MAX_SUBSCRIPTIONS = 100  # per environment: bounds the fan-out of one change
_CACHE = "audience.webhooks.subscriptions"

Data = Mapping[str, Any] | Callable[[], Mapping[str, Any]]


Subscribed = list[tuple[int, frozenset[str]]]


def _subscribed(session: Session, environment_id: int) -> Subscribed:
    """(id, topics) of the environment's active subscriptions, read once per transaction."""
    cached: tuple[object, dict[int, Subscribed]] | None = session.info.get(_CACHE)
    if cached is not None and cached[0] is session.get_transaction():
        if environment_id in cached[1]:
            return cached[1][environment_id]
    else:
        cached = None
    query = select(WebhookSubscription.id, WebhookSubscription.topics).where(
        WebhookSubscription.environment_id == environment_id,
        WebhookSubscription.active.is_(True),
    )
    with session.no_autoflush:  # don't flush the caller's pending rows (ingestion batches them)
        found = [(id, frozenset(topics or ())) for id, topics in session.execute(query)]
    if cached is None:
        # Keyed by the transaction the query ran in: a later transaction reads afresh.
        cached = (session.get_transaction(), {})
        session.info[_CACHE] = cached
    cached[1][environment_id] = found
    return found


def _forget(session: Session) -> None:
    """Subscriptions changed in this transaction: the next queue_event reads them again."""
    session.info.pop(_CACHE, None)


def queue_event(
    session: Session, *, environment_id: int, topic: str, data: Data, user: User | None = None
) -> int:
    """Queue `topic` for every active subscription of the environment listening to it.

    `data` is the payload (see docs/webhooks.md), or a function making it, called only when
    someone listens. `user` is the user the event is about: when it is not inserted yet, the
    payload is made when the flush inserts it (so the user has its id). Returns how many
    deliveries were queued.
    """
    if topic not in TOPICS:
        raise ValueError(f"unknown webhook topic {topic!r}")
    listening = [id for id, topics in _subscribed(session, environment_id) if topic in topics]
    if not listening:
        return 0
    # Not inserted yet (its id may be allocated already, as the processor does).
    pending_user = user is not None and (user.id is None or not inspect(user).persistent)
    payload: dict[str, Any] = {}
    if not pending_user:
        payload = dict(data() if callable(data) else data)
    made: list[dict[str, Any]] = []

    def make() -> dict[str, Any]:  # once for all the deliveries of this event
        if not made:
            made.append(dict(data() if callable(data) else data))
        return made[0]

    now = utcnow()
    for id in listening:
        delivery = WebhookDelivery(
            environment_id=environment_id,
            subscription_id=id,
            topic=topic,
            payload=payload,
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
        if pending_user:
            delivery.user = user
            inspect(delivery).info[MAKE_PAYLOAD] = make
        elif user is not None:
            delivery.user_id = user.id
        session.add(delivery)
    return len(listening)


# --- subscriptions --------------------------------------------------------------------------


def _checked_url(url: str, allow_private: bool) -> str:
    url = url.strip()
    try:
        ssrf.check(url, allow_private=allow_private)
    except ssrf.Refused as refused:
        raise AudienceError("invalid_url", f"url {refused}", field="url") from None
    return url


def _checked_topics(topics: Sequence[str]) -> list[str]:
    for topic in topics:
        if topic not in TOPICS:
            raise AudienceError(
                "unknown_topic",
                f"unknown topic {topic!r}; topics are {', '.join(TOPICS)}",
                field="topics",
            )
    return list(dict.fromkeys(topics))  # without repeats, in the given order


def get_subscription(session: Session, *, environment_id: int, id: int) -> WebhookSubscription:
    return get_scoped(
        session, WebhookSubscription, environment_id=environment_id, id=id, what="webhook"
    )


def create_subscription(
    session: Session,
    *,
    environment_id: int,
    url: str,
    topics: Sequence[str],
    active: bool = True,
    allow_private: bool = False,
) -> WebhookSubscription:
    """A new subscription with a new secret (readable on the returned row, then never listed)."""
    topics = _checked_topics(topics)
    url = _checked_url(url, allow_private)
    count = session.scalar(
        select(func.count()).where(WebhookSubscription.environment_id == environment_id)
    )
    if (count or 0) >= MAX_SUBSCRIPTIONS:
        raise Conflict(f"an environment can have at most {MAX_SUBSCRIPTIONS} webhooks")
    now = utcnow()
    subscription = WebhookSubscription(
        environment_id=environment_id,
        url=url,
        topics=topics,
        secret=signing.new_secret(),
        active=active,
        created_at=now,
        updated_at=now,
    )
    session.add(subscription)
    session.flush()
    _forget(session)
    return subscription


def update_subscription(
    session: Session,
    *,
    environment_id: int,
    id: int,
    changes: Mapping[str, Any],
    allow_private: bool = False,
) -> WebhookSubscription:
    """Change `url`, `topics` and/or `active` (the keys present in `changes`)."""
    subscription = get_subscription(session, environment_id=environment_id, id=id)
    if "topics" in changes:
        subscription.topics = _checked_topics(changes["topics"])
    if "url" in changes:
        subscription.url = _checked_url(changes["url"], allow_private)
    if "active" in changes:
        subscription.active = bool(changes["active"])
    subscription.updated_at = utcnow()
    session.flush()
    _forget(session)
    return subscription


def delete_subscription(session: Session, *, environment_id: int, id: int) -> None:
    """Delete a subscription; its deliveries (log and queue) go with it."""
    subscription = get_subscription(session, environment_id=environment_id, id=id)
    session.delete(subscription)
    session.flush()
    _forget(session)


def list_subscriptions(session: Session, *, environment_id: int, params: PageParams) -> Page:
    query = select(WebhookSubscription).where(WebhookSubscription.environment_id == environment_id)
    order = Order("id", WebhookSubscription.id, WebhookSubscription.id)
    return paginate(session, query, order=order, params=params)


def rotate_secret(
    session: Session, *, environment_id: int, id: int, keep_previous_hours: int
) -> WebhookSubscription:
    """A new secret; the old one also signs for `keep_previous_hours` so receivers can switch."""
    subscription = get_subscription(session, environment_id=environment_id, id=id)
    now = utcnow()
    if keep_previous_hours > 0:
        subscription.previous_secret = subscription.secret
        subscription.previous_secret_expires_at = now + timedelta(hours=keep_previous_hours)
    else:
        subscription.previous_secret = None
        subscription.previous_secret_expires_at = None
    subscription.secret = signing.new_secret()
    subscription.updated_at = now
    session.flush()
    return subscription


# --- deliveries -----------------------------------------------------------------------------


def ping(session: Session, *, environment_id: int, id: int) -> WebhookDelivery:
    """Queue a `ping` delivery to one subscription (to test the receiver)."""
    subscription = get_subscription(session, environment_id=environment_id, id=id)
    if not subscription.active:
        raise Conflict(f"webhook {id} is not active; activate it to ping it")
    now = utcnow()
    delivery = WebhookDelivery(
        environment_id=environment_id,
        subscription_id=subscription.id,
        topic=PING,
        payload={"webhook": {"id": str(subscription.id)}, "message": "ping"},
        status=PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    session.add(delivery)
    session.flush()
    return delivery


def get_delivery(session: Session, *, environment_id: int, id: int) -> WebhookDelivery:
    return get_scoped(
        session, WebhookDelivery, environment_id=environment_id, id=id, what="webhook delivery"
    )


def list_deliveries(
    session: Session,
    *,
    environment_id: int,
    subscription_id: int,
    status: str | None,
    params: PageParams,
) -> Page:
    """A subscription's delivery log, newest first."""
    get_subscription(session, environment_id=environment_id, id=subscription_id)
    query = select(WebhookDelivery).where(
        WebhookDelivery.environment_id == environment_id,
        WebhookDelivery.subscription_id == subscription_id,
    )
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    order = Order("id", WebhookDelivery.id, WebhookDelivery.id, True)
    return paginate(session, query, order=order, params=params)


def retry_delivery(session: Session, *, environment_id: int, id: int) -> WebhookDelivery:
    """Send a finished delivery again (same id and body) with a fresh set of attempts."""
    delivery = get_delivery(session, environment_id=environment_id, id=id)
    if delivery.status == PENDING:
        raise Conflict(f"webhook delivery {id} is still pending")
    delivery.status = PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = utcnow()
    session.flush()
    return delivery


def prune_deliveries(session: Session, *, before: datetime, limit: int = 5000) -> int:
    """Delete up to `limit` finished deliveries (succeeded or failed) last attempted before
    `before`; pending ones stay whatever their age. Returns how many went."""
    finished = (
        select(WebhookDelivery.id)
        .where(
            WebhookDelivery.status.in_([SUCCEEDED, FAILED]),
            WebhookDelivery.last_attempt_at < before,
        )
        .limit(limit)
    )
    result = session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.id.in_(finished)),
        execution_options={"synchronize_session": False},
    )
    return int(cast(CursorResult[Any], result).rowcount)
