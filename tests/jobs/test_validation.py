"""A bad bulk or export request is a 4xx naming the spot, and creates no job."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from audience.db import Database
from tests.jobs.helpers import bulk, create_list, create_tag, error_of, job_count, users


def _refused(api: TestClient, database: Database, body: dict[str, Any], status: int) -> Any:
    response = bulk(api, **body)
    assert response.status_code == status, response.text
    assert job_count(database) == 0
    return error_of(response)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"operation": "explode", "ids": ["1"]}, "operation"),
        ({"ids": ["1"]}, "operation"),
        ({"operation": "delete", "ids": ["1"], "confirm": True}, "confirm"),
        ({"operation": "delete", "ids": []}, "ids"),
        ({"operation": "delete", "ids": "1"}, "ids"),
        ({"operation": "delete", "ids": ["1"] * 10_001}, "ids"),
        ({"operation": "add_tag", "tag": {"id": "1", "name": "x"}, "ids": ["1"]}, "tag"),
        ({"operation": "add_tag", "tag": {}, "ids": ["1"]}, "tag"),
        ({"operation": "add_tag", "tag": {"colour": "red"}, "ids": ["1"]}, "tag.colour"),
        ({"operation": "add_to_list", "list": "Newsletter", "ids": ["1"]}, "list"),
        (
            {"operation": "set_attribute", "attribute": "x" * 301, "value": 1, "ids": ["1"]},
            "attribute",
        ),
        (
            {"operation": "set_attribute", "attribute": "city", "value": "a\x00b", "ids": ["1"]},
            "value",
        ),
    ],
)
def test_body_validation_is_422_naming_the_field(
    api: TestClient, database: Database, body: dict[str, Any], field: str
) -> None:
    assert _refused(api, database, body, 422)["field"] == field


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"operation": "delete"}, "ids", "exactly one of ids"),
        ({"operation": "delete", "filter": None}, "ids", "exactly one of ids"),
        ({"operation": "delete", "ids": ["{id}"], "filter": {"and": []}}, "filter", "exactly one"),
        ({"operation": "set_attribute", "value": 1, "ids": ["{id}"]}, "attribute", "needs"),
        ({"operation": "set_attribute", "attribute": "city", "ids": ["{id}"]}, "value", "needs"),
        (
            {"operation": "set_attribute", "attribute": "city", "value": None, "ids": ["{id}"]},
            "value",
            "unset_attribute",
        ),
        ({"operation": "add_tag", "ids": ["{id}"]}, "tag", "needs tag"),
        ({"operation": "delete", "tag": {"id": "1"}, "ids": ["{id}"]}, "tag", "no arguments"),
        (
            {"operation": "unset_attribute", "attribute": "city", "value": 1, "ids": ["{id}"]},
            "value",
            "not an argument of unset_attribute",
        ),
        (
            {"operation": "set_attribute", "attribute": "shoe_size", "value": 1, "ids": ["{id}"]},
            "attribute",
            "unknown attribute",
        ),
        (
            {"operation": "set_attribute", "attribute": "user_id", "value": "x", "ids": ["{id}"]},
            "attribute",
            "unknown attribute",
        ),
        (
            {"operation": "set_attribute", "attribute": "gender", "value": "x", "ids": ["{id}"]},
            "value",
            "value",
        ),
        (
            {"operation": "set_attribute", "attribute": "email", "value": "nope", "ids": ["{id}"]},
            "value",
            "not an email",
        ),
        (
            {
                "operation": "set_attribute",
                "attribute": "custom_attributes.seats",
                "value": "many",
                "ids": ["{id}"],
            },
            "value",
            "not a valid number",
        ),
        (
            {
                "operation": "set_attribute",
                "attribute": "custom_attributes.seats",
                "value": {"$append": 1},
                "ids": ["{id}"],
            },
            "value",
            "needs a list attribute",
        ),
        (
            {
                "operation": "set_attribute",
                "attribute": "custom_attributes.plan",
                "value": {"nested": 1},
                "ids": ["{id}"],
            },
            "value",
            "one operation",
        ),
        (
            {
                "operation": "set_attribute",
                "attribute": "custom_attributes.$bad",
                "value": 1,
                "ids": ["{id}"],
            },
            "attribute",
            "must not start with '$'",
        ),
        (
            {
                "operation": "unset_attribute",
                "attribute": "custom_attributes.a.b",
                "ids": ["{id}"],
            },
            "attribute",
            "contain '.'",
        ),
    ],
)
def test_a_request_that_breaks_a_rule_is_422_naming_the_field(
    api: TestClient, database: Database, body: dict[str, Any], field: str, words: str
) -> None:
    (id,) = users(api, 1, custom_attributes={"seats": 1})
    if "ids" in body:
        body = {**body, "ids": [id]}
    error = _refused(api, database, body, 422)
    assert error["field"] == field
    assert words in error["message"]


def test_wrong_type_for_a_custom_attribute_names_the_value(
    api: TestClient, database: Database
) -> None:
    (id,) = users(api, 1, custom_attributes={"trial_ends": "2025-01-31"})
    error = _refused(
        api,
        database,
        {
            "operation": "set_attribute",
            "attribute": "custom_attributes.trial_ends",
            "value": "next week",
            "ids": [id],
        },
        422,
    )
    assert error == {
        "code": "wrong_type",
        "message": "'next week' is not a valid date",
        "field": "value",
    }


def test_an_archived_attribute_is_refused(api: TestClient, database: Database) -> None:
    (id,) = users(api, 1, custom_attributes={"legacy": "x"})
    definitions = api.get("/api/v1/data_attributes", params={"model": "user"}).json()
    legacy = next(d for d in definitions["data_attributes"] if d["name"] == "legacy")
    assert api.patch(f"/api/v1/data_attributes/{legacy['id']}", json={"archived": True}).is_success
    error = _refused(
        api,
        database,
        {"operation": "unset_attribute", "attribute": "custom_attributes.legacy", "ids": [id]},
        422,
    )
    assert (error["code"], error["field"]) == ("archived", "attribute")


@pytest.mark.parametrize(
    ("filter", "field"),
    [
        ({"field": "nope", "op": "eq", "value": 1}, "filter.field"),
        ({"and": [{"field": "city", "op": "gt", "value": "x"}]}, "filter.and[0].op"),
        ({"or": "x"}, "filter.or"),
        ("everyone", "filter"),
        ({}, "filter"),
    ],
)
def test_a_bad_filter_is_400_naming_the_spot(
    api: TestClient, database: Database, filter: Any, field: str
) -> None:
    error = _refused(api, database, {"operation": "delete", "filter": filter}, 400)
    assert (error["code"], error["field"]) == ("invalid_filter", field)


def test_unknown_user_ids_are_404_naming_the_first(api: TestClient, database: Database) -> None:
    (id,) = users(api, 1)
    for bad in ("999999", "abc", "-1"):
        error = _refused(api, database, {"operation": "delete", "ids": [id, bad]}, 404)
        assert error["field"] == "ids.1"
        assert error["message"] == f"user {bad} not found"
    assert api.get(f"/api/v1/users/{id}").status_code == 200


@pytest.mark.parametrize(
    ("operation", "ref", "field", "message"),
    [
        ("add_tag", {"id": "999999"}, "tag.id", "tag 999999 not found"),
        ("add_tag", {"id": "x"}, "tag.id", "tag x not found"),
        ("remove_tag", {"name": "Nope"}, "tag.name", "tag 'Nope' not found"),
        ("add_to_list", {"id": "999999"}, "list.id", "list 999999 not found"),
        ("remove_from_list", {"name": "Nope"}, "list.name", "list 'Nope' not found"),
        ("add_to_list", {"name": "Nope"}, "list.name", "list 'Nope' not found"),
    ],
)
def test_unknown_tags_and_lists_are_404(
    api: TestClient,
    database: Database,
    operation: str,
    ref: dict[str, str],
    field: str,
    message: str,
) -> None:
    (id,) = users(api, 1)
    key = "tag" if "tag" in operation else "list"
    error = _refused(api, database, {"operation": operation, key: ref, "ids": [id]}, 404)
    assert (error["field"], error["message"]) == (field, message)


def test_a_blank_tag_name_is_refused(api: TestClient, database: Database) -> None:
    (id,) = users(api, 1)
    body = {"operation": "add_tag", "tag": {"name": "  "}, "ids": [id]}
    assert _refused(api, database, body, 422)["field"] == "tag.name"


def test_tags_and_lists_of_another_environment_are_not_found(
    api: TestClient, database: Database, other_tenant: Any
) -> None:
    (id,) = users(api, 1)
    tag = create_tag(other_tenant.client, "Theirs")
    user_list = create_list(other_tenant.client, "Theirs")
    for body in (
        {"operation": "remove_tag", "tag": {"id": tag["id"]}, "ids": [id]},
        {"operation": "remove_tag", "tag": {"name": "Theirs"}, "ids": [id]},
        {"operation": "add_to_list", "list": {"id": user_list["id"]}, "ids": [id]},
        {"operation": "add_to_list", "list": {"name": "Theirs"}, "ids": [id]},
    ):
        _refused(api, database, body, 404)


def test_a_refused_add_tag_by_name_creates_no_tag(api: TestClient, database: Database) -> None:
    response = bulk(api, operation="add_tag", tag={"name": "Fresh"}, ids=["999999"])
    assert response.status_code == 404
    assert api.get("/api/v1/tags").json()["total_count"] == 0


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"format": "xml", "filter": {"and": []}}, 422, "format"),
        ({"format": "csv"}, 422, "ids"),
        ({"filter": {"field": "nope", "op": "exists"}}, 400, "filter.field"),
        ({"ids": ["424242"]}, 404, "ids.0"),
        ({"filter": {"and": []}, "operation": "delete"}, 422, "operation"),
    ],
)
def test_bad_export_requests(
    api: TestClient, database: Database, body: dict[str, Any], status: int, field: str
) -> None:
    response = api.post("/api/v1/users/export", json=body)
    assert response.status_code == status, response.text
    assert error_of(response)["field"] == field
    assert job_count(database) == 0


def test_invalid_json_is_400(api: TestClient, database: Database) -> None:
    response = api.post(
        "/api/v1/users/bulk", content=b"{", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_json"
