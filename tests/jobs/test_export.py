"""Exports: CSV and JSON Lines files of the selected users, downloaded once the job is done."""

from __future__ import annotations

import csv
import io
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
from fastapi.testclient import TestClient

from audience.config import Settings
from audience.db import Database, utcnow
from audience.jobs.runner import JobRunner
from tests.conftest import Tenant
from tests.factories import create_user
from tests.jobs.helpers import (
    create_tag,
    error_of,
    expire_lease,
    hold_by_a_dead_runner,
    job,
    run,
)


def export(api: TestClient, **body: Any) -> dict[str, Any]:
    response = api.post("/api/v1/users/export", json=body)
    assert response.status_code == 202, response.text
    return dict(response.json())


def download(api: TestClient, job_id: str) -> Any:
    response = api.get(f"/api/v1/jobs/{job_id}/download")
    assert response.status_code == 200, response.text
    return response


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_export_of_a_filter(api: TestClient, database: Database) -> None:
    tag = create_tag(api, "VIP")
    ada = create_user(
        api,
        first_name="Ada",
        signed_up_at=1700000000,
        custom_attributes={"plan": "pro", "seats": 3, "beta": True, "langs": ["en", "fr"]},
    )
    create_user(api, custom_attributes={"plan": "free"})
    api.post(f"/api/v1/users/{ada['id']}/tags", json={"id": tag["id"]})
    created = export(api, filter={"field": "custom_attributes.plan", "op": "eq", "value": "pro"})
    assert (created["kind"], created["operation"]) == ("export", "export")
    assert created["arguments"] == {"format": "csv"}
    run(database)
    finished = job(api, created["id"])
    assert (finished["status"], finished["total"], finished["done"]) == ("succeeded", 1, 1)
    assert finished["download_url"] == f"/api/v1/jobs/{created['id']}/download"
    response = download(api, created["id"])
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert f'filename="users-{created["id"]}.csv"' in response.headers["content-disposition"]
    (row,) = rows(response.text)
    assert row["id"] == ada["id"] and row["user_id"] == ada["user_id"]
    assert row["email"] == ada["email"] and row["first_name"] == "Ada"
    assert row["type"] == "user" and row["anonymous"] == "false"
    assert row["signed_up_at"] == "1700000000"
    assert row["city"] == ""  # null is an empty cell
    assert row["tags"] == '["VIP"]'
    assert row["custom_attributes.plan"] == "pro"
    assert row["custom_attributes.seats"] == "3"
    assert row["custom_attributes.beta"] == "true"
    assert row["custom_attributes.langs"] == '["en","fr"]'
    assert "custom_attributes" not in row and "avatar" not in row


def test_csv_header_has_every_defined_attribute(api: TestClient, database: Database) -> None:
    create_user(api, custom_attributes={"b": 1})
    create_user(api, custom_attributes={"a": "x"})
    created = export(api, filter={"and": []})
    run(database)
    header = download(api, created["id"]).text.splitlines()[0].split(",")
    assert header[:3] == ["type", "id", "user_key"]
    assert header[-2:] == ["custom_attributes.a", "custom_attributes.b"]


def test_jsonl_export_of_ids_is_the_user_object(api: TestClient, database: Database) -> None:
    a = create_user(api, custom_attributes={"plan": "pro"})
    b = create_user(api)
    create_user(api)
    created = export(api, format="jsonl", ids=[b["id"], a["id"]])
    run(database)
    response = download(api, created["id"])
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert [line["id"] for line in lines] == [a["id"], b["id"]]  # in id order
    assert lines[0] == api.get(f"/api/v1/users/{a['id']}").json()


def test_export_is_written_in_chunks(api: TestClient, database: Database) -> None:
    ids = [create_user(api)["id"] for _ in range(5)]
    created = export(api, format="jsonl", filter={"and": []})
    runner = JobRunner(database, chunk_size=2)
    runner.run_once(max_chunks=1)
    middle = job(api, created["id"])
    assert (middle["status"], middle["done"], middle["download_url"]) == ("running", 2, None)
    response = api.get(f"/api/v1/jobs/{created['id']}/download")
    assert response.status_code == 409
    assert error_of(response)["code"] == "not_ready"
    runner.drain()
    lines = download(api, created["id"]).content.splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == ids


def test_a_resumed_export_has_no_user_twice(
    api: TestClient, database: Database, settings: Settings
) -> None:
    ids = [create_user(api)["id"] for _ in range(5)]
    created = export(api, filter={"and": []})
    JobRunner(database, chunk_size=2).run_once(max_chunks=1)
    hold_by_a_dead_runner(database, created["id"])
    # It had written its next chunk to the file when it died, before that chunk committed.
    (part,) = (Path(settings.data_dir) / "exports").rglob("*.part")
    with part.open("ab") as file:
        file.write(b"user,written,but,never,committed\r\n")
    expire_lease(database, created["id"])
    run(database, chunk_size=2)
    assert job(api, created["id"])["done"] == 5
    assert [row["id"] for row in rows(download(api, created["id"]).text)] == ids


def test_an_empty_export_has_just_the_header(api: TestClient, database: Database) -> None:
    create_user(api, custom_attributes={"plan": "free"})
    created = export(api, filter={"field": "custom_attributes.plan", "op": "eq", "value": "x"})
    run(database)
    text = download(api, created["id"]).text
    assert text.startswith("type,id,") and text.count("\n") == 1


def test_cancelled_export_leaves_no_file(
    api: TestClient, database: Database, settings: Settings
) -> None:
    for _ in range(3):
        create_user(api)
    created = export(api, filter={"and": []})
    runner = JobRunner(database, chunk_size=1)
    runner.run_once(max_chunks=1)
    api.post(f"/api/v1/jobs/{created['id']}/cancel")
    runner.drain()
    assert list((Path(settings.data_dir) / "exports").rglob("*.*")) == []
    assert api.get(f"/api/v1/jobs/{created['id']}/download").status_code == 409


def test_download_of_a_bulk_job_is_404(api: TestClient, database: Database) -> None:
    user = create_user(api)
    response = api.post("/api/v1/users/bulk", json={"operation": "delete", "ids": [user["id"]]})
    run(database)
    download = api.get(f"/api/v1/jobs/{response.json()['id']}/download")
    assert download.status_code == 404


def test_a_removed_export_file_is_410(
    api: TestClient, database: Database, settings: Settings
) -> None:
    create_user(api)
    created = export(api, filter={"and": []})
    run(database)
    for path in (Path(settings.data_dir) / "exports").rglob("*.csv"):
        path.unlink()
    assert api.get(f"/api/v1/jobs/{created['id']}/download").status_code == 410


def test_an_export_holds_only_its_environment(
    api: TestClient, database: Database, other_tenant: Tenant
) -> None:
    mine = create_user(api)
    create_user(other_tenant.client)
    created = export(api, format="jsonl", filter={"and": []})
    run(database)
    lines = download(api, created["id"]).content.splitlines()
    assert [orjson.loads(line)["id"] for line in lines] == [mine["id"]]
    response = other_tenant.client.get(f"/api/v1/jobs/{created['id']}/download")
    assert response.status_code == 404


def test_export_files_are_private(api: TestClient, database: Database, settings: Settings) -> None:
    create_user(api)
    export(api, filter={"and": []})
    run(database)
    (path,) = (Path(settings.data_dir) / "exports").rglob("*.csv")
    assert path.stat().st_mode & 0o077 == 0


def test_export_files_expire_after_the_retention_days(
    api: TestClient, database: Database, settings: Settings
) -> None:
    create_user(api)
    created = export(api, filter={"and": []})
    run(database)
    assert download(api, created["id"]).text
    files = Path(settings.data_dir) / "exports"
    assert len(list(files.rglob("*.csv"))) == 1

    def runner(days_later: float) -> JobRunner:
        return JobRunner(database, clock=lambda: utcnow() + timedelta(days=days_later))

    assert runner(6.9).expire_exports() == 0  # AUDIENCE_EXPORT_DAYS is 7
    assert download(api, created["id"]).status_code == 200
    assert runner(7.1).expire_exports() == 1
    assert list(files.rglob("*.csv")) == []
    assert job(api, created["id"])["download_url"] is None
    gone = api.get(f"/api/v1/jobs/{created['id']}/download")
    assert gone.status_code == 410 and error_of(gone)["code"] == "gone"
    assert runner(30).expire_exports() == 0  # nothing left to expire
