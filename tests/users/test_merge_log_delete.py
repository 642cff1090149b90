"""The merge log outlives deleted users: their ids become null and the merge can't be undone."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import delete

from audience.db import Database
from audience.users.models import User
from tests.factories import create_user
from tests.jobs.helpers import run
from tests.users.test_merge import error_of, merged, track, undo


def test_deleting_the_survivor_keeps_the_merge_with_null_ids(api: TestClient) -> None:
    survivor, source = create_user(api), create_user(api)
    track(api, source)
    body = merged(api, survivor, source)
    assert api.delete(f"/api/v1/users/{survivor['id']}").status_code == 200
    response = api.get(f"/api/v1/merges/{body['id']}")
    assert response.status_code == 200
    kept = response.json()
    assert (kept["from_user_id"], kept["into_user_id"]) == (None, None)
    assert kept["moved_counts"] == body["moved_counts"] and kept["created_at"] == body["created_at"]


def test_undoing_a_merge_whose_survivor_was_deleted_is_a_409(api: TestClient) -> None:
    survivor, source = create_user(api), create_user(api)
    body = merged(api, survivor, source)
    assert api.delete(f"/api/v1/users/{survivor['id']}").status_code == 200
    response = undo(api, body["id"])
    assert response.status_code == 409
    assert error_of(response) == {
        "code": "merge_user_deleted",
        "message": f"merge {body['id']} can't be undone: its survivor was deleted",
        "field": "into_user_id",
    }
    assert api.get(f"/api/v1/merges/{body['id']}").json()["undone_at"] is None


def test_undoing_a_merge_whose_merged_away_user_is_gone_is_a_409(
    api: TestClient, database: Database
) -> None:
    survivor, source = create_user(api), create_user(api)
    body = merged(api, survivor, source)
    with database.transaction() as session:  # no route deletes a hidden user: straight to SQL
        session.execute(delete(User).where(User.id == int(source["id"])))
    response = undo(api, body["id"])
    assert response.status_code == 409
    assert error_of(response)["code"] == "merge_user_deleted"
    assert error_of(response)["field"] == "from_user_id"
    listed = api.get(f"/api/v1/users/{survivor['id']}/merges").json()["merges"]
    assert [(m["id"], m["from_user_id"], m["into_user_id"]) for m in listed] == [
        (body["id"], None, survivor["id"])
    ]


def test_a_deleted_user_leaves_its_undone_merges_listed_for_the_other(api: TestClient) -> None:
    survivor, source = create_user(api), create_user(api)
    body = merged(api, survivor, source)
    assert undo(api, body["id"]).status_code == 200
    assert api.delete(f"/api/v1/users/{source['id']}").status_code == 200
    (listed,) = api.get(f"/api/v1/users/{survivor['id']}/merges").json()["merges"]
    assert (listed["from_user_id"], listed["into_user_id"]) == (None, survivor["id"])
    assert listed["undone_at"] is not None
    response = undo(api, body["id"])  # undone already: that is the answer, not the deletion
    assert (response.status_code, error_of(response)["code"]) == (409, "conflict")


def test_a_bulk_delete_keeps_the_merges_too(api: TestClient, database: Database) -> None:
    survivor, source = create_user(api), create_user(api)
    body = merged(api, survivor, source)
    response = api.post("/api/v1/users/bulk", json={"operation": "delete", "ids": [survivor["id"]]})
    assert response.status_code == 202, response.text
    run(database)
    kept = api.get(f"/api/v1/merges/{body['id']}").json()
    assert (kept["from_user_id"], kept["into_user_id"]) == (None, None)


def test_deleting_a_merged_away_user_by_id_is_a_404(api: TestClient) -> None:
    survivor, source = create_user(api), create_user(api)
    merged(api, survivor, source)
    response = api.delete(f"/api/v1/users/{source['id']}")
    assert (response.status_code, error_of(response)["code"]) == (404, "not_found")
    assert api.get(f"/api/v1/users/{survivor['id']}").status_code == 200
