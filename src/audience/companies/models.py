from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from audience.db import Base, BigId, Json, UtcDateTime, utcnow


class Company(Base):
    __tablename__ = "companies"
    __table_args__ = (
        UniqueConstraint("environment_id", "company_id"),
        Index("ix_companies_environment_id_name", "environment_id", "name"),
        # The default listing order (newest first) reads this index instead of sorting.
        Index("ix_companies_environment_id_created_at", "environment_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    company_id: Mapped[str] = mapped_column(String(255))
    name: Mapped[str | None] = mapped_column(String(255))
    email: Mapped[str | None] = mapped_column(String(255))
    address: Mapped[str | None] = mapped_column(String(1024))
    city: Mapped[str | None] = mapped_column(String(255))
    region: Mapped[str | None] = mapped_column(String(255))
    country: Mapped[str | None] = mapped_column(String(255))
    postal_code: Mapped[str | None] = mapped_column(String(64))
    phone_numbers: Mapped[list[str] | None] = mapped_column(Json)
    size: Mapped[int | None] = mapped_column(Integer)
    description: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(String(2048))
    industry: Mapped[str | None] = mapped_column(String(255))
    plan: Mapped[str | None] = mapped_column(String(255))
    # The customer's own "created at" for the company (Intercom's remote_created_at).
    remote_created_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    custom_attributes: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Membership(Base):
    """A user works for a company (many-to-many unless the environment says single)."""

    __tablename__ = "company_memberships"

    company_id: Mapped[int] = mapped_column(
        ForeignKey("companies.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    member_since: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
