"""Helpers of the jobs tests: plain functions over the REST client, the runner and the rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from audience.db import Database, utcnow
from audience.jobs.models import Job
from audience.jobs.runner import JobRunner
from audience.lists.models import ListMember
from audience.tags.models import UserTag
from audience.users.models import AttributeChange, User
from tests.factories import create_user, unique


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error.list", body
    return dict(body["errors"][0])


def users(api: TestClient, count: int, **fields: Any) -> list[str]:
    return [str(create_user(api, **fields)["id"]) for _ in range(count)]


def bulk(api: TestClient, **body: Any) -> Any:
    return api.post("/api/v1/users/bulk", json=body)


def queued(api: TestClient, **body: Any) -> dict[str, Any]:
    """A bulk job that was accepted (202)."""
    response = bulk(api, **body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def run(database: Database, **options: Any) -> None:
    JobRunner(database, **options).drain()


def job(api: TestClient, id: str) -> dict[str, Any]:
    response = api.get(f"/api/v1/jobs/{id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def done(api: TestClient, database: Database, **body: Any) -> dict[str, Any]:
    """Queue a bulk job, run it, and return the finished job object."""
    created = queued(api, **body)
    run(database)
    return job(api, created["id"])


def create_tag(api: TestClient, name: str | None = None) -> dict[str, Any]:
    response = api.post("/api/v1/tags", json={"name": name or unique("tag")})
    assert response.status_code == 200, response.text
    return dict(response.json())


def create_list(api: TestClient, name: str | None = None) -> dict[str, Any]:
    response = api.post("/api/v1/lists", json={"name": name or unique("list")})
    assert response.status_code == 200, response.text
    return dict(response.json())


def tagged(database: Database, tag_id: str) -> set[str]:
    with database.transaction() as session:
        rows = session.scalars(select(UserTag.user_id).where(UserTag.tag_id == int(tag_id)))
        return {str(row) for row in rows}


def members(database: Database, list_id: str) -> set[str]:
    with database.transaction() as session:
        rows = session.scalars(select(ListMember.user_id).where(ListMember.list_id == int(list_id)))
        return {str(row) for row in rows}


def custom(database: Database, user_id: str) -> dict[str, Any]:
    with database.transaction() as session:
        user = session.get(User, int(user_id))
        assert user is not None
        return dict(user.custom_attributes)


def existing(database: Database, ids: list[str]) -> set[str]:
    with database.transaction() as session:
        rows = session.scalars(select(User.id).where(User.id.in_([int(id) for id in ids])))
        return {str(row) for row in rows}


def history(database: Database, user_id: str) -> list[tuple[str, Any, Any, str, str | None]]:
    """(attribute, old, new, source, source_ref) of a user's changes, oldest first."""
    with database.transaction() as session:
        rows = session.scalars(
            select(AttributeChange)
            .where(AttributeChange.user_id == int(user_id))
            .order_by(AttributeChange.id)
        )
        return [(r.attribute, r.old_value, r.new_value, r.source, r.source_ref) for r in rows]


def job_count(database: Database) -> int:
    with database.transaction() as session:
        return len(list(session.scalars(select(Job.id))))


def expire_lease(database: Database, job_id: str) -> None:
    """As if the job's runner died: its lease has run out."""
    with database.transaction() as session:
        session.execute(
            update(Job)
            .where(Job.id == int(job_id))
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def hold_by_a_dead_runner(database: Database, job_id: str) -> None:
    """As if a runner held the job, lease running, and died."""
    with database.transaction() as session:
        session.execute(
            update(Job)
            .where(Job.id == int(job_id))
            .values(lease_owner="dead", lease_expires_at=utcnow() + timedelta(minutes=5))
        )
