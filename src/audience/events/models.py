from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from audience.db import Base, BigId, Json, UtcDateTime, utcnow

KINDS = ("track", "page", "screen", "$pageview", "$click", "$change", "$submit")


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("environment_id", "message_id"),
        # Not led by environment_id: deleting a user cascades by user_id alone (0005).
        Index("ix_events_user_id_timestamp", "user_id", "timestamp"),
        # user_id last: behaviour conditions group a name's events in a window by user from the
        # index alone (migration 0005).
        Index(
            "ix_events_environment_id_name_timestamp_user_id",
            "environment_id",
            "name",
            "timestamp",
            "user_id",
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    company_id: Mapped[int | None] = mapped_column(ForeignKey("companies.id", ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(20), default="track")
    timestamp: Mapped[datetime] = mapped_column(UtcDateTime)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    message_id: Mapped[str] = mapped_column(String(100))
    properties: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    page_url: Mapped[str | None] = mapped_column(Text)
    session_id: Mapped[str | None] = mapped_column(String(255))
    source: Mapped[str | None] = mapped_column(String(50))
    library: Mapped[str | None] = mapped_column(String(100))
