"""Listing companies: the company.list shape, search, sort, page and cursor pagination."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.factories import create_company


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error.list"
    return dict(body["errors"][0])


def names(body: dict[str, Any]) -> list[str]:
    return [company["name"] for company in body["companies"]]


def test_list_companies_returns_a_company_list(api: TestClient) -> None:
    first = create_company(api, name="One")
    second = create_company(api, name="Two")
    body = api.get("/api/v1/companies").json()
    assert body["type"] == "company.list"
    assert body["total_count"] == 2
    assert {company["id"] for company in body["companies"]} == {first["id"], second["id"]}
    assert body["pages"] == {
        "type": "pages",
        "next": None,
        "page": 1,
        "per_page": 50,
        "total_pages": 1,
    }


def test_empty_list_has_no_pages(api: TestClient) -> None:
    body = api.get("/api/v1/companies").json()
    assert (body["total_count"], body["companies"], body["pages"]["total_pages"]) == (0, [], 0)


def test_default_order_is_newest_first(api: TestClient) -> None:
    for name in ("a", "b", "c"):
        create_company(api, name=name)
    assert names(api.get("/api/v1/companies").json()) == ["c", "b", "a"]


def test_search_matches_name_case_insensitively(api: TestClient) -> None:
    create_company(api, name="Globex Corporation")
    create_company(api, name="Initech")
    body = api.get("/api/v1/companies", params={"q": "GLOBEX"}).json()
    assert (body["total_count"], names(body)) == (1, ["Globex Corporation"])


def test_search_matches_company_id(api: TestClient) -> None:
    create_company(api, company_id="crm-001", name="First")
    create_company(api, company_id="erp-002", name="Second")
    assert names(api.get("/api/v1/companies", params={"q": "CRM-0"}).json()) == ["First"]


def test_search_treats_wildcards_literally(api: TestClient) -> None:
    create_company(api, name="100% Fun")
    create_company(api, name="1000 Things")
    assert names(api.get("/api/v1/companies", params={"q": "100%"}).json()) == ["100% Fun"]


def test_search_with_a_nul_character_is_400(api: TestClient) -> None:
    response = api.get("/api/v1/companies", params={"q": "a\x00b"})
    assert response.status_code == 400
    assert error_of(response)["field"] == "q"


@pytest.mark.parametrize(
    ("order", "expected"), [("asc", ["a", "b", "c"]), ("desc", ["c", "b", "a"])]
)
def test_sort_by_a_standard_column(api: TestClient, order: str, expected: list[str]) -> None:
    for name in ("b", "c", "a"):
        create_company(api, name=name)
    body = api.get("/api/v1/companies", params={"sort": "name", "order": order}).json()
    assert names(body) == expected


def test_sort_puts_missing_values_last(api: TestClient) -> None:
    create_company(api, name="none")
    create_company(api, name="big", size=500)
    create_company(api, name="small", size=5)
    for order, expected in (("asc", ["small", "big", "none"]), ("desc", ["big", "small", "none"])):
        body = api.get("/api/v1/companies", params={"sort": "size", "order": order}).json()
        assert names(body) == expected


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "custom_attributes"},
        {"sort": "phone_numbers"},
        {"order": "sideways"},
        {"per_page": 151},
        {"per_page": 0},
        {"page": 0},
        {"starting_after": "not-a-cursor"},
    ],
)
def test_bad_listing_parameters_are_400(api: TestClient, params: dict[str, Any]) -> None:
    response = api.get("/api/v1/companies", params=params)
    assert response.status_code == 400
    assert error_of(response)["field"] == next(iter(params))


def test_page_pagination(api: TestClient) -> None:
    for index in range(5):
        create_company(api, name=f"c{index}")
    query = {"sort": "name", "order": "asc", "per_page": 2}
    pages = [api.get("/api/v1/companies", params={**query, "page": n}).json() for n in (1, 2, 3)]
    assert [names(page) for page in pages] == [["c0", "c1"], ["c2", "c3"], ["c4"]]
    assert [page["pages"]["total_pages"] for page in pages] == [3, 3, 3]
    assert pages[0]["pages"]["next"]["page"] == 2
    assert pages[2]["pages"]["next"] is None


def test_cursor_pagination_walks_every_company_once(api: TestClient) -> None:
    for index in range(5):
        create_company(api, name=f"c{index}", size=index % 2)
    seen: list[str] = []
    params: dict[str, Any] = {"sort": "size", "order": "desc", "per_page": 2}
    while True:
        body = api.get("/api/v1/companies", params=params).json()
        seen += names(body)
        if body["pages"]["next"] is None:
            break
        params["starting_after"] = body["pages"]["next"]["starting_after"]
    assert sorted(seen) == ["c0", "c1", "c2", "c3", "c4"]
    assert seen[:2] == ["c3", "c1"]  # ties go by id, in the same direction


def test_cursor_from_another_sort_is_rejected(api: TestClient) -> None:
    for index in range(3):
        create_company(api, name=f"c{index}")
    first = api.get("/api/v1/companies", params={"sort": "name", "per_page": 1}).json()
    cursor = first["pages"]["next"]["starting_after"]
    response = api.get("/api/v1/companies", params={"sort": "size", "starting_after": cursor})
    assert response.status_code == 400
    assert error_of(response)["code"] == "invalid_cursor"
