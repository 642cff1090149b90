"""The bodies of POST /users/bulk and /users/export, and the job object."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from audience.jobs.models import Job
from audience.schemas import Body, Pages, unix

MAX_IDS = 10_000

Operation = Literal[
    "set_attribute",
    "unset_attribute",
    "add_tag",
    "remove_tag",
    "add_to_list",
    "remove_from_list",
    "delete",
]
OPERATIONS: tuple[str, ...] = Operation.__args__  # type: ignore[attr-defined]
# The arguments each operation takes (beyond the selection); any other is refused by name.
ARGUMENTS: dict[str, tuple[str, ...]] = {
    "set_attribute": ("attribute", "value"),
    "unset_attribute": ("attribute",),
    "add_tag": ("tag",),
    "remove_tag": ("tag",),
    "add_to_list": ("list",),
    "remove_from_list": ("list",),
    "delete": (),
}
UserIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=32)]],
    Field(
        min_length=1,
        max_length=MAX_IDS,
        description=f"Internal user ids (1 to {MAX_IDS:,}); or give `filter` instead.",
    ),
]
FilterField = Field(
    None,
    description="A filter tree (docs/filters.md): every live user matching it when the job "
    'starts. `{"and": []}` selects everyone. Or give `ids` instead.',
)


class NamedRef(Body):
    """A tag or list by exactly one of `id` or `name`."""

    model_config = ConfigDict(coerce_numbers_to_str=True)  # {"id": 7} is {"id": "7"}

    id: Annotated[str, Field(min_length=1, max_length=32)] | None = None
    name: Annotated[str, Field(min_length=1, max_length=255)] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.id is None) == (self.name is None):
            raise ValueError("give exactly one of id, name")
        return self


class Selection(Body):
    model_config = ConfigDict(coerce_numbers_to_str=True)  # ids as numbers are fine too

    ids: UserIds | None = None
    filter: Any = FilterField


class BulkIn(Selection):
    """One operation on many users. The arguments depend on the operation (docs/api/jobs.md)."""

    operation: Operation
    attribute: (
        Annotated[
            str,
            Field(
                min_length=1,
                max_length=300,
                description="set/unset_attribute: a standard attribute or "
                "custom_attributes.<name>.",
            ),
        ]
        | None
    ) = None
    value: Any = Field(
        None,
        description="set_attribute: the value, or one operation such as {'$add': 1}.",
    )
    tag: NamedRef | None = Field(
        None, description="add_tag (created when missing by name) / remove_tag."
    )
    list_: NamedRef | None = Field(None, alias="list", description="add_to/remove_from_list.")


class ExportIn(Selection):
    format: Literal["csv", "jsonl"] = Field(
        "csv", description="csv (custom attributes as custom_attributes.<name> columns) or jsonl."
    )


class JobError(BaseModel):
    user_id: str | None
    code: str
    message: str
    field: str | None = None


class JobObject(BaseModel):
    type: Literal["job"] = "job"
    id: str
    kind: Literal["bulk", "export"]
    operation: str
    arguments: dict[str, Any]
    selection: dict[str, Any]
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    total: int | None
    done: int
    failed: int
    errors: list[JobError]
    created_by: str | None
    created_at: int
    updated_at: int
    started_at: int | None
    finished_at: int | None
    download_url: str | None


class JobList(BaseModel):
    type: Literal["job.list"] = "job.list"
    total_count: int
    jobs: list[JobObject]
    pages: Pages


def job_object(job: Job, *, prefix: str = "/api/v1") -> JobObject:
    # Ids are shown as a count: a job's selection may hold 10,000 of them.
    ids = job.selection.get("ids")
    selection = (
        {"type": "ids", "count": len(ids)}
        if ids is not None
        else {"type": "filter", "filter": job.selection.get("filter")}
    )
    ready = job.kind == "export" and job.status == "succeeded" and job.file_name is not None
    return JobObject(
        id=str(job.id),
        kind=job.kind,
        operation=job.operation,
        arguments=job.arguments,
        selection=selection,
        status=job.status,
        total=job.total,
        done=job.done,
        failed=job.failed,
        errors=[JobError(**error) for error in job.errors or []],
        created_by=job.created_by,
        created_at=unix(job.created_at) or 0,
        updated_at=unix(job.updated_at) or 0,
        started_at=unix(job.started_at),
        finished_at=unix(job.finished_at),
        download_url=f"{prefix}/jobs/{job.id}/download" if ready else None,
    )
