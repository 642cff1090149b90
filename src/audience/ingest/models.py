from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, text
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


class ProcessedMessage(Base):
    """A message applied without an events row (identify, group, alias) or with warnings.

    Its primary key makes dedupe (R-ING-7) a database rule for those kinds, in the transaction of
    the effect; track, page and screen dedupe on the events table itself.
    """

    __tablename__ = "processed_messages"
    __table_args__ = (
        # Only the rows with warnings, newest first, for /api/v1/message-warnings (migration
        # 0007). `warnings != '[]'` reads the same on both databases (JSONB; JSON text on
        # SQLite); queries repeat it word for word so that either planner picks this index.
        Index(
            "ix_processed_messages_warned",
            "environment_id",
            "processed_at",
            "message_id",
            sqlite_where=text("warnings != '[]'"),
            postgresql_where=text("warnings != '[]'"),
        ),
    )

    environment_id: Mapped[int] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), primary_key=True
    )
    message_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    processed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
