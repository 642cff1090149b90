"""Saved segments and their live membership (R-SEG-3)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from audience.db import Base, BigId, Json, UtcDateTime, utcnow


class Segment(Base):
    """A named filter; its members are kept in `segment_memberships`, not computed on read."""

    __tablename__ = "segments"
    __table_args__ = (UniqueConstraint("environment_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    filter: Mapped[Any] = mapped_column(Json)
    # Whether the filter has a relative time window: those segments are refreshed every minute.
    time_relative: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SegmentMembership(Base):
    """One stay of a user in a segment: current while `exited_at` is null. A user who leaves and
    comes back gets a new row, so the history of entries and exits is kept."""

    __tablename__ = "segment_memberships"
    __table_args__ = (
        Index(
            "ix_segment_memberships_segment_id_exited_at_user_id",
            "segment_id",
            "exited_at",
            "user_id",
        ),
        Index("ix_segment_memberships_user_id_exited_at", "user_id", "exited_at"),
        # The member list, latest entries first (saved.members; migration 0008).
        Index(
            "ix_segment_memberships_current_segment_id_entered_at",
            "segment_id",
            "entered_at",
            "user_id",
            postgresql_where=text("exited_at IS NULL"),
            sqlite_where=text("exited_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    entered_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    exited_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
