from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from audience.db import Base, BigId, Json, UtcDateTime, utcnow


class InboxMessage(Base):
    """An accepted message waiting for the processor: the durability point of ingestion."""

    __tablename__ = "inbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str] = mapped_column(String(100))
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    payload: Mapped[dict[str, Any]] = mapped_column(Json)


class FailedMessage(Base):
    """A message that failed after acceptance, kept with its error for inspection and replay."""

    __tablename__ = "failed_messages"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    message_id: Mapped[str | None] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(Json)
    error_code: Mapped[str] = mapped_column(String(50))
    error_message: Mapped[str] = mapped_column(Text)
    stage: Mapped[str] = mapped_column(String(50))
    received_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    replayed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
