"""Saved segments through /api/v1/segments: CRUD, count, members, preview, errors, isolation."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import Tenant
from tests.segments.helpers import error_of, user

ACME = {"field": "email", "op": "ends_with", "value": "@acme.com"}


def create_segment(api: TestClient, name: str = "Acme", filter: Any = None) -> dict[str, Any]:
    body = {"name": name, "filter": ACME if filter is None else filter}
    response = api.post("/api/v1/segments", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def member_ids(api: TestClient, segment: dict[str, Any]) -> set[str]:
    response = api.get(f"/api/v1/segments/{segment['id']}/members", params={"per_page": 150})
    assert response.status_code == 200, response.text
    return {item["id"] for item in response.json()["users"]}


def count_of(api: TestClient, segment: dict[str, Any]) -> int:
    response = api.get(f"/api/v1/segments/{segment['id']}/count")
    assert response.status_code == 200, response.text
    return int(response.json()["count"])


def test_create_returns_the_segment_with_its_current_count(api: TestClient) -> None:
    ann = user(api, email="ann@acme.com")
    user(api, email="bob@other.com")
    segment = create_segment(api)
    assert segment["type"] == "segment" and segment["id"].isdigit()
    assert segment["name"] == "Acme" and segment["filter"] == ACME
    assert segment["count"] == 1
    assert segment["created_at"] > 0 and segment["updated_at"] == segment["created_at"]
    assert member_ids(api, segment) == {ann}
    assert count_of(api, segment) == 1


def test_get_and_list_segments(api: TestClient) -> None:
    b = create_segment(api, "B")
    a = create_segment(api, "A", {"and": []})
    assert api.get(f"/api/v1/segments/{b['id']}").json() == b
    listed = api.get("/api/v1/segments").json()
    assert listed["type"] == "segment.list" and listed["total_count"] == 2
    assert [item["id"] for item in listed["segments"]] == [a["id"], b["id"]]


def test_members_is_a_paginated_user_list(api: TestClient) -> None:
    for n in range(3):
        user(api, email=f"p{n}@acme.com")
    segment = create_segment(api)
    page = api.get(f"/api/v1/segments/{segment['id']}/members", params={"per_page": 2}).json()
    assert page["type"] == "user.list" and page["total_count"] == 3
    assert len(page["users"]) == 2 and page["pages"]["total_pages"] == 2
    assert {s["name"] for s in page["users"][0]["segments"]["segments"]} == {"Acme"}


def test_members_are_listed_latest_entries_first_and_pages_hold_each_once(
    api: TestClient,
) -> None:
    first = [user(api, email=f"early{n}@acme.com") for n in range(3)]
    segment = create_segment(api)  # the three enter together: ties go by id, highest first
    later = [user(api, email=f"late{n}@acme.com") for n in range(2)]  # each enters as created
    user(api, email="outsider@example.com")
    url = f"/api/v1/segments/{segment['id']}/members"
    seen, params = [], {"per_page": 2}
    while True:
        page = api.get(url, params=params).json()
        assert page["total_count"] == 5
        seen += [item["id"] for item in page["users"]]
        following = page["pages"]["next"]
        if following is None:
            break
        params = {"per_page": 2, "starting_after": following["starting_after"]}
    assert seen == [later[1], later[0], *sorted(first, key=int, reverse=True)]


def test_update_name_and_filter_recomputes_members(api: TestClient) -> None:
    user(api, email="ann@acme.com")
    bob = user(api, email="bob@other.com")
    segment = create_segment(api)
    other = {"field": "email", "op": "ends_with", "value": "@other.com"}
    response = api.patch(f"/api/v1/segments/{segment['id']}", json={"name": "Other"})
    assert response.status_code == 200 and response.json()["name"] == "Other"
    assert response.json()["filter"] == ACME
    response = api.patch(f"/api/v1/segments/{segment['id']}", json={"filter": other})
    assert response.status_code == 200, response.text
    assert response.json()["count"] == 1 and response.json()["filter"] == other
    assert member_ids(api, segment) == {bob}


def test_delete_segment(api: TestClient) -> None:
    user(api, email="ann@acme.com")
    segment = create_segment(api)
    response = api.delete(f"/api/v1/segments/{segment['id']}")
    assert response.json() == {"id": segment["id"], "object": "segment", "deleted": True}
    assert api.get(f"/api/v1/segments/{segment['id']}").status_code == 404
    assert api.get(f"/api/v1/segments/{segment['id']}/members").status_code == 404


def test_preview_counts_an_unsaved_filter(api: TestClient) -> None:
    ann = user(api, email="ann@acme.com")
    user(api, email="bob@other.com")
    response = api.post("/api/v1/segments/preview", json={"filter": ACME, "per_page": 10})
    assert response.status_code == 200, response.text
    assert response.json()["total_count"] == 1
    assert [item["id"] for item in response.json()["users"]] == [ann]
    assert api.get("/api/v1/segments").json()["total_count"] == 0


def test_a_bad_filter_is_a_400_naming_the_spot(api: TestClient) -> None:
    bad = {"and": [ACME, {"field": "session_count", "op": "contains", "value": 1}]}
    for response in (
        api.post("/api/v1/segments", json={"name": "Bad", "filter": bad}),
        api.post("/api/v1/segments/preview", json={"filter": bad}),
        api.patch(f"/api/v1/segments/{create_segment(api)['id']}", json={"filter": bad}),
    ):
        assert response.status_code == 400, response.text
        assert error_of(response)["code"] == "invalid_filter"
        assert error_of(response)["field"] == "filter.and[1].op"


def test_a_taken_name_is_a_409(api: TestClient) -> None:
    create_segment(api, "Acme")
    second = create_segment(api, "Second")
    assert api.post("/api/v1/segments", json={"name": "Acme", "filter": ACME}).status_code == 409
    response = api.patch(f"/api/v1/segments/{second['id']}", json={"name": "Acme"})
    assert response.status_code == 409 and error_of(response)["field"] == "name"


def test_missing_fields_and_unknown_ids(api: TestClient) -> None:
    assert api.post("/api/v1/segments", json={"name": "X"}).status_code == 422
    assert api.post("/api/v1/segments", json={"filter": ACME}).status_code == 422
    assert api.post("/api/v1/segments", json={"name": " ", "filter": ACME}).status_code == 422
    assert api.get("/api/v1/segments/999").status_code == 404
    assert api.get("/api/v1/segments/abc/count").status_code == 404
    assert api.patch("/api/v1/segments/999", json={"name": "Y"}).status_code == 404
    assert api.delete("/api/v1/segments/999").status_code == 404


def test_segment_conditions_refer_to_saved_segments(api: TestClient) -> None:
    ann = user(api, email="ann@acme.com", name="Ann")
    user(api, email="bob@acme.com", name="Bob")
    acme = create_segment(api, "Acme")
    named = {"field": "name", "op": "eq", "value": "Ann"}
    by_name = create_segment(
        api, "Acme Ann", {"and": [{"field": "segments", "op": "eq", "value": "Acme"}, named]}
    )
    by_id = create_segment(
        api, "Not Acme", {"field": "segments", "op": "ne", "value": {"id": acme["id"]}}
    )
    assert member_ids(api, by_name) == {ann}
    assert count_of(api, by_id) == 0
    search = {"filter": {"field": "segments", "op": "in", "value": ["Acme Ann", "Nope"]}}
    found = api.post("/api/v1/users/search", json=search).json()["users"]
    assert [item["id"] for item in found] == [ann]


def test_a_segment_defined_before_the_one_it_names_follows_it(api: TestClient) -> None:
    ann = user(api, email="ann@acme.com")
    early = create_segment(api, "Early", {"field": "segments", "op": "eq", "value": "Later"})
    assert early["count"] == 0
    create_segment(api, "Later")
    assert member_ids(api, early) == {ann}
    later_id = api.get("/api/v1/segments").json()["segments"][1]["id"]
    api.delete(f"/api/v1/segments/{later_id}")
    assert count_of(api, early) == 0


def test_cycles_are_refused(api: TestClient) -> None:
    response = api.post(
        "/api/v1/segments",
        json={"name": "Self", "filter": {"field": "segments", "op": "eq", "value": "Self"}},
    )
    assert response.status_code == 400 and error_of(response)["field"] == "filter"
    a = create_segment(api, "A", ACME)
    b = create_segment(api, "B", {"field": "segments", "op": "eq", "value": "A"})
    c = create_segment(api, "C", {"not": {"field": "segments", "op": "in", "value": ["B"]}})
    loop = {"or": [ACME, {"field": "segments", "op": "eq", "value": {"id": c["id"]}}]}
    response = api.patch(f"/api/v1/segments/{a['id']}", json={"filter": loop})
    assert response.status_code == 400, response.text
    assert "cycle" in error_of(response)["message"]
    # B names "A": once A is renamed, naming C "A" would close the loop B -> C -> B.
    assert api.patch(f"/api/v1/segments/{a['id']}", json={"name": "A0"}).status_code == 200
    response = api.patch(f"/api/v1/segments/{c['id']}", json={"name": "A"})
    assert response.status_code == 400, response.text
    assert api.get(f"/api/v1/segments/{b['id']}").json()["name"] == "B"


def test_segments_are_isolated_per_environment(api: TestClient, other_tenant: Tenant) -> None:
    user(api, email="ann@acme.com")
    theirs = user(other_tenant.client, email="zed@acme.com")
    mine = create_segment(api)
    assert other_tenant.client.get(f"/api/v1/segments/{mine['id']}").status_code == 404
    assert other_tenant.client.get(f"/api/v1/segments/{mine['id']}/members").status_code == 404
    assert other_tenant.client.delete(f"/api/v1/segments/{mine['id']}").status_code == 404
    assert other_tenant.client.get("/api/v1/segments").json()["total_count"] == 0
    same_name = create_segment(other_tenant.client, "Acme")  # names are per environment
    assert member_ids(other_tenant.client, same_name) == {theirs}
    assert count_of(api, mine) == 1
    by_id = {"field": "segments", "op": "eq", "value": {"id": mine["id"]}}
    response = other_tenant.client.post("/api/v1/segments/preview", json={"filter": by_id})
    assert response.json()["total_count"] == 0


def test_the_user_object_lists_its_segments(api: TestClient) -> None:
    ann = user(api, email="ann@acme.com")
    segment = create_segment(api)
    body = api.get(f"/api/v1/users/{ann}").json()
    assert body["segments"] == {
        "type": "segment.list",
        "segments": [{"type": "segment", "id": segment["id"], "name": "Acme"}],
    }
