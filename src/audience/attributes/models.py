from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from audience.db import Base, BigId, Json, UtcDateTime, utcnow

MODELS = ("user", "company", "deal", "ticket", "activity")
TYPES = ("string", "number", "boolean", "date", "datetime", "list")


class AttributeDefinition(Base):
    """The type (and label, options) of a custom attribute of one model in one environment."""

    __tablename__ = "attribute_definitions"
    __table_args__ = (UniqueConstraint("environment_id", "model", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(255))
    label: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(20))
    options: Mapped[list[Any] | None] = mapped_column(Json)
    origin: Mapped[str] = mapped_column(String(20), default="manual")
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
