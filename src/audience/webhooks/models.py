"""Webhook subscriptions and their deliveries (an outbox written in the change's transaction)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, event, inspect
from sqlalchemy.orm import Mapped, mapped_column, relationship

from audience.db import Base, BigId, Json, UtcDateTime, utcnow

if TYPE_CHECKING:
    from audience.users.models import User

PENDING, SUCCEEDED, FAILED = "pending", "succeeded", "failed"


class WebhookSubscription(Base):
    __tablename__ = "webhook_subscriptions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(String(2048))
    topics: Mapped[list[str]] = mapped_column(Json)
    # Kept in clear: signing needs it. Shown once (on create and on rotate), never listed.
    secret: Mapped[str] = mapped_column(String(100))
    # After a rotation the old secret signs too until it expires, so receivers can switch over.
    previous_secret: Mapped[str | None] = mapped_column(String(100))
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class WebhookDelivery(Base):
    """One topic's payload for one subscription, from queued to succeeded or failed."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # The sender's poll: pending rows whose next attempt is due, oldest first.
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        # The delivery log of a subscription, newest first (and the cascade on delete).
        Index("ix_webhook_deliveries_subscription_id_id", "subscription_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_subscriptions.id", ondelete="CASCADE")
    )
    topic: Mapped[str] = mapped_column(String(50))
    # The user the event is about. No foreign key: a `user.deleted` delivery outlives its user.
    user_id: Mapped[int | None] = mapped_column(BigId)
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    status: Mapped[str] = mapped_column(String(20), default=PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # When pending: the next attempt (or the end of a sender's lease on it); null when done.
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(1000))
    last_response: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime)

    # Set only for a user not inserted yet (ingestion inserts a batch's new users together): the
    # flush then inserts the user first, and the payload is made once the user has its id.
    user: Mapped[User | None] = relationship(
        primaryjoin="foreign(WebhookDelivery.user_id) == User.id", lazy="raise"
    )


MAKE_PAYLOAD = "make_payload"


@event.listens_for(WebhookDelivery, "before_insert")
def _make_payload(_: Any, __: Any, delivery: WebhookDelivery) -> None:
    make = inspect(delivery).info.pop(MAKE_PAYLOAD, None)
    if make is not None:
        delivery.payload = dict(make())
