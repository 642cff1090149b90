"""The job runner: claims queued jobs and works through their users in chunks.

Claiming is safe with several runners: a claim takes the oldest waiting job with `FOR UPDATE
SKIP LOCKED` on PostgreSQL (SQLite has one writer) and marks it with the runner's token and a
lease. Each chunk is one transaction: it locks the job row, checks the job is still this
runner's and still running (a cancel lands between chunks), handles up to `chunk_size` users
after `last_user_id` in id order, and commits the changes with the progress (`done`, `failed`,
`last_user_id`) and a renewed lease. So a runner that dies loses at most its current chunk: when
its lease lapses another runner resumes after `last_user_id`.

A runner works on one job for at most `slice_seconds`, then lets it go: jobs are claimed by
least recently worked on, so one huge job does not hold up everyone else's small ones.

Per-user failures (bulk.py) are counted and sampled and the job goes on. Anything else (a tag
deleted meanwhile, a filter that no longer parses, an unexpected error) fails the job at once,
naming the cause; what earlier chunks changed stays changed.
"""

from __future__ import annotations

import bisect
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import Session

from audience.db import Database, utcnow
from audience.environments.models import Environment
from audience.errors import AudienceError, NotFound
from audience.jobs import bulk, export
from audience.jobs.models import CANCELLED, EXPORT, FAILED, QUEUED, RUNNING, SUCCEEDED, Job
from audience.segments.filters import parse_filter
from audience.segments.service import load_definitions, matching_users
from audience.users.models import User
from audience.users.service import live_users

log = logging.getLogger("audience.jobs")

CHUNK_SIZE = 500
# On SQLite a chunk holds the only writer, so ingestion and API writes wait for it: chunks are
# sized to take about this long, from the time per user seen so far (a delete costs more than
# a tag). PostgreSQL's writers don't block each other: there chunks are always full.
CHUNK_SECONDS = 0.25
MIN_CHUNK = 20
LEASE = timedelta(minutes=5)  # renewed by every chunk; a chunk takes well under a second
SLICE_SECONDS = 10.0
EXPIRE_EVERY = 3600.0  # seconds between looks for export files past AUDIENCE_EXPORT_DAYS
MAX_ATTEMPTS = 5  # runs cut short by a lapsed lease before the job is failed
MAX_ERRORS = 20  # per-user failures kept as a sample (all are counted)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Claim:
    job_id: int
    owner: str | None  # None: the job was failed when claimed (too many interrupted runs)


def _claimable(now: datetime) -> ColumnElement[bool]:
    lapsed = or_(Job.lease_expires_at.is_(None), Job.lease_expires_at <= now)
    return or_(Job.status == QUEUED, and_(Job.status == RUNNING, lapsed))


def _job_error(exc: Exception) -> dict[str, Any]:
    if isinstance(exc, AudienceError):
        return {"user_id": None, "code": exc.code, "message": exc.message, "field": exc.field}
    # The details are in the server log; a job is shown to API clients.
    return {
        "user_id": None,
        "code": "internal_error",
        "message": f"the job stopped on an unexpected {type(exc).__name__}; see the server log",
        "field": None,
    }


class JobRunner:
    """Runs jobs: `run_once` for one job (or part of it), `drain` for all, `run_forever`."""

    def __init__(
        self,
        database: Database,
        *,
        chunk_size: int = CHUNK_SIZE,
        lease: timedelta = LEASE,
        slice_seconds: float = SLICE_SECONDS,
        clock: Clock = utcnow,
    ) -> None:
        self.database = database
        self.chunk_size = chunk_size
        self._seconds_per_user: dict[str, float] = {}  # by operation
        self.lease = lease
        self.slice_seconds = slice_seconds
        self.clock = clock
        self.exports = export.exports_dir(database.settings.data_dir)
        self.export_days = database.settings.export_days
        self.expired_at = -EXPIRE_EVERY  # monotonic seconds: the first loop looks

    # --- claiming --------------------------------------------------------------------------

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """On SQLite, take the writer in turn with this process's processor and requests."""
        turns = self.database.writer_turns
        with turns.processor_turn() if turns is not None else nullcontext():
            yield

    def claim(self) -> Claim | None:
        now = self.clock()
        # A read first: an idle runner must not take SQLite's write lock every poll.
        with self.database.transaction(write=False) as session:
            if session.scalar(select(Job.id).where(_claimable(now)).limit(1)) is None:
                return None
        with self._turn(), self.database.transaction() as session:
            job = session.scalar(
                select(Job)
                .where(_claimable(now))
                .order_by(Job.updated_at, Job.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if job is None:
                return None
            if job.status == RUNNING and job.lease_expires_at is not None:
                job.attempts += 1  # its runner died (or hung) mid-job
                log.warning("resuming job %s after an interrupted run", job.id)
                if job.attempts > MAX_ATTEMPTS:
                    self._finish(job, FAILED, now)
                    job.errors = [
                        *job.errors,
                        {
                            "user_id": None,
                            "code": "interrupted",
                            "message": f"the job was interrupted {MAX_ATTEMPTS} times; gave up",
                            "field": None,
                        },
                    ]
                    self._discard(job)
                    return Claim(job.id, None)
            job.status = RUNNING
            job.lease_owner = secrets.token_hex(16)
            job.lease_expires_at = now + self.lease
            job.started_at = job.started_at or now
            job.updated_at = now
            return Claim(job.id, job.lease_owner)

    # --- running ---------------------------------------------------------------------------

    def run_once(
        self, *, max_chunks: int | None = None, stop: threading.Event | None = None
    ) -> int | None:
        """Claim one job and work on it until it ends, its slice is used up, `max_chunks`
        chunks are done or `stop` is set. Returns the job's id, or None when none waits."""
        claim = self.claim()
        if claim is None:
            return None
        if claim.owner is None:
            return claim.job_id
        deadline = time.monotonic() + self.slice_seconds
        chunks = 0
        while True:
            try:
                with self._turn(), self.database.transaction() as session:
                    job = self._owned(session, claim)
                    if job is None:
                        return claim.job_id
                    operation, started = job.operation, time.perf_counter()
                    size = self._next_size(operation)
                    finished, handled = self._step(session, job, size)
                self._measure(operation, handled, time.perf_counter() - started)  # with commit
            except Exception as exc:
                self._fail(claim, exc)
                return claim.job_id
            chunks += 1
            if finished:
                return claim.job_id
            out_of_turn = (max_chunks is not None and chunks >= max_chunks) or (
                time.monotonic() > deadline
            )
            if out_of_turn or (stop is not None and stop.is_set()):
                self._release(claim)
                return claim.job_id

    def drain(self) -> int:
        """Run every waiting job to its end (tests, `audience worker --once`); returns how
        many runs there were."""
        runs = 0
        while self.run_once() is not None:
            runs += 1
        return runs

    def expire_exports(self) -> int:
        """Delete the files of exports that succeeded more than AUDIENCE_EXPORT_DAYS ago (they
        hold personal data); returns how many."""
        self.expired_at = time.monotonic()
        if not self.export_days:
            return 0
        before = self.clock() - timedelta(days=self.export_days)
        old = select(Job).where(
            Job.kind == EXPORT,
            Job.status == SUCCEEDED,
            Job.file_name.is_not(None),
            Job.finished_at < before,
        )
        with self._turn(), self.database.transaction() as session:
            jobs = list(session.scalars(old.limit(500).with_for_update(skip_locked=True)))
            for job in jobs:
                export.expire(self.exports, job)
        return len(jobs)

    def run_forever(self, stop: threading.Event, *, idle_seconds: float = 1.0) -> None:
        while not stop.is_set():
            try:
                if time.monotonic() - self.expired_at >= EXPIRE_EVERY:
                    self.expire_exports()
                if self.run_once(stop=stop) is not None:
                    continue
            except Exception:  # keep going: the database may be back in a moment
                log.exception("job runner error")
            stop.wait(idle_seconds)

    def _owned(self, session: Session, claim: Claim) -> Job | None:
        """The job, locked for this chunk, if it is still this runner's to work on."""
        job = session.scalar(select(Job).where(Job.id == claim.job_id).with_for_update())
        if job is None or job.lease_owner != claim.owner or job.status != RUNNING:
            if job is not None and job.status == CANCELLED:
                self._discard(job)
            return None
        return job

    def _release(self, claim: Claim) -> None:
        """Let another run (or runner) take the job up right away."""
        with self._turn(), self.database.transaction() as session:
            job = self._owned(session, claim)
            if job is not None:
                job.lease_owner = None
                job.lease_expires_at = None

    def _fail(self, claim: Claim, exc: Exception) -> None:
        if isinstance(exc, AudienceError):
            log.warning("job %s failed: %s", claim.job_id, exc.message)
        else:
            log.exception("job %s failed", claim.job_id)
        try:
            with self._turn(), self.database.transaction() as session:
                job = self._owned(session, claim)
                if job is not None:
                    job.errors = [*job.errors, _job_error(exc)]
                    self._finish(job, FAILED, self.clock())
                    self._discard(job)
        except Exception:  # the lease will lapse and another run resume it
            log.exception("could not record the failure of job %s", claim.job_id)

    def _finish(self, job: Job, status: str, now: datetime) -> None:
        job.status = status
        job.finished_at = job.updated_at = now
        job.lease_owner = None
        job.lease_expires_at = None

    def _discard(self, job: Job) -> None:
        if job.kind == EXPORT:
            export.discard(self.exports, job)

    # --- one chunk -------------------------------------------------------------------------

    def _next_size(self, operation: str) -> int:
        per_user = self._seconds_per_user.get(operation, 0.0)
        if self.database.writer_turns is None or per_user <= 0:
            return self.chunk_size
        wanted = int(CHUNK_SECONDS / per_user)
        return max(min(wanted, self.chunk_size), min(MIN_CHUNK, self.chunk_size))

    def _measure(self, operation: str, handled: int, seconds: float) -> None:
        if handled:
            per_user = seconds / handled
            previous = self._seconds_per_user.get(operation, per_user)
            self._seconds_per_user[operation] = 0.7 * previous + 0.3 * per_user

    def _step(self, session: Session, job: Job, size: int) -> tuple[bool, int]:
        """Handle the next chunk of up to `size` users; returns whether the job is done, and
        how many users the chunk covered."""
        now = self.clock()
        environment = session.get(Environment, job.environment_id)
        if environment is None:  # can't be: its jobs would be gone with it (cascade)
            raise NotFound("environment", job.environment_id)
        if job.total is None or (job.kind == EXPORT and job.last_user_id is None):
            self._start(session, job)
        users, handled, last, finished = self._next_users(session, job, size)
        found = {user.id for user in users}
        failures = [  # ids whose user was deleted (or merged away) since the job was created
            bulk.Failure(id, "not_found", f"user {id} not found")
            for id in handled
            if id not in found
        ]
        if job.kind == EXPORT:
            columns = list(job.state.get("columns", []))
            fmt = job.arguments["format"]
            if users:
                data = export.render(session, environment, users, format=fmt, columns=columns)
                export.append(self.exports, job, data)
        elif users:
            apply = bulk.operation(session, job, environment)
            failures += bulk.apply_chunk(session, apply, users)
        job.done += len(handled)
        job.failed += len(failures)
        room = MAX_ERRORS - sum(1 for error in job.errors if error.get("user_id") is not None)
        if failures and room > 0:
            job.errors = [*job.errors, *(f.as_json() for f in failures[:room])]
        job.last_user_id = last if last is not None else job.last_user_id
        job.updated_at = now
        job.lease_expires_at = now + self.lease
        if finished:
            if job.kind == EXPORT:
                export.finish(self.exports, job)
            if "filter" in job.selection:
                job.total = job.done  # users that stopped matching meanwhile aren't counted
            self._finish(job, SUCCEEDED, now)
        return finished, len(handled)

    def _start(self, session: Session, job: Job) -> None:
        """Fix what the whole run works from: for a filter the highest user id now (users
        created later are not selected) and the count; for a CSV export its columns."""
        if "filter" in job.selection and job.total is None:
            live = live_users(job.environment_id)
            job.until_user_id = session.scalar(
                live.with_only_columns(func.max(User.id), maintain_column_froms=True)
            )
            query = self._filtered(session, job).with_only_columns(
                func.count(), maintain_column_froms=True
            )
            job.total = session.scalar(query) or 0
        if job.kind == EXPORT and job.last_user_id is None:
            columns: list[str] = []
            if job.arguments["format"] == "csv":
                columns = export.csv_columns(session, environment_id=job.environment_id)
                job.file_size = 0
                export.append(self.exports, job, export.header(columns))
            else:
                job.file_size = 0
                export.append(self.exports, job, b"")
            job.state = {**job.state, "columns": columns}

    def _filtered(self, session: Session, job: Job) -> Select[Any]:
        definitions = load_definitions(session, environment_id=job.environment_id)
        parsed = parse_filter(job.selection["filter"], definitions=definitions)
        # Relative windows ("within_last") are measured from when the job was asked for, so
        # every chunk applies the same filter.
        query = matching_users(
            session, environment_id=job.environment_id, filter=parsed, now=job.created_at
        )
        return query.where(User.id <= (job.until_user_id or 0))

    def _next_users(
        self, session: Session, job: Job, size: int
    ) -> tuple[list[User], list[int], int | None, bool]:
        """(live users of the next chunk, ids it covers, the last of them, whether it ends the
        selection). For ids, `handled` includes ids whose user is gone (reported as failed)."""
        after = job.last_user_id or 0
        if "ids" in job.selection:
            ids: list[int] = job.selection["ids"]
            start = bisect.bisect_right(ids, after)
            handled = ids[start : start + size]
            users = (
                list(
                    session.scalars(
                        live_users(job.environment_id).where(User.id.in_(handled)).order_by(User.id)
                    )
                )
                if handled
                else []
            )
            last = handled[-1] if handled else None
            return users, handled, last, start + size >= len(ids)
        query = self._filtered(session, job).where(User.id > after).order_by(User.id)
        users = list(session.scalars(query.limit(size)))
        handled = [user.id for user in users]
        return users, handled, handled[-1] if handled else None, len(users) < size
