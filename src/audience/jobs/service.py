"""Jobs: create (after checking the whole request), get, list and cancel.

A request is checked completely before its job exists: the operation's arguments, the
selection (every id found, the filter parsed), the tag or list, the attribute and its value.
A bad request is an error and creates nothing; the runner (runner.py) then only meets what
changed since (a user deleted meanwhile, a tag deleted meanwhile).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from audience.attributes import values
from audience.attributes.service import find_definitions
from audience.db import get_scoped, utcnow
from audience.environments.models import Environment
from audience.errors import AudienceError, Conflict, Invalid, NotFound
from audience.jobs.models import BULK, CANCELLED, EXPORT, FINISHED, QUEUED, Job
from audience.jobs.schemas import ARGUMENTS, OPERATIONS
from audience.lists.models import UserList
from audience.lists.service import get_list
from audience.pagination import Order, Page, PageParams, paginate
from audience.segments.filters import parse_filter
from audience.segments.service import load_definitions
from audience.tags.models import Tag
from audience.tags.service import create_tag, get_tag
from audience.users import identity
from audience.users.models import User
from audience.users.schemas import UserWrite
from audience.users.service import live_users

CUSTOM = "custom_attributes."
# Standard attributes a bulk operation may write. Not user_id: it is unique per user, so one
# value for many users can't be right; change it user by user.
STANDARD = tuple(
    name
    for name in UserWrite.model_fields
    if name not in ("user_id", "custom_attributes", "avatar")
)
_ID_QUERY_SIZE = 1000  # ids per existence query


def _parsed_id(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


def _selection(
    session: Session, *, environment_id: int, ids: list[str] | None, filter: Any
) -> tuple[dict[str, Any], int | None]:
    """The stored selection and its size when known: every id must be a live user here."""
    if (ids is None) == (filter is None):
        raise Invalid(
            'give exactly one of ids (user ids) or filter (a filter; {"and": []} is everyone)',
            field="ids" if ids is None else "filter",
            code="invalid_field",
        )
    if filter is not None:
        parse_filter(filter, definitions=load_definitions(session, environment_id=environment_id))
        return {"filter": filter}, None
    assert ids is not None
    wanted: dict[int, int] = {}  # id -> index of its first mention
    for index, raw in enumerate(ids):
        parsed = _parsed_id(raw)
        if parsed is None:
            raise AudienceError(
                "not_found", f"user {raw} not found", status=404, field=f"ids.{index}"
            )
        wanted.setdefault(parsed, index)
    found: set[int] = set()
    distinct = list(wanted)
    for start in range(0, len(distinct), _ID_QUERY_SIZE):
        chunk = distinct[start : start + _ID_QUERY_SIZE]
        found.update(
            session.scalars(
                live_users(environment_id).with_only_columns(User.id).where(User.id.in_(chunk))
            )
        )
    for user_id, index in wanted.items():
        if user_id not in found:
            raise AudienceError(
                "not_found", f"user {ids[index]} not found", status=404, field=f"ids.{index}"
            )
    return {"ids": sorted(wanted)}, len(wanted)


def _check_arguments(operation: str, arguments: Mapping[str, Any]) -> None:
    if operation not in ARGUMENTS:
        raise Invalid(
            f"unknown operation {operation!r}; use one of {', '.join(OPERATIONS)}",
            field="operation",
            code="invalid_field",
        )
    takes = ARGUMENTS[operation]
    for name in arguments:
        if name not in takes:
            what = f"takes {', '.join(takes)}" if takes else "takes no arguments"
            raise Invalid(
                f"{name}: not an argument of {operation} (it {what})",
                field=name,
                code="invalid_field",
            )
    for name in takes:
        if arguments.get(name) is None:
            hint = "; use unset_attribute to remove values" if name == "value" else ""
            raise Invalid(f"{operation} needs {name}{hint}", field=name, code="missing")


def _standard_value(attribute: str, value: Any) -> None:
    """The value must be what PATCH /users/{id} accepts for the attribute."""
    try:
        UserWrite.model_validate({attribute: value})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Invalid(
            f"value: {first.get('msg', 'invalid')}", field="value", code="wrong_type"
        ) from None
    if attribute == "email" and (value != value.strip() or not identity.is_email(value)):
        raise Invalid(f"{value!r} is not an email address", field="value")


def _custom_value(
    session: Session, environment_id: int, name: str, value: Any, *, unset: bool
) -> None:
    """A custom attribute's value (or operation) must fit its definition, if it has one."""
    values.check_name(name, field="attribute")
    definition = find_definitions(
        session, environment_id=environment_id, model="user", names=[name]
    ).get(name)
    if definition is not None and definition.archived:
        raise Invalid(f"attribute {name!r} is archived", field="attribute", code="archived")
    if unset:
        return
    operation, operand = values.split_operation(value, field="value")
    type_ = None if definition is None else definition.type
    if operation in ("$set", "$set_once"):
        if definition is not None:
            coerced = values.coerce(operand, definition.type, field="value")
            chosen = coerced if isinstance(coerced, list) else [coerced]
            if definition.options and any(item not in definition.options for item in chosen):
                allowed = ", ".join(map(str, definition.options))
                raise Invalid(f"{operand!r} is not one of the options: {allowed}", field="value")
    elif operation == "$add":
        if isinstance(operand, bool) or not isinstance(operand, int | float):
            raise Invalid("$add takes a number", field="value", code="wrong_type")
        if type_ not in (None, "number"):
            raise Invalid(
                f"$add needs a number attribute; {name!r} is a {type_}",
                field="value",
                code="wrong_type",
            )
    elif operation in ("$union", "$append", "$remove") and type_ not in (None, "list"):
        raise Invalid(
            f"{operation} needs a list attribute; {name!r} is a {type_}",
            field="value",
            code="wrong_type",
        )


def _attribute(
    session: Session, environment_id: int, attribute: str, value: Any, *, unset: bool
) -> dict[str, Any]:
    if attribute.startswith(CUSTOM):
        _custom_value(session, environment_id, attribute.removeprefix(CUSTOM), value, unset=unset)
    elif attribute in STANDARD:
        if not unset:
            _standard_value(attribute, value)
    else:
        raise Invalid(
            f"unknown attribute {attribute[:100]!r}; use custom_attributes.<name> or one of "
            f"{', '.join(STANDARD)}",
            field="attribute",
        )
    return {"attribute": attribute} if unset else {"attribute": attribute, "value": value}


def _ref_id(ref: Mapping[str, Any], what: str, field: str) -> int | None:
    if ref.get("id") is None:
        return None
    parsed = _parsed_id(str(ref["id"]))
    if parsed is None:
        raise AudienceError(
            "not_found", f"{what} {ref['id']} not found", status=404, field=f"{field}.id"
        )
    return parsed


def _tag(
    session: Session, environment_id: int, ref: Mapping[str, Any], *, create: bool
) -> dict[str, str]:
    tag_id = _ref_id(ref, "tag", "tag")
    if tag_id is not None:
        try:
            tag = get_tag(session, environment_id=environment_id, id=tag_id)
        except NotFound as exc:
            exc.field = "tag.id"
            raise
    else:
        name = str(ref["name"]).strip()
        if not name:
            raise Invalid("a tag name must not be blank", field="tag.name")
        found = session.scalar(
            select(Tag).where(Tag.environment_id == environment_id, Tag.name == name)
        )
        if found is None and not create:
            raise AudienceError(
                "not_found", f"tag {name!r} not found", status=404, field="tag.name"
            )
        # Like POST /users/{id}/tags: adding a tag by a name not in use creates it.
        tag = found or create_tag(session, environment_id=environment_id, name=name)
    return {"id": str(tag.id), "name": tag.name}


def _list(session: Session, environment_id: int, ref: Mapping[str, Any]) -> dict[str, str]:
    list_id = _ref_id(ref, "list", "list")
    if list_id is not None:
        try:
            user_list = get_list(session, environment_id=environment_id, id=list_id)
        except NotFound as exc:
            exc.field = "list.id"
            raise
    else:
        name = str(ref["name"])
        found = session.scalar(
            select(UserList).where(UserList.environment_id == environment_id, UserList.name == name)
        )
        if found is None:
            raise AudienceError(
                "not_found", f"list {name!r} not found", status=404, field="list.name"
            )
        user_list = found
    return {"id": str(user_list.id), "name": user_list.name}


def create_bulk_job(
    session: Session,
    *,
    environment: Environment,
    operation: str,
    arguments: Mapping[str, Any],
    ids: list[str] | None,
    filter: Any,
    created_by: str | None,
) -> Job:
    """A queued bulk job, once the whole request has been checked (else an error, no job)."""
    _check_arguments(operation, arguments)
    selection, total = _selection(session, environment_id=environment.id, ids=ids, filter=filter)
    normalised: dict[str, Any] = {}
    if operation in ("set_attribute", "unset_attribute"):
        normalised = _attribute(
            session,
            environment.id,
            str(arguments["attribute"]),
            arguments.get("value"),
            unset=operation == "unset_attribute",
        )
    elif operation in ("add_tag", "remove_tag"):
        normalised = {
            "tag": _tag(session, environment.id, arguments["tag"], create=operation == "add_tag")
        }
    elif operation in ("add_to_list", "remove_from_list"):
        normalised = {"list": _list(session, environment.id, arguments["list"])}
    return _queue(
        session, environment.id, BULK, operation, normalised, selection, total, created_by
    )


def create_export_job(
    session: Session,
    *,
    environment: Environment,
    format: str,
    ids: list[str] | None,
    filter: Any,
    created_by: str | None,
) -> Job:
    if format not in ("csv", "jsonl"):
        raise Invalid("format must be csv or jsonl", field="format")
    selection, total = _selection(session, environment_id=environment.id, ids=ids, filter=filter)
    return _queue(
        session, environment.id, EXPORT, "export", {"format": format}, selection, total, created_by
    )


def _queue(
    session: Session,
    environment_id: int,
    kind: str,
    operation: str,
    arguments: dict[str, Any],
    selection: dict[str, Any],
    total: int | None,
    created_by: str | None,
) -> Job:
    now = utcnow()
    job = Job(
        environment_id=environment_id,
        kind=kind,
        operation=operation,
        arguments=arguments,
        selection=selection,
        status=QUEUED,
        total=total,
        done=0,
        failed=0,
        errors=[],
        state={},
        file_size=0,
        attempts=0,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, *, environment_id: int, id: int) -> Job:
    return get_scoped(session, Job, environment_id=environment_id, id=id, what="job")


def list_jobs(
    session: Session,
    *,
    environment_id: int,
    status: str | None,
    kind: str | None,
    params: PageParams,
) -> Page:
    """The environment's jobs, newest first."""
    query = select(Job).where(Job.environment_id == environment_id)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    order = Order("id", Job.id, Job.id, descending=True)
    return paginate(session, query, order=order, params=params)


def cancel_job(session: Session, *, environment_id: int, id: int) -> Job:
    """Stop a queued or running job. Chunks already applied stay applied; the runner stops
    before its next chunk (it locks the job row while it works on one)."""
    job = get_scoped(session, Job, environment_id=environment_id, id=id, what="job", lock=True)
    if job.status in FINISHED:
        raise Conflict(f"job {id} has already {job.status}", field="status")
    now = utcnow()
    job.status = CANCELLED
    job.finished_at = job.updated_at = now
    job.lease_owner = None
    job.lease_expires_at = None
    session.flush()
    return job
