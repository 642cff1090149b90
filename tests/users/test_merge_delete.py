"""Deleting a user deletes the users merged into them, down the whole chain."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audience.db import Database
from audience.users.models import User
from tests.factories import create_user


def test_deleting_the_survivor_deletes_the_whole_merge_chain(
    api: TestClient, database: Database
) -> None:
    first, second, third = create_user(api), create_user(api), create_user(api)
    assert api.post(f"/api/v1/users/{second['id']}/merge", json={"from": first["id"]}).is_success
    assert api.post(f"/api/v1/users/{third['id']}/merge", json={"from": second["id"]}).is_success
    assert api.delete(f"/api/v1/users/{third['id']}").status_code == 200
    with database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
    response = api.get("/api/v1/users/lookup", params={"user_id": first["user_id"]})
    assert response.status_code == 404
