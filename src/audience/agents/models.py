from __future__ import annotations

from datetime import datetime

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from audience.db import Base, BigId, UtcDateTime, utcnow

ROLES = ("owner", "admin", "member", "read-only")


class Agent(Base):
    """A person who uses the web app. Agents span environments; roles limit what they change."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(255), default="")
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(20), default="member")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
