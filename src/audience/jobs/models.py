"""Jobs: bulk operations and exports over many users, run in chunks by a background runner."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from audience.db import Base, BigId, Json, UtcDateTime, utcnow

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
FINISHED = (SUCCEEDED, FAILED, CANCELLED)
BULK, EXPORT = "bulk", "export"


class Job(Base):
    """One bulk operation or export: what to do, to whom, and how far it got."""

    __tablename__ = "jobs"
    __table_args__ = (
        # The job list of an environment, newest first (and the cascade on delete).
        Index("ix_jobs_environment_id_id", "environment_id", "id"),
        # The runners' poll: queued jobs, and running ones whose lease ran out.
        Index("ix_jobs_status_lease_expires_at", "status", "lease_expires_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    environment_id: Mapped[int] = mapped_column(ForeignKey("environments.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(20))
    operation: Mapped[str] = mapped_column(String(30))
    # Checked and normalised when the job is created (tags and lists by id, values typed).
    arguments: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    # {"ids": [sorted unique internal ids]} or {"filter": <the filter JSON as given>}.
    selection: Mapped[dict[str, Any]] = mapped_column(Json)
    status: Mapped[str] = mapped_column(String(20), default=QUEUED)
    # Users selected: known at creation for ids, counted when a filter job starts.
    total: Mapped[int | None] = mapped_column(Integer)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    # A sample of what failed: [{user_id, code, message, field}]; user_id null for the job.
    errors: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    # Users are taken in id order: the last one handled, and (filters) the highest id when the
    # job started, so users created meanwhile are not selected and the job always ends.
    last_user_id: Mapped[int | None] = mapped_column(BigId)
    until_user_id: Mapped[int | None] = mapped_column(BigId)
    # The runner's own notes (an export's CSV columns), fixed when the job starts.
    state: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)
    # Exports: the file under <data dir>/exports, and the bytes written by committed chunks
    # (a chunk that did not commit is cut off the file when the job resumes).
    file_name: Mapped[str | None] = mapped_column(String(255))
    file_size: Mapped[int] = mapped_column(BigInteger, default=0)
    # The runner working on it (a random token per claim) and until when; a lapsed lease means
    # the runner died, and another one resumes the job after `last_user_id`.
    lease_owner: Mapped[str | None] = mapped_column(String(32))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Runs interrupted by a lapsed lease; past a limit the job fails instead of looping.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
