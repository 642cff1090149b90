"""Export files: users as CSV or JSON Lines under <data dir>/exports/<environment id>/.

The runner appends one chunk at a time to a `.part` file and commits the size written with the
chunk; a chunk that did not commit is cut off when the job resumes, so a file never holds a
user twice. The finished file is renamed into place. Files hold personal data: mode 0600.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from audience.attributes.models import AttributeDefinition
from audience.environments.models import Environment
from audience.errors import AudienceError
from audience.jobs.models import Job
from audience.users.models import User
from audience.users.render import render as user_objects
from audience.users.schemas import UserObject

CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
# Columns of the user object a CSV leaves out: derived copies of other columns (avatar,
# location_data, social_profiles), always empty here (segments), or flattened (custom_attributes).
_NOT_CSV = ("custom_attributes", "avatar", "location_data", "social_profiles", "segments")
STANDARD_COLUMNS = tuple(name for name in UserObject.model_fields if name not in _NOT_CSV)
CUSTOM = "custom_attributes."


class ExportLost(AudienceError):
    def __init__(self, job_id: int) -> None:
        super().__init__("export_lost", f"the partly written file of export job {job_id} is gone")


def exports_dir(data_dir: Path) -> Path:
    return data_dir / "exports"


def file_name(job: Job) -> str:
    """The finished file's path under the exports directory (also its download name)."""
    return f"{job.environment_id}/users-{job.id}.{job.arguments['format']}"


def _part(directory: Path, job: Job) -> Path:
    return directory / (file_name(job) + ".part")


def csv_columns(session: Session, *, environment_id: int) -> list[str]:
    """The header: the user object's fields, then every user attribute defined when the export
    starts (archived ones too: their values are kept)."""
    names = session.scalars(
        select(AttributeDefinition.name)
        .where(
            AttributeDefinition.environment_id == environment_id,
            AttributeDefinition.model == "user",
        )
        .order_by(AttributeDefinition.name)
    )
    return [*STANDARD_COLUMNS, *(CUSTOM + name for name in names)]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value).decode()
    return str(value)


def _csv_row(user: dict[str, Any], columns: list[str]) -> list[str]:
    custom = user["custom_attributes"]
    row = []
    for column in columns:
        if column.startswith(CUSTOM):
            value = custom.get(column.removeprefix(CUSTOM))
        elif column == "tags":
            value = [tag["name"] for tag in user["tags"]["tags"]]
        elif column == "companies":
            value = [company["company_id"] for company in user["companies"]["companies"]]
        else:
            value = user[column]
        row.append(_cell(value))
    return row


def render(
    session: Session,
    environment: Environment,
    users: list[User],
    *,
    format: str,
    columns: list[str],
) -> bytes:
    """The lines of these users: the user object of GET /users/{id} (JSONL), or its fields
    with custom attributes as columns, tags by name and companies by company_id (CSV)."""
    objects = [user.model_dump() for user in user_objects(session, environment, users)]
    if format == "jsonl":
        return b"".join(orjson.dumps(item) + b"\n" for item in objects)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerows(_csv_row(item, columns) for item in objects)
    return buffer.getvalue().encode()


def header(columns: list[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(columns)
    return buffer.getvalue().encode()


def append(directory: Path, job: Job, data: bytes) -> None:
    """Write `data` after the `job.file_size` bytes committed so far; moves `file_size` on."""
    part = _part(directory, job)
    final = directory / file_name(job)
    if not part.exists() and final.exists():  # renamed, but the finishing commit failed
        final.rename(part)
    if not part.exists() and job.file_size > 0:
        raise ExportLost(job.id)
    part.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(part, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(descriptor).st_size < job.file_size:
            raise ExportLost(job.id)
        os.ftruncate(descriptor, job.file_size)  # drop what an uncommitted chunk wrote
        os.lseek(descriptor, job.file_size, os.SEEK_SET)
        view = memoryview(data)
        while view:
            written = os.write(descriptor, view)
            view = view[written:]
        os.fsync(descriptor)  # the size is committed with the chunk: the bytes must be there
    finally:
        os.close(descriptor)
    job.file_size += len(data)


def finish(directory: Path, job: Job) -> None:
    append(directory, job, b"")  # the file exists (an empty selection) and is whole
    os.replace(_part(directory, job), directory / file_name(job))
    job.file_name = file_name(job)


def discard(directory: Path, job: Job) -> None:
    """Remove an unfinished export's file (cancelled or failed)."""
    _part(directory, job).unlink(missing_ok=True)


def expire(directory: Path, job: Job) -> None:
    """Remove a finished export's file: its download answers 410 from then on."""
    if job.file_name is not None:
        (directory / job.file_name).unlink(missing_ok=True)
        job.file_name = None


def path_of(directory: Path, job: Job) -> Path | None:
    """The finished file of an export job, if it is there."""
    if job.file_name is None:
        return None
    path = directory / job.file_name
    return path if path.is_file() else None
