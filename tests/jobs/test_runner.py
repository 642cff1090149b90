"""Running jobs: chunks and progress, cancel, failures, resuming a crashed job, several runners."""

from __future__ import annotations

import threading
import time

from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.app import create_app
from audience.config import Settings
from audience.db import Database
from audience.jobs.models import Job
from audience.jobs.runner import MAX_ATTEMPTS, JobRunner
from audience.users.models import User
from tests.conftest import Tenant
from tests.jobs.helpers import (
    create_list,
    create_tag,
    custom,
    existing,
    expire_lease,
    history,
    hold_by_a_dead_runner,
    job,
    queued,
    run,
    tagged,
    users,
)


def test_progress_is_saved_after_each_chunk(api: TestClient, database: Database) -> None:
    ids = users(api, 5, custom_attributes={"plan": "pro"})
    tag = create_tag(api)
    created = queued(
        api,
        operation="add_tag",
        tag={"id": tag["id"]},
        filter={"field": "custom_attributes.plan", "op": "eq", "value": "pro"},
    )
    assert created["total"] is None  # a filter is counted when the job starts
    runner = JobRunner(database, chunk_size=2)
    assert runner.run_once(max_chunks=1) == int(created["id"])
    first = job(api, created["id"])
    assert (first["status"], first["total"], first["done"]) == ("running", 5, 2)
    assert first["started_at"] is not None and first["finished_at"] is None
    assert tagged(database, tag["id"]) == set(ids[:2])  # in id order
    runner.run_once(max_chunks=1)
    assert job(api, created["id"])["done"] == 4
    runner.drain()
    last = job(api, created["id"])
    assert (last["status"], last["done"], last["failed"]) == ("succeeded", 5, 0)
    assert tagged(database, tag["id"]) == set(ids)


def test_progress_on_ids(api: TestClient, database: Database) -> None:
    ids = users(api, 5)
    created = queued(api, operation="delete", ids=ids)
    JobRunner(database, chunk_size=3).run_once(max_chunks=1)
    middle = job(api, created["id"])
    assert (middle["total"], middle["done"]) == (5, 3)
    assert existing(database, ids) == set(ids[3:])
    run(database, chunk_size=3)
    assert job(api, created["id"])["status"] == "succeeded"
    assert existing(database, ids) == set()


def test_users_created_after_a_filter_job_starts_are_not_selected(
    api: TestClient, database: Database
) -> None:
    users(api, 3)
    created = queued(
        api, operation="set_attribute", attribute="city", value="Oslo", filter={"and": []}
    )
    JobRunner(database, chunk_size=2).run_once(max_chunks=1)
    (late,) = users(api, 1)
    run(database, chunk_size=2)
    finished = job(api, created["id"])
    assert (finished["total"], finished["done"]) == (3, 3)
    assert api.get(f"/api/v1/users/{late}").json()["city"] is None


def test_cancel_a_queued_job_runs_nothing(api: TestClient, database: Database) -> None:
    ids = users(api, 2)
    created = queued(api, operation="delete", ids=ids)
    response = api.post(f"/api/v1/jobs/{created['id']}/cancel")
    assert response.status_code == 200
    cancelled = response.json()
    assert cancelled["status"] == "cancelled" and cancelled["finished_at"] is not None
    run(database)
    assert job(api, created["id"])["done"] == 0
    assert existing(database, ids) == set(ids)


def test_cancel_a_running_job_stops_it_before_the_next_chunk(
    api: TestClient, database: Database
) -> None:
    ids = users(api, 6)
    created = queued(api, operation="delete", ids=ids)
    runner = JobRunner(database, chunk_size=2)
    runner.run_once(max_chunks=1)
    assert api.post(f"/api/v1/jobs/{created['id']}/cancel").status_code == 200
    runner.drain()
    stopped = job(api, created["id"])
    assert (stopped["status"], stopped["done"]) == ("cancelled", 2)
    assert existing(database, ids) == set(ids[2:])  # what was done stays done


def test_cancel_a_finished_job_is_409(api: TestClient, database: Database) -> None:
    created = queued(api, operation="delete", ids=users(api, 1))
    run(database)
    response = api.post(f"/api/v1/jobs/{created['id']}/cancel")
    assert response.status_code == 409
    assert response.json()["errors"][0]["message"] == f"job {created['id']} has already succeeded"


def test_a_user_the_change_cannot_apply_to_fails_alone(api: TestClient, database: Database) -> None:
    a, b, c = users(api, 3, custom_attributes={"tags": ["x"]})
    # b's value can't take $add (a list): b fails, a and c are changed.
    api.patch(f"/api/v1/users/{b}", json={"custom_attributes": {"score": 1}})
    api.patch(f"/api/v1/users/{a}", json={"custom_attributes": {"score": 1}})
    api.patch(f"/api/v1/users/{c}", json={"custom_attributes": {"score": 1}})
    with database.transaction() as session:  # a value that predates the number definition
        user = session.get(User, int(b))
        assert user is not None
        user.custom_attributes = {**user.custom_attributes, "score": "high"}
    created = queued(
        api,
        operation="set_attribute",
        attribute="custom_attributes.score",
        value={"$add": 2},
        ids=[a, b, c],
    )
    run(database)
    finished = job(api, created["id"])
    assert (finished["status"], finished["done"], finished["failed"]) == ("succeeded", 3, 1)
    assert finished["errors"] == [
        {
            "user_id": b,
            "code": "wrong_type",
            "message": "$add needs a number attribute",
            "field": "custom_attributes.score",
        }
    ]
    assert custom(database, a)["score"] == custom(database, c)["score"] == 3
    assert custom(database, b)["score"] == "high"
    # The history has the changes that were made, and none for the user that failed.
    assert history(database, a)[-1][:3] == ("custom_attributes.score", 1, 3)
    assert all(change[3] != "bulk" for change in history(database, b))


def test_users_deleted_after_the_job_was_created_are_counted_as_failed(
    api: TestClient, database: Database
) -> None:
    a, b = users(api, 2)
    created = queued(api, operation="set_attribute", attribute="city", value="Rome", ids=[a, b])
    assert api.delete(f"/api/v1/users/{a}").status_code == 200
    run(database)
    finished = job(api, created["id"])
    assert (finished["status"], finished["done"], finished["failed"]) == ("succeeded", 2, 1)
    assert finished["errors"] == [
        {"user_id": a, "code": "not_found", "message": f"user {a} not found", "field": None}
    ]
    assert api.get(f"/api/v1/users/{b}").json()["city"] == "Rome"


def test_a_tag_deleted_before_the_job_runs_fails_the_job_naming_it(
    api: TestClient, database: Database
) -> None:
    tag = create_tag(api)
    created = queued(api, operation="add_tag", tag={"id": tag["id"]}, ids=users(api, 2))
    assert api.delete(f"/api/v1/tags/{tag['id']}").status_code == 200
    run(database)
    finished = job(api, created["id"])
    assert finished["status"] == "failed" and finished["finished_at"] is not None
    assert finished["errors"] == [
        {
            "user_id": None,
            "code": "not_found",
            "message": f"tag {tag['id']} not found",
            "field": None,
        }
    ]


def test_a_list_deleted_midway_fails_the_job_and_keeps_what_was_done(
    api: TestClient, database: Database
) -> None:
    user_list = create_list(api)
    created = queued(api, operation="add_to_list", list={"id": user_list["id"]}, ids=users(api, 4))
    runner = JobRunner(database, chunk_size=2)
    runner.run_once(max_chunks=1)
    assert api.delete(f"/api/v1/lists/{user_list['id']}").status_code == 200
    runner.drain()
    finished = job(api, created["id"])
    assert (finished["status"], finished["done"]) == ("failed", 2)


def test_a_job_whose_runner_died_is_resumed_after_its_lease(
    api: TestClient, database: Database
) -> None:
    ids = users(api, 5)
    tag = create_tag(api)
    created = queued(api, operation="add_tag", tag={"id": tag["id"]}, ids=ids)
    JobRunner(database, chunk_size=2).run_once(max_chunks=1)
    hold_by_a_dead_runner(database, created["id"])  # it did a chunk, then died holding the job
    survivor = JobRunner(database, chunk_size=2)
    assert survivor.run_once() is None  # the lease still holds: nobody else takes it
    expire_lease(database, created["id"])
    assert survivor.run_once() == int(created["id"])
    finished = job(api, created["id"])
    assert (finished["status"], finished["done"], finished["failed"]) == ("succeeded", 5, 0)
    assert tagged(database, tag["id"]) == set(ids)
    with database.transaction() as session:
        row = session.get(Job, int(created["id"]))
        assert row is not None and row.attempts == 1


def test_a_job_that_keeps_crashing_its_runner_fails(api: TestClient, database: Database) -> None:
    created = queued(api, operation="delete", ids=users(api, 1))
    runner = JobRunner(database)
    for _ in range(MAX_ATTEMPTS + 1):
        assert runner.claim() is not None
        expire_lease(database, created["id"])
    assert runner.claim() is not None
    failed = job(api, created["id"])
    assert failed["status"] == "failed"
    assert failed["errors"][-1]["code"] == "interrupted"
    assert failed["done"] == 0


def test_two_runners_never_hold_the_same_job(api: TestClient, database: Database) -> None:
    first = queued(api, operation="delete", ids=users(api, 1))
    second = queued(api, operation="delete", ids=users(api, 1))
    a, b = JobRunner(database), JobRunner(database)
    claim_a, claim_b = a.claim(), b.claim()
    assert claim_a is not None and claim_b is not None
    assert {claim_a.job_id, claim_b.job_id} == {int(first["id"]), int(second["id"])}
    assert a.claim() is None


def test_a_long_job_yields_to_others_after_its_slice(api: TestClient, database: Database) -> None:
    long = queued(api, operation="delete", ids=users(api, 4))
    short = queued(api, operation="delete", ids=users(api, 1))
    runner = JobRunner(database, chunk_size=1, slice_seconds=0.0)
    assert runner.run_once() == int(long["id"])
    assert job(api, long["id"])["done"] == 1
    assert runner.run_once() == int(short["id"])  # the long one was let go after its slice
    assert job(api, short["id"])["status"] == "succeeded"
    assert job(api, long["id"])["status"] == "running"
    runner.drain()
    assert job(api, long["id"])["status"] == "succeeded"


def test_list_jobs_newest_first_with_filters(api: TestClient, database: Database) -> None:
    (id,) = users(api, 1)
    first = queued(api, operation="set_attribute", attribute="city", value="A", ids=[id])
    run(database)
    second = queued(api, operation="set_attribute", attribute="city", value="B", ids=[id])
    listed = api.get("/api/v1/jobs").json()
    assert listed["type"] == "job.list" and listed["total_count"] == 2
    assert [item["id"] for item in listed["jobs"]] == [second["id"], first["id"]]
    assert listed["pages"]["type"] == "pages"
    queued_only = api.get("/api/v1/jobs", params={"status": "queued"}).json()
    assert [item["id"] for item in queued_only["jobs"]] == [second["id"]]
    assert api.get("/api/v1/jobs", params={"kind": "export"}).json()["total_count"] == 0
    page = api.get("/api/v1/jobs", params={"per_page": 1}).json()
    cursor = page["pages"]["next"]["starting_after"]
    rest = api.get("/api/v1/jobs", params={"per_page": 1, "starting_after": cursor}).json()
    assert [item["id"] for item in rest["jobs"]] == [first["id"]]
    assert api.get("/api/v1/jobs", params={"status": "done"}).status_code == 400


def test_jobs_of_another_environment_are_not_found(
    api: TestClient, database: Database, other_tenant: Tenant
) -> None:
    mine = users(api, 2)
    theirs = users(other_tenant.client, 1)
    created = queued(api, operation="delete", ids=mine)
    other = other_tenant.client
    assert other.get(f"/api/v1/jobs/{created['id']}").status_code == 404
    assert other.post(f"/api/v1/jobs/{created['id']}/cancel").status_code == 404
    assert other.get(f"/api/v1/jobs/{created['id']}/download").status_code == 404
    assert other.get("/api/v1/jobs").json()["total_count"] == 0
    # Ids of the other environment's users are simply not found.
    response = other.post("/api/v1/users/bulk", json={"operation": "delete", "ids": mine})
    assert response.status_code == 404
    run(database)
    assert existing(database, theirs) == set(theirs)


def test_a_filter_job_never_reaches_another_environment(
    api: TestClient, database: Database, other_tenant: Tenant
) -> None:
    mine = users(api, 2)
    theirs = users(other_tenant.client, 2)
    created = queued(api, operation="delete", filter={"and": []})
    run(database)
    assert job(api, created["id"])["done"] == 2
    assert existing(database, mine + theirs) == set(theirs)
    with database.transaction() as session:
        assert session.scalar(select(Job.environment_id).where(Job.id == int(created["id"])))


def test_runners_in_parallel_threads_share_the_work_exactly_once(
    api: TestClient, database: Database
) -> None:
    tags = [create_tag(api) for _ in range(4)]
    ids = users(api, 7)
    jobs = [queued(api, operation="add_tag", tag={"id": tag["id"]}, ids=ids) for tag in tags]
    runners = [JobRunner(database, chunk_size=2, slice_seconds=0.0) for _ in range(3)]
    threads = [threading.Thread(target=runner.drain) for runner in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for created, tag in zip(jobs, tags, strict=True):
        finished = job(api, created["id"])
        assert (finished["status"], finished["done"], finished["failed"]) == ("succeeded", 7, 0)
        assert tagged(database, tag["id"]) == set(ids)


def test_serve_runs_jobs_in_the_background(
    settings: Settings, database: Database, tenant: Tenant
) -> None:
    background = settings.model_copy(
        update={"processor": False, "webhook_sender": False, "jobs": True}
    )
    headers = {"Authorization": f"Bearer {tenant.api_key}"}
    with TestClient(create_app(background, database=database), headers=headers) as client:
        ids = users(client, 2)
        created = queued(
            client, operation="set_attribute", attribute="city", value="Ghent", ids=ids
        )
        deadline = time.monotonic() + 20
        while job(client, created["id"])["status"] != "succeeded":
            assert time.monotonic() < deadline, job(client, created["id"])
            time.sleep(0.05)
        assert client.get(f"/api/v1/users/{ids[0]}").json()["city"] == "Ghent"
