"""Applying a bulk operation to one chunk of users, inside the runner's transaction.

A chunk is tried in one savepoint. When something about a user makes it fail (a value its
attribute can't take, a user deleted meanwhile), it is redone one user at a time in savepoints,
so that user is reported and the others are changed: the same slow path as the processor's.
Tags and lists change with one statement per chunk; attributes go through `update_user` (types,
limits, R-ATTR-5 and the attribute history, source `bulk`, ref `job:<id>`); deletes through
`delete_users`, the whole chunk at once (cascades, the `user.deleted` webhooks).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, delete, select
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.orm import Session

from audience.attributes.service import cache_definitions, forget_definitions
from audience.db import insert_ignore, utcnow
from audience.environments.models import Environment
from audience.errors import AudienceError, conflict_from_integrity_error
from audience.jobs.models import Job
from audience.lists.models import ListMember
from audience.lists.service import get_list
from audience.tags.models import UserTag
from audience.tags.service import get_tag
from audience.users.delete import delete_users
from audience.users.models import User
from audience.users.schemas import UserWrite
from audience.users.service import (
    ChangeSource,
    history_later,
    update_user,
    write_history,
)

CUSTOM = "custom_attributes."
# What a single user can do to fail a change; anything else is the job's failure, not theirs.
USER_ERRORS = (AudienceError, IntegrityError, DataError)

Apply = Callable[[Session, list[User]], None]


@dataclass(frozen=True)
class Failure:
    user_id: int
    code: str
    message: str
    field: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "user_id": str(self.user_id),
            "code": self.code,
            "message": self.message,
            "field": self.field,
        }


def failure(user_id: int, exc: Exception) -> Failure:
    if isinstance(exc, IntegrityError):
        exc = conflict_from_integrity_error(exc)
    if isinstance(exc, AudienceError):
        return Failure(user_id, exc.code, exc.message, exc.field)
    return Failure(user_id, "invalid_value", "the database refused the value")


def _data(job: Job) -> dict[str, Any]:
    """The user write of set/unset_attribute, as PATCH /users/{id} would make it."""
    attribute = job.arguments["attribute"]
    value = job.arguments.get("value") if job.operation == "set_attribute" else None
    if attribute.startswith(CUSTOM):
        return {"custom_attributes": {attribute.removeprefix(CUSTOM): value}}
    # Validated again here: typed values (timestamps) are stored as the JSON that was sent.
    return UserWrite.model_validate({attribute: value}).model_dump(exclude_unset=True)


def operation(session: Session, job: Job, environment: Environment) -> Apply:
    """What to do to a chunk of users. A tag or list deleted since the job was created is a
    NotFound here, outside any savepoint: the job fails, naming it."""
    if job.operation in ("set_attribute", "unset_attribute"):
        data = _data(job)
        source = ChangeSource("bulk", f"job:{job.id}")

        def write(session: Session, users: list[User]) -> None:
            for user in users:
                update_user(session, environment=environment, user=user, data=data, source=source)

        return write
    if job.operation in ("add_tag", "remove_tag"):
        tag = get_tag(
            session, environment_id=job.environment_id, id=int(job.arguments["tag"]["id"])
        )
        if job.operation == "add_tag":

            def tag_users(session: Session, users: list[User]) -> None:
                now = utcnow()
                rows = [{"tag_id": tag.id, "user_id": user.id, "tagged_at": now} for user in users]
                insert_ignore(session, UserTag, rows)

            return tag_users

        def untag_users(session: Session, users: list[User]) -> None:
            ids = [user.id for user in users]
            session.execute(
                delete(UserTag).where(UserTag.tag_id == tag.id, UserTag.user_id.in_(ids))
            )

        return untag_users
    if job.operation in ("add_to_list", "remove_from_list"):
        user_list = get_list(
            session, environment_id=job.environment_id, id=int(job.arguments["list"]["id"])
        )
        if job.operation == "add_to_list":

            def add(session: Session, users: list[User]) -> None:
                ids = [user.id for user in users]
                present = set(
                    session.scalars(
                        select(ListMember.user_id).where(
                            ListMember.list_id == user_list.id, ListMember.user_id.in_(ids)
                        )
                    )
                )
                now = utcnow()
                rows = [
                    {"list_id": user_list.id, "user_id": id, "added_at": now}
                    for id in ids
                    if id not in present
                ]
                if rows:  # like lists.service: updated_at moves only when the members change
                    insert_ignore(session, ListMember, rows)
                    user_list.updated_at = now

            return add

        def remove(session: Session, users: list[User]) -> None:
            ids = [user.id for user in users]
            result = cast(
                CursorResult[Any],
                session.execute(
                    delete(ListMember).where(
                        ListMember.list_id == user_list.id, ListMember.user_id.in_(ids)
                    )
                ),
            )
            if result.rowcount:
                user_list.updated_at = utcnow()

        return remove
    if job.operation == "delete":

        def delete_chunk(session: Session, users: list[User]) -> None:
            ids = [user.id for user in users]
            if delete_users(session, environment_id=job.environment_id, ids=ids) < len(ids):
                # One was deleted or merged meanwhile: the savepoint rolls back and the
                # one-by-one retry reports which.
                raise AudienceError("not_found", "a user was deleted meanwhile", status=404)

        return delete_chunk
    raise ValueError(f"unknown bulk operation {job.operation!r}")


def apply_chunk(session: Session, apply: Apply, users: list[User]) -> list[Failure]:
    """Apply to every user of the chunk; returns those it could not be applied to."""
    ids = [user.id for user in users]
    cache_definitions(session)  # one definitions query per attribute name, not per user
    kept = history_later(session)  # the chunk's history rows in one insert
    try:
        with session.begin_nested():
            apply(session, users)
            write_history(session)
            session.flush()
        return []
    except USER_ERRORS:
        kept.clear()
        forget_definitions(session)
    failures = []
    for user_id in ids:
        mark = len(kept)
        try:
            with session.begin_nested():
                # Loaded again: a user may be gone (a delete cascades to merged-away users).
                user = session.get(User, user_id, populate_existing=True)
                if user is None:
                    raise AudienceError("not_found", f"user {user_id} not found", status=404)
                apply(session, [user])
                session.flush()
        except USER_ERRORS as exc:
            del kept[mark:]
            forget_definitions(session)
            failures.append(failure(user_id, exc))
    write_history(session)
    return failures
