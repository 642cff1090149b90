"""/api/v1/users/bulk, /api/v1/users/export and /api/v1/jobs: bulk operations run as jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse

from audience.auth import CurrentEnvironment, DbSession
from audience.config import Settings
from audience.db import TransactionRoute
from audience.errors import AudienceError
from audience.jobs import export, service
from audience.jobs.models import EXPORT, SUCCEEDED
from audience.jobs.schemas import BulkIn, ExportIn, JobList, JobObject, Selection, job_object
from audience.pagination import Pagination
from audience.schemas import parse_id

router = APIRouter(tags=["jobs"], route_class=TransactionRoute)


def _actor(request: Request) -> str | None:
    return getattr(request.state, "actor", None)


def _exports(request: Request) -> Path:
    settings: Settings = request.app.state.settings
    return export.exports_dir(settings.data_dir)


def _selection(body: Selection) -> dict[str, Any]:
    # A null filter is no filter: the service then asks for one of ids or filter.
    return {"ids": body.ids, "filter": body.filter}


@router.post(
    "/users/bulk",
    status_code=202,
    response_model=JobObject,
    summary="Run one operation on many users (by ids or filter) as a job",
)
def bulk(
    body: BulkIn, request: Request, environment: CurrentEnvironment, session: DbSession
) -> JobObject:
    # Only the arguments that were sent, by their JSON names: the service refuses any that
    # the operation doesn't take.
    arguments = body.model_dump(
        include={"attribute", "value", "tag", "list_"}, exclude_unset=True, by_alias=True
    )
    job = service.create_bulk_job(
        session,
        environment=environment,
        operation=body.operation,
        arguments=arguments,
        created_by=_actor(request),
        **_selection(body),
    )
    return job_object(job)


@router.post(
    "/users/export",
    status_code=202,
    response_model=JobObject,
    summary="Export users (by ids or filter) to a CSV or JSON Lines file, as a job",
)
def export_users(
    body: ExportIn, request: Request, environment: CurrentEnvironment, session: DbSession
) -> JobObject:
    job = service.create_export_job(
        session,
        environment=environment,
        format=body.format,
        created_by=_actor(request),
        **_selection(body),
    )
    return job_object(job)


@router.get("/jobs", response_model=JobList, summary="List jobs, newest first")
def list_jobs(
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    status: Annotated[
        str | None,
        Query(pattern="^(queued|running|succeeded|failed|cancelled)$", description="Only these."),
    ] = None,
    kind: Annotated[str | None, Query(pattern="^(bulk|export)$", description="Only these.")] = None,
) -> JobList:
    page = service.list_jobs(
        session, environment_id=environment.id, status=status, kind=kind, params=pagination
    )
    jobs = [job_object(job) for job in page.items]
    return JobList(total_count=page.total, jobs=jobs, pages=page.pages())


@router.get("/jobs/{id}", response_model=JobObject, summary="A job and its progress")
def get_job(id: str, environment: CurrentEnvironment, session: DbSession) -> JobObject:
    job = service.get_job(session, environment_id=environment.id, id=parse_id(id, "job"))
    return job_object(job)


@router.post(
    "/jobs/{id}/cancel",
    response_model=JobObject,
    summary="Cancel a queued or running job (what it already changed stays)",
)
def cancel_job(
    id: str, request: Request, environment: CurrentEnvironment, session: DbSession
) -> JobObject:
    job = service.cancel_job(session, environment_id=environment.id, id=parse_id(id, "job"))
    if job.kind == EXPORT:
        # The job row is locked until this commits, so no chunk is writing the file now; a
        # runner that still holds the job stops at its next chunk.
        export.discard(_exports(request), job)
    return job_object(job)


@router.get(
    "/jobs/{id}/download",
    response_class=FileResponse,
    responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}},
    summary="The file of a finished export job",
)
def download(
    id: str, request: Request, environment: CurrentEnvironment, session: DbSession
) -> FileResponse:
    job = service.get_job(session, environment_id=environment.id, id=parse_id(id, "job"))
    if job.kind != EXPORT:
        raise AudienceError("not_found", f"job {id} is not an export: no file", status=404)
    if job.status != SUCCEEDED:
        raise AudienceError(
            "not_ready", f"export job {id} is {job.status}: no file to download", status=409
        )
    path = export.path_of(_exports(request), job)
    if path is None:
        raise AudienceError("gone", f"the file of export job {id} is no longer there", status=410)
    fmt = job.arguments["format"]
    return FileResponse(
        path, media_type=export.CONTENT_TYPES[fmt], filename=f"users-{job.id}.{fmt}"
    )
