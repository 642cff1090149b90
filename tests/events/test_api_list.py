"""Events REST API: listing a user's and the environment's events, filters and pages."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.events.helpers import T0, names, track
from tests.factories import create_user


def test_user_events_are_an_event_list_newest_first(api: TestClient) -> None:
    user = create_user(api)
    for offset, name in ((0, "first"), (120, "third"), (60, "second")):
        track(api, user, name=name, timestamp=T0 + offset)
    response = api.get(f"/api/v1/users/{user['id']}/events")
    assert response.status_code == 200
    listing = response.json()
    assert listing["type"] == "event.list"
    assert listing["total_count"] == 3
    assert names(listing) == ["third", "second", "first"]
    assert [e["timestamp"] for e in listing["events"]] == [T0 + 120, T0 + 60, T0]
    assert listing["pages"] == {
        "type": "pages",
        "next": None,
        "page": 1,
        "per_page": 50,
        "total_pages": 1,
    }


def test_user_events_hold_only_that_users_events(api: TestClient) -> None:
    alice, bob = create_user(api), create_user(api)
    track(api, alice, name="alice's")
    track(api, bob, name="bob's")
    assert names(api.get(f"/api/v1/users/{alice['id']}/events").json()) == ["alice's"]


def test_user_without_events_has_an_empty_list(api: TestClient) -> None:
    listing = api.get(f"/api/v1/users/{create_user(api)['id']}/events").json()
    assert (listing["total_count"], listing["events"], listing["pages"]["total_pages"]) == (
        0,
        [],
        0,
    )


@pytest.mark.parametrize("id", ["999999", "abc"])
def test_events_of_an_unknown_user_are_a_404(api: TestClient, id: str) -> None:
    assert api.get(f"/api/v1/users/{id}/events").status_code == 404


def test_events_filter_by_name_which_may_repeat(api: TestClient) -> None:
    user = create_user(api)
    for i, name in enumerate(["Viewed", "Paid", "Viewed", "Left"]):
        track(api, user, name=name, timestamp=T0 + i)
    url = f"/api/v1/users/{user['id']}/events"
    assert names(api.get(url, params={"name": "Viewed"}).json()) == ["Viewed", "Viewed"]
    both = api.get(url, params=[("name", "Paid"), ("name", "Left")]).json()
    assert (both["total_count"], names(both)) == (2, ["Left", "Paid"])
    assert api.get(url, params={"name": "viewed"}).json()["total_count"] == 0


def test_events_filter_by_kind(api: TestClient) -> None:
    user = create_user(api)
    track(api, user, name="Home", kind="page")
    track(api, user, name="Paid", kind="track")
    listing = api.get("/api/v1/events", params={"kind": "page"}).json()
    assert names(listing) == ["Home"]


def test_events_filter_by_time_range_since_inclusive_until_exclusive(api: TestClient) -> None:
    user = create_user(api)
    for offset in (0, 60, 120, 180):
        track(api, user, name=f"at {offset}", timestamp=T0 + offset)
    url = f"/api/v1/users/{user['id']}/events"
    window = api.get(url, params={"since": T0 + 60, "until": T0 + 180}).json()
    assert names(window) == ["at 120", "at 60"]
    iso = api.get(url, params={"since": "2023-11-14T22:14:20Z"}).json()
    assert names(iso) == ["at 180", "at 120", "at 60"]
    until = api.get(url, params={"until": "2023-11-15T00:14:20+02:00"}).json()
    assert names(until) == ["at 0"]


def test_time_range_keeps_millisecond_precision(api: TestClient) -> None:
    user = create_user(api)
    track(api, user, name="early", timestamp=T0 + 0.25)
    track(api, user, name="late", timestamp=T0 + 0.75)
    listing = api.get("/api/v1/events", params={"since": T0 + 0.5}).json()
    assert names(listing) == ["late"]


@pytest.mark.parametrize(
    "params",
    [
        {"since": "yesterday"},
        {"until": "1e400"},
        {"since": T0 + 10, "until": T0},
        {"kind": "identify"},
        {"name": "x" * 256},
        {"name": "a\u0000"},
        {"per_page": 151},
        {"page": 0},
        {"starting_after": "not-a-cursor"},
    ],
)
def test_bad_listing_parameters_are_a_400(api: TestClient, params: dict[str, Any]) -> None:
    user = create_user(api)
    track(api, user)
    for url in ("/api/v1/events", f"/api/v1/users/{user['id']}/events"):
        response = api.get(url, params=params)
        assert response.status_code == 400, (url, response.text)
        assert response.json()["type"] == "error.list"


def test_events_page_through_with_page_numbers(api: TestClient) -> None:
    user = create_user(api)
    for i in range(5):
        track(api, user, name=f"e{i}", timestamp=T0 + i)
    url = f"/api/v1/users/{user['id']}/events"
    first = api.get(url, params={"per_page": 2}).json()
    third = api.get(url, params={"per_page": 2, "page": 3}).json()
    assert (names(first), first["pages"]["total_pages"]) == (["e4", "e3"], 3)
    assert (names(third), third["pages"]["next"]) == (["e0"], None)


def test_events_page_through_with_cursor_across_equal_timestamps(api: TestClient) -> None:
    user = create_user(api)
    created = [track(api, user, name=f"e{i}", timestamp=T0 + (i >= 3)) for i in range(5)]
    expected = [e["id"] for e in sorted(created, key=lambda e: (-e["timestamp"], -int(e["id"])))]
    seen: list[str] = []
    params: dict[str, Any] = {"per_page": 2}
    while True:
        listing = api.get("/api/v1/events", params=params).json()
        assert listing["total_count"] == 5
        seen += [event["id"] for event in listing["events"]]
        if listing["pages"]["next"] is None:
            break
        params = {"per_page": 2, "starting_after": listing["pages"]["next"]["starting_after"]}
    assert seen == expected


def test_all_events_of_the_environment_are_listed(api: TestClient) -> None:
    alice, bob = create_user(api, user_id="alice"), create_user(api, user_id=None)
    track(api, alice, name="a", timestamp=T0)
    track(api, bob, name="b", timestamp=T0 + 1)
    listing = api.get("/api/v1/events").json()
    assert names(listing) == ["b", "a"]
    assert [e["user"] for e in listing["events"]] == [
        {"type": "user", "id": bob["id"], "user_id": None},
        {"type": "user", "id": alice["id"], "user_id": "alice"},
    ]


def test_all_events_filter_by_internal_user_id(api: TestClient) -> None:
    alice, bob = create_user(api), create_user(api)
    track(api, alice, name="a")
    track(api, bob, name="b")
    assert names(api.get("/api/v1/events", params={"user_id": bob["id"]}).json()) == ["b"]


@pytest.mark.parametrize("user_id", ["999999", "abc"])
def test_all_events_filtered_by_an_unknown_user_are_a_404(api: TestClient, user_id: str) -> None:
    assert api.get("/api/v1/events", params={"user_id": user_id}).status_code == 404


def test_events_filters_combine(api: TestClient) -> None:
    alice, bob = create_user(api), create_user(api)
    track(api, alice, name="Paid", kind="track", timestamp=T0)
    track(api, alice, name="Paid", kind="track", timestamp=T0 + 100)
    track(api, alice, name="Paid", kind="page", timestamp=T0 + 100)
    track(api, bob, name="Paid", kind="track", timestamp=T0 + 100)
    params = {"user_id": alice["id"], "name": "Paid", "kind": "track", "since": T0 + 50}
    assert api.get("/api/v1/events", params=params).json()["total_count"] == 1
