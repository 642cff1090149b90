"""POST /api/v1/users/search and GET /api/v1/users?filter=: the user.list, pages, sorting."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.segments.helpers import define, error_of, found, search, track, user


def walk(api: TestClient, body: dict[str, Any]) -> list[str]:
    """Every user id of a search, following cursors; checks the pages' bookkeeping."""
    ids: list[str] = []
    cursor = None
    while True:
        page = {**body} | ({"starting_after": cursor} if cursor else {})
        response = search(api, **page)
        assert response.status_code == 200, response.text
        listing = response.json()
        ids += [item["id"] for item in listing["users"]]
        if listing["pages"]["next"] is None:
            return ids
        cursor = listing["pages"]["next"]["starting_after"]


def test_search_returns_a_user_list_like_the_listing(api: TestClient) -> None:
    ann = user(api, name="Ann", custom_attributes={"plan": "pro"})
    user(api, name="Bob")
    response = search(api, {"field": "custom_attributes.plan", "op": "eq", "value": "PRO"})
    assert response.status_code == 200
    body = response.json()
    assert body["type"] == "user.list" and body["total_count"] == 1
    assert body["pages"] == {
        "type": "pages",
        "next": None,
        "page": 1,
        "per_page": 50,
        "total_pages": 1,
    }
    assert [item["id"] for item in body["users"]] == [ann]
    assert body["users"][0] == api.get(f"/api/v1/users/{ann}").json()


def test_no_filter_finds_everyone_newest_first(api: TestClient) -> None:
    ids = [user(api) for _ in range(3)]
    assert [item["id"] for item in search(api).json()["users"]] == ids[::-1]
    assert [item["id"] for item in search(api, None, order="asc").json()["users"]] == ids


def test_page_and_per_page(api: TestClient) -> None:
    ids = [user(api) for _ in range(5)]
    body = search(api, {"field": "id", "op": "exists"}, per_page=2, page=2, order="asc").json()
    assert [item["id"] for item in body["users"]] == ids[2:4]
    assert body["total_count"] == 5
    assert body["pages"]["page"] == 2 and body["pages"]["total_pages"] == 3


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize(
    ("type_", "values"),
    [
        ("number", [3, 1.5, None, 3, -2, 10**6, 3, None, 0]),
        ("string", ["b", "a", None, "b", "B", "", "b", None, "z"]),
        ("boolean", [True, False, None, True, True, False, None, False, True]),
        (
            "date",
            ["2024-01-02", "2023-12-31", None, "2024-01-02", "2024-01-01", None, "2024-01-02"],
        ),
        (
            "datetime",
            [
                "2024-01-01T10:00:00Z",
                "2024-01-01T10:00:00.5Z",
                None,
                "2024-01-01T10:00:00Z",
                "2024-01-01T09:59:59.999999Z",
                "2023-01-01T00:00:00Z",
                None,
            ],
        ),
    ],
)
def test_cursor_pages_sorted_by_a_custom_attribute_visit_everyone_once_in_order(
    api: TestClient, type_: str, values: list[Any], order: str
) -> None:
    define(api, "rank", type_)
    ids = {
        user(api, custom_attributes={} if value is None else {"rank": value}): value
        for value in values
    }
    got = walk(api, {"sort": "custom_attributes.rank", "order": order, "per_page": 2})
    assert sorted(got) == sorted(ids)  # everyone exactly once
    present = [ids[id] for id in got if ids[id] is not None]
    assert got[len(present) :] == [id for id in got if ids[id] is None]  # missing values last

    def key(value: Any) -> Any:
        return (
            datetime.fromisoformat(value.replace("Z", "+00:00")) if type_ == "datetime" else value
        )

    if type_ != "string":  # text order is the database's collation; the rest is exact
        assert present == sorted(present, key=key, reverse=order == "desc")
    ties = [int(id) for id in got if ids[id] == values[0]]
    assert ties == sorted(ties, reverse=order == "desc")  # ties broken by id


def test_cursor_pages_sorted_by_a_standard_attribute_with_a_filter(api: TestClient) -> None:
    ids = [user(api, city=city) for city in ["Oslo", "Cork", "Oslo", None, "Cork", "Oslo"]]
    body = {"filter": {"field": "city", "op": "exists"}, "sort": "city", "order": "asc"}
    got = walk(api, body | {"per_page": 2})
    assert got == [ids[1], ids[4], ids[0], ids[2], ids[5]]


def test_a_cursor_of_another_sort_is_a_400(api: TestClient) -> None:
    for _ in range(3):
        user(api)
    define(api, "rank", "number")
    listing = search(api, None, per_page=1).json()
    cursor = listing["pages"]["next"]["starting_after"]
    response = search(api, None, sort="custom_attributes.rank", starting_after=cursor)
    assert response.status_code == 400
    assert error_of(response)["field"] == "starting_after"


@pytest.mark.parametrize("sort", ["nope", "custom_attributes.nope", "custom_attributes.tags", ""])
def test_sorting_by_an_unknown_or_list_attribute_is_a_400(api: TestClient, sort: str) -> None:
    define(api, "tags", "list")
    response = search(api, None, sort=sort)
    assert response.status_code == 400
    assert error_of(response) | {"message": ""} == {
        "code": "parameter_invalid",
        "message": "",
        "field": "sort",
    }


def test_free_text_and_filter_combine(api: TestClient) -> None:
    ann = user(api, name="Ann Smith", city="Cork")
    user(api, name="Ann Jones", city="Oslo")
    user(api, name="Bob Smith", city="Cork")
    assert found(api, {"field": "city", "op": "eq", "value": "cork"}, q="ann") == {ann}


def test_merged_away_users_never_match(api: TestClient) -> None:
    survivor = user(api, city="Cork")
    source = user(api, city="Cork")
    track(api, source, "Paid")
    merge = api.post(f"/api/v1/users/{survivor}/merge", json={"from": source})
    assert merge.status_code == 200, merge.text
    assert found(api, {"field": "city", "op": "eq", "value": "Cork"}) == {survivor}
    assert found(api, {"event": "Paid"}) == {survivor}  # the event moved with the merge


def test_unknown_body_fields_are_422(api: TestClient) -> None:
    response = api.post("/api/v1/users/search", json={"query": {}})
    assert response.status_code == 422
    assert error_of(response)["field"] == "query"


@pytest.mark.parametrize("per_page", [0, 151])
def test_per_page_is_1_to_150(api: TestClient, per_page: int) -> None:
    assert search(api, None, per_page=per_page).status_code == 422


# --- GET /users?filter= ------------------------------------------------------------------------


def test_the_listing_takes_a_filter_as_json(api: TestClient) -> None:
    define(api, "seats", "number")
    big = user(api, custom_attributes={"seats": 50})
    user(api, custom_attributes={"seats": 5})
    condition = {"field": "custom_attributes.seats", "op": ">", "value": 10}
    response = api.get("/api/v1/users", params={"filter": json.dumps(condition)})
    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["users"]] == [big]


def test_the_listing_sorts_by_a_custom_attribute(api: TestClient) -> None:
    define(api, "seats", "number")
    ids = [user(api, custom_attributes={"seats": seats}) for seats in (5, 50, 1)]
    response = api.get("/api/v1/users", params={"sort": "custom_attributes.seats", "order": "asc"})
    assert [item["id"] for item in response.json()["users"]] == [ids[2], ids[0], ids[1]]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "filter"),
        ('{"field": "name", "op": "gt", "value": "a"}', "filter.op"),
        ('"name"', "filter"),
    ],
)
def test_the_listing_answers_a_bad_filter_with_400(api: TestClient, text: str, field: str) -> None:
    response = api.get("/api/v1/users", params={"filter": text})
    assert response.status_code == 400
    assert error_of(response)["field"] == field


def test_the_listing_keeps_free_text_search(api: TestClient) -> None:
    ann = user(api, name="Ann")
    user(api, name="Bob")
    response = api.get("/api/v1/users", params={"q": "an"})
    assert [item["id"] for item in response.json()["users"]] == [ann]


def test_cursor_pages_sorted_by_a_standard_boolean(api: TestClient) -> None:
    ids = [user(api, unsubscribed_from_emails=flag) for flag in (True, False, True, False, True)]
    got = walk(api, {"sort": "unsubscribed_from_emails", "order": "asc", "per_page": 2})
    assert got == [ids[1], ids[3], ids[0], ids[2], ids[4]]
