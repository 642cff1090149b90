"""API keys record when they were last used, at most about once a minute (not per request)."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from audience.db import Database, utcnow
from audience.environments import service as environments
from audience.environments.models import ApiKey
from tests.conftest import Tenant


def last_used(database: Database, tenant: Tenant) -> list[object]:
    with database.transaction(write=False) as session:
        query = select(ApiKey.last_used_at).where(ApiKey.environment_id == tenant.id)
        return list(session.scalars(query))


def set_last_used(database: Database, tenant: Tenant, value: object) -> None:
    with database.transaction() as session:
        session.execute(
            update(ApiKey).where(ApiKey.environment_id == tenant.id).values(last_used_at=value)
        )


def test_a_new_key_was_never_used(database: Database, tenant: Tenant) -> None:
    assert last_used(database, tenant) == [None]


def test_a_read_records_the_use(database: Database, tenant: Tenant) -> None:
    before = utcnow()
    response = tenant.client.get("/api/v1/users")
    assert response.status_code == 200
    [used] = last_used(database, tenant)
    assert used is not None and before - timedelta(seconds=1) <= used <= utcnow()


def test_a_write_records_the_use(database: Database, tenant: Tenant) -> None:
    response = tenant.client.post("/api/v1/users", json={"user_id": "u-1"})
    assert response.status_code in (200, 201)
    assert last_used(database, tenant)[0] is not None


def test_a_failed_request_still_counts_as_a_use(database: Database, tenant: Tenant) -> None:
    response = tenant.client.get("/api/v1/users/999999")
    assert response.status_code == 404
    assert last_used(database, tenant)[0] is not None


def test_a_recent_use_is_not_written_again(database: Database, tenant: Tenant) -> None:
    recent = utcnow() - timedelta(seconds=20)
    set_last_used(database, tenant, recent)
    assert tenant.client.get("/api/v1/users").status_code == 200
    assert last_used(database, tenant) == [recent]


def test_an_old_use_is_brought_up_to_date(database: Database, tenant: Tenant) -> None:
    old = utcnow() - timedelta(minutes=5)
    set_last_used(database, tenant, old)
    assert tenant.client.get("/api/v1/users").status_code == 200
    [used] = last_used(database, tenant)
    assert used is not None and used > old + timedelta(minutes=4)


def test_only_the_key_used_is_touched(
    app: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    with database.transaction() as session:
        _, second = environments.create_api_key(session, environment_id=tenant.id, name="two")
    headers = {"Authorization": f"Bearer {second}"}
    assert app.get("/api/v1/users", headers=headers).status_code == 200
    with database.transaction(write=False) as session:
        keys = environments.list_api_keys(session, environment_id=tenant.id)
    assert [key.name for key in keys if key.last_used_at is not None] == ["two"]
    assert last_used(database, other_tenant) == [None]


def test_unknown_and_revoked_keys_record_nothing(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    with database.transaction() as session:
        key = environments.list_api_keys(session, environment_id=tenant.id)[0]
        environments.revoke_api_key(session, environment_id=tenant.id, key_id=key.id)
    assert tenant.client.get("/api/v1/users").status_code == 401
    assert app.get("/api/v1/users", headers={"Authorization": "Bearer sk_nope"}).status_code == 401
    assert last_used(database, tenant) == [None]


def test_record_api_key_use_writes_once_per_resolution(database: Database, tenant: Tenant) -> None:
    now = utcnow()
    with database.transaction() as session:
        key = environments.list_api_keys(session, environment_id=tenant.id)[0]
        assert environments.record_api_key_use(session, key_id=key.id, now=now)
        later = now + timedelta(seconds=30)
        assert not environments.record_api_key_use(session, key_id=key.id, now=later)
        much_later = now + environments.LAST_USED_RESOLUTION
        assert environments.record_api_key_use(session, key_id=key.id, now=much_later)
    assert last_used(database, tenant) == [much_later]


def test_last_use_is_stale() -> None:
    now = utcnow()
    assert environments.last_use_is_stale(None, now=now)
    assert not environments.last_use_is_stale(now - timedelta(seconds=59), now=now)
    assert environments.last_use_is_stale(now - timedelta(seconds=60), now=now)
