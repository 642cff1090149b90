"""The bulk delete job and `delete_users`: whole chunks at once, chains, cascades, webhooks."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, func, select

from audience.companies.models import Membership
from audience.db import Database
from audience.events.models import Event
from audience.lists.models import ListMember
from audience.tags.models import UserTag
from audience.users import delete
from audience.users.delete import delete_users
from audience.users.models import AttributeChange, Identity
from audience.webhooks.models import WebhookDelivery
from tests.conftest import Tenant
from tests.factories import create_company, create_user
from tests.jobs.helpers import create_list, done, existing, job, queued, run, users
from tests.users.test_merge import add_anonymous_id, add_to_list, join, merged, tag, track
from tests.webhooks.helpers import create_webhook

LINKED = (Event, Identity, UserTag, ListMember, Membership, AttributeChange)


def linked_counts(database: Database, ids: list[str]) -> dict[str, int]:
    """Rows held on these users, per table."""
    wanted = [int(id) for id in ids]
    with database.transaction() as session:
        return {
            model.__tablename__: session.scalar(
                select(func.count()).select_from(model).where(model.user_id.in_(wanted))
            )
            or 0
            for model in LINKED
        }


def populated(api: TestClient, database: Database, tenant: Tenant) -> dict[str, Any]:
    """A user with an event, an anonymous id, a tag, a list and a company."""
    user = create_user(api)
    track(api, user)
    add_anonymous_id(database, tenant, user, f"device-{user['id']}")
    tag(api, user, "vip")
    add_to_list(api, create_list(api)["id"], user)
    join(api, user, create_company(api))
    return user


def test_one_job_deletes_many_users_with_the_users_merged_into_them(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    doomed = [populated(api, database, tenant) for _ in range(4)]
    # A chain two deep into the first user, and one user merged into the second.
    inner, outer, single = (populated(api, database, tenant) for _ in range(3))
    merged(api, outer, inner)
    merged(api, doomed[0], outer)
    merged(api, doomed[1], single)
    kept = populated(api, database, tenant)
    gone = [user["id"] for user in (*doomed, inner, outer, single)]
    before = linked_counts(database, gone)
    assert before["events"] == 7 and before["user_tags"] == 4  # shared tag: merges dropped 3

    finished = done(api, database, operation="delete", ids=[user["id"] for user in doomed])

    assert (finished["status"], finished["done"], finished["failed"]) == ("succeeded", 4, 0)
    assert existing(database, [*gone, kept["id"]]) == {kept["id"]}
    assert set(linked_counts(database, gone).values()) == {0}
    assert 0 not in linked_counts(database, [kept["id"]]).values()


def test_a_delete_job_queues_one_user_deleted_per_user_as_it_was(
    api: TestClient, database: Database
) -> None:
    create_webhook(api, topics=["user.deleted"])
    a, b, c = (create_user(api, name=name) for name in ("Ada", "Bea", "Cy"))
    merged(api, a, create_user(api))  # the merged-away user goes unannounced

    done(api, database, operation="delete", ids=[a["id"], b["id"], c["id"]])

    with database.transaction() as session:
        rows = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)).all()
        shown = [(row.topic, row.user_id, row.payload["user"]["id"], row.payload["user"]["name"])
                 for row in rows]  # fmt: skip
    assert shown == [
        ("user.deleted", int(user["id"]), user["id"], user["name"]) for user in (a, b, c)
    ]


def test_users_deleted_after_a_delete_job_was_created_are_counted_as_failed(
    api: TestClient, database: Database
) -> None:
    a, b, c = users(api, 3)
    created = queued(api, operation="delete", ids=[a, b, c])
    assert api.delete(f"/api/v1/users/{b}").status_code == 200
    run(database)
    finished = job(api, created["id"])
    assert (finished["status"], finished["done"], finished["failed"]) == ("succeeded", 3, 1)
    assert finished["errors"] == [
        {"user_id": b, "code": "not_found", "message": f"user {b} not found", "field": None}
    ]
    assert existing(database, [a, b, c]) == set()


def test_delete_users_skips_unknown_merged_away_and_foreign_ids(
    api: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    a, b, survivor, source = (create_user(api) for _ in range(4))
    merged(api, survivor, source)
    foreign = create_user(other_tenant.client)
    ids = [int(a["id"]), 99_999_999, int(source["id"]), int(foreign["id"]), int(a["id"])]
    with database.transaction() as session:
        assert delete_users(session, environment_id=tenant.id, ids=ids) == 1
    everyone = [a["id"], b["id"], survivor["id"], source["id"], foreign["id"]]
    assert existing(database, everyone) == set(everyone) - {a["id"]}


def test_delete_users_works_through_several_chunks(
    api: TestClient, database: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(delete, "CHUNK", 2)
    create_webhook(api, topics=["user.deleted"])
    people = [create_user(api) for _ in range(5)]
    merged(api, people[4], create_user(api))
    ids = [int(user["id"]) for user in people]
    with database.transaction() as session:
        assert delete_users(session, environment_id=tenant.id, ids=ids) == 5
    with database.transaction() as session:
        announced = session.scalars(select(WebhookDelivery.user_id)).all()
    assert sorted(announced) == ids
    assert existing(database, [str(id) for id in ids]) == set()


def _statements(database: Database, tenant: Tenant, ids: list[int]) -> int:
    """How many SQL statements deleting `ids` takes."""
    seen: list[str] = []

    def count(*args: Any) -> None:
        seen.append(args[2])

    event.listen(database.engine, "before_cursor_execute", count)
    try:
        with database.transaction() as session:
            assert delete_users(session, environment_id=tenant.id, ids=ids) == len(ids)
    finally:
        event.remove(database.engine, "before_cursor_execute", count)
    return len(seen)


def test_the_statements_of_a_delete_do_not_grow_with_the_users_or_their_chains(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    # No webhook: the ORM may insert a delivery per row (it does on SQLite).
    few = [create_user(api) for _ in range(2)]
    many = [create_user(api) for _ in range(12)]
    for user in many[:4]:  # chains two deep
        middle = create_user(api)
        merged(api, middle, create_user(api))
        merged(api, user, middle)
    small = _statements(database, tenant, [int(user["id"]) for user in few])
    large = _statements(database, tenant, [int(user["id"]) for user in many])
    assert small == large
