from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from audience.db import Base, BigId, Json, UtcDateTime, utcnow


def _env_fk() -> Mapped[int]:
    return mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))


class User(Base):
    """One person in one environment. Standard attributes are columns; custom ones are JSON."""

    __tablename__ = "users"
    __table_args__ = (
        UniqueConstraint("environment_id", "user_key"),
        UniqueConstraint("environment_id", "user_id"),
        Index("ix_users_environment_id_email_lower", "environment_id", text("lower(email)")),
        Index("ix_users_environment_id_phone", "environment_id", "phone"),
        Index("ix_users_environment_id_created_at", "environment_id", "created_at"),
        Index("ix_users_environment_id_last_seen_at", "environment_id", "last_seen_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = _env_fk()
    user_key: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    # E.164 where the number could be read (matched in that form); the text as given beside it.
    phone: Mapped[str | None] = mapped_column(String(64))
    phone_original: Mapped[str | None] = mapped_column(String(64))
    first_name: Mapped[str | None] = mapped_column(String(255))
    last_name: Mapped[str | None] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(512))
    pseudonym: Mapped[str | None] = mapped_column(String(255))
    gender: Mapped[str] = mapped_column(String(10), default="unknown")
    status: Mapped[str] = mapped_column(String(10), default="visitor")
    city: Mapped[str | None] = mapped_column(String(255))
    region: Mapped[str | None] = mapped_column(String(255))
    country: Mapped[str | None] = mapped_column(String(255))
    postal_code: Mapped[str | None] = mapped_column(String(64))
    timezone: Mapped[str | None] = mapped_column(String(64))
    google_url: Mapped[str | None] = mapped_column(String(2048))
    linkedin_url: Mapped[str | None] = mapped_column(String(2048))
    twitter_url: Mapped[str | None] = mapped_column(String(2048))
    facebook_url: Mapped[str | None] = mapped_column(String(2048))
    avatar_url: Mapped[str | None] = mapped_column(String(2048))
    unsubscribed_from_emails: Mapped[bool] = mapped_column(Boolean, default=False)
    referrer: Mapped[str | None] = mapped_column(String(2048))
    utm_source: Mapped[str | None] = mapped_column(String(255))
    utm_medium: Mapped[str | None] = mapped_column(String(255))
    utm_campaign: Mapped[str | None] = mapped_column(String(255))
    utm_term: Mapped[str | None] = mapped_column(String(255))
    utm_content: Mapped[str | None] = mapped_column(String(255))
    first_utm_source: Mapped[str | None] = mapped_column(String(255))
    first_utm_medium: Mapped[str | None] = mapped_column(String(255))
    first_utm_campaign: Mapped[str | None] = mapped_column(String(255))
    first_utm_term: Mapped[str | None] = mapped_column(String(255))
    first_utm_content: Mapped[str | None] = mapped_column(String(255))
    browser: Mapped[str | None] = mapped_column(String(100))
    browser_version: Mapped[str | None] = mapped_column(String(50))
    os: Mapped[str | None] = mapped_column(String(100))
    language: Mapped[str | None] = mapped_column(String(35))
    device: Mapped[str | None] = mapped_column(String(100))
    last_seen_ip: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(Text)
    owner_id: Mapped[str | None] = mapped_column(String(255))
    web_push_subscription: Mapped[dict[str, Any] | None] = mapped_column(Json)
    fcm_key: Mapped[str | None] = mapped_column(String(4096))
    signed_up_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_heard_from_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    first_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_request_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    session_count: Mapped[int] = mapped_column(Integer, default=0)
    page_views: Mapped[int] = mapped_column(Integer, default=0)
    custom_attributes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    # When each attribute was last written (unix seconds, by the data's own time): an older
    # message arriving later must not overwrite a newer value (R-ATTR-5).
    attribute_times: Mapped[dict[str, float]] = mapped_column(Json, default=dict)
    # When a user was merged into another it stays (hidden) so the merge can be undone.
    merged_into_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


IDENTITY_KINDS = ("anonymous_id",)


class Identity(Base):
    """Extra keys that point at a user: one row per anonymous id (device or browser).

    `user_key` and `user_id` live on the user row under their own unique constraints; email and
    phone are matched through indexed user columns because several users may share them.
    """

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("environment_id", "kind", "value"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = _env_fk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    value: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # Lets a row point at a user not yet flushed: ingestion inserts its new users in bulk.
    user: Mapped[User] = relationship(lazy="raise")


class AttributeChange(Base):
    """The attribute history (R-ATTR-4): one row per changed attribute of a user."""

    __tablename__ = "attribute_changes"
    __table_args__ = (Index("ix_attribute_changes_user_id_id", "user_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = _env_fk()
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    attribute: Mapped[str] = mapped_column(String(300))
    old_value: Mapped[Any] = mapped_column(Json, nullable=True)
    new_value: Mapped[Any] = mapped_column(Json, nullable=True)
    source: Mapped[str] = mapped_column(String(20))
    source_ref: Mapped[str | None] = mapped_column(String(255))
    changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Merge(Base):
    """The merge log (R-ID-7): who was merged into whom, why, and what moved, for undo."""

    __tablename__ = "merges"
    # The user id first (ids are unique across environments): deleting a user sets these to
    # NULL through the foreign keys, and both databases need such an index to find the rows.
    __table_args__ = (
        Index("ix_merges_into_user_id", "into_user_id"),
        Index("ix_merges_from_user_id", "from_user_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = _env_fk()
    # NULL once that user is deleted: the log keeps its history (migration 0006); such a merge
    # can no longer be undone.
    from_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    into_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(String(50))
    actor: Mapped[str | None] = mapped_column(String(255))
    moved: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
