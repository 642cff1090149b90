"""Behaviour conditions (R-SEG-2): did an event or visited a page, how often, when, where."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.segments.helpers import ago, found, track, user


@pytest.fixture
def active(api: TestClient) -> dict[str, str]:
    """never: no events; once: one recent purchase; often: 3 recent + 1 old; old: 1 old."""
    people = {name: user(api) for name in ("never", "once", "often", "old")}
    track(api, people["once"], "Purchased", timestamp=ago(days=2), properties={"plan": "Pro"})
    for days, amount in ((1, 10), (5, 25.5), (20, 100)):
        track(
            api,
            people["often"],
            "Purchased",
            timestamp=ago(days=days),
            properties={"amount": amount, "plan": "basic", "gift": days == 5},
        )
    track(api, people["often"], "Purchased", timestamp=ago(days=90), properties={"amount": 1})
    track(api, people["old"], "Purchased", timestamp=ago(days=60))
    track(api, people["never"], "Logged In", timestamp=ago(days=1))
    return people


def names(people: dict[str, str], got: set[str]) -> set[str]:
    return {name for name, id in people.items() if id in got}


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"event": "Purchased"}, {"once", "often", "old"}),
        ({"event": "Purchased", "count": {"gte": 1}}, {"once", "often", "old"}),
        ({"event": "Purchased", "count": {"gte": 0}}, {"never", "once", "often", "old"}),
        ({"event": "Purchased", "count": {"gte": 3}}, {"often"}),
        ({"event": "Purchased", "count": {"gte": 3}, "within_days": 30}, {"often"}),
        ({"event": "Purchased", "count": {"gte": 3}, "within_days": 10}, set()),
        ({"event": "Purchased", "count": {"eq": 0}}, {"never"}),
        ({"event": "Purchased", "count": {"eq": 0}, "within_days": 30}, {"never", "old"}),
        ({"event": "Purchased", "count": {"eq": 1}}, {"once", "old"}),
        ({"event": "Purchased", "count": {"eq": 4}}, {"often"}),
        ({"event": "Purchased", "count": {"lte": 1}}, {"never", "once", "old"}),
        ({"event": "Purchased", "count": {"lte": 0}}, {"never"}),
        ({"event": "Purchased", "within_hours": 72}, {"once", "often"}),
        ({"event": "purchased"}, set()),
        ({"event": "Logged In"}, {"never"}),
    ],
)
def test_event_counts_and_windows(
    api: TestClient, active: dict[str, str], condition: dict[str, Any], expected: set[str]
) -> None:
    assert names(active, found(api, condition)) == expected


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ([{"field": "plan", "op": "eq", "value": "pro"}], {"once"}),
        ([{"field": "plan", "op": "ne", "value": "pro"}], {"often", "old"}),
        ([{"field": "amount", "op": "gt", "value": 20}], {"often"}),
        ([{"field": "amount", "op": "between", "value": [1, 10]}], {"often"}),
        ([{"field": "amount", "op": "in", "value": [25.5]}], {"often"}),
        ([{"field": "gift", "op": "eq", "value": True}], {"often"}),
        ([{"field": "gift", "op": "exists"}], {"often"}),
        ([{"field": "amount", "op": "not_exists"}], {"once", "old"}),
        ([{"field": "plan", "op": "~", "value": "BAS"}], {"often"}),
        ([{"field": "plan", "op": "eq", "value": 5}], set()),
        (
            [
                {"field": "amount", "op": "gte", "value": 10},
                {"field": "plan", "op": "starts_with", "value": "b"},
            ],
            {"often"},
        ),
    ],
)
def test_where_conditions_on_event_properties(
    api: TestClient, active: dict[str, str], where: list[dict[str, Any]], expected: set[str]
) -> None:
    got = found(api, {"event": "Purchased", "where": where})
    assert names(active, got) == expected


def test_count_counts_only_events_matching_where_and_window(
    api: TestClient, active: dict[str, str]
) -> None:
    condition = {
        "event": "Purchased",
        "count": {"eq": 2},
        "within_days": 30,
        "where": [{"field": "amount", "op": "gte", "value": 20}],
    }
    assert names(active, found(api, condition)) == {"often"}


@pytest.mark.parametrize(
    ("key", "op", "value", "expected"),
    [
        ("first", "before", ago(days=30), {"often", "old"}),
        ("first", "after", ago(days=30), {"once"}),
        ("last", "within_last", {"days": 3}, {"once", "often"}),
        ("last", "more_than_ago", {"days": 30}, {"old"}),
        ("first", "between", [ago(days=100), ago(days=50)], {"often", "old"}),
        ("last", "lt", ago(days=1.5), {"once", "old"}),
    ],
)
def test_first_and_last_occurrence(
    api: TestClient, active: dict[str, str], key: str, op: str, value: Any, expected: set[str]
) -> None:
    got = found(api, {"event": "Purchased", key: {"op": op, "value": value}})
    assert names(active, got) == expected


def test_did_not_do_is_a_not_of_did(api: TestClient, active: dict[str, str]) -> None:
    did_not = found(api, {"event": "Purchased", "count": {"eq": 0}})
    assert did_not == found(api, {"not": {"event": "Purchased"}})


def test_visited_page_matches_a_url_pattern(api: TestClient) -> None:
    pricing = user(api)
    docs = user(api)
    tracked = user(api)
    track(api, pricing, "Pricing", kind="page", page_url="https://shop.io/Pricing?plan=pro")
    track(api, docs, "Docs", kind="$pageview", page_url="https://shop.io/docs/pricing_faq")
    track(api, tracked, "Pricing", page_url="https://shop.io/pricing")  # a track, not a page view
    assert found(api, {"page": "*.io/pricing*"}) == {pricing}
    assert found(api, {"page": "*pricing*"}) == {pricing, docs}
    assert found(api, {"page": "https://shop.io/docs/pricing_faq"}) == {docs}
    assert found(api, {"page": "https://shop.io/docs/pricing%faq"}) == set()
    assert found(api, {"page": "https://shop.io/docs/*", "count": {"eq": 0}}) == {pricing, tracked}
    assert found(api, {"page": "*", "within_days": 1}) == {pricing, docs}


def test_behaviour_inside_groups(api: TestClient, active: dict[str, str]) -> None:
    condition = {
        "or": [
            {"event": "Logged In"},
            {"and": [{"event": "Purchased", "count": {"gte": 2}}, {"not": {"event": "Refunded"}}]},
        ]
    }
    assert names(active, found(api, condition)) == {"never", "often"}
