"""Every operator and alias on each type of field, through POST /api/v1/users/search."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.segments.helpers import ago, define, matches, user

# --- text ------------------------------------------------------------------------------------


@pytest.fixture
def people(api: TestClient) -> dict[str, str]:
    return {
        "ann": user(api, name="Ann Lee", email="Ann@Example.com", city="Cork", user_id="A-1"),
        "bob": user(
            api, name="Bob 50% off_sale", email="bob@example.org", city=None, user_id="a-1"
        ),
        "cy": user(api, name="Cy", email="cy@test.io", city="Oslo", user_id="C-3"),
    }


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "ann lee", {"ann"}),
        ("=", "ANN LEE", {"ann"}),
        ("ne", "ann lee", {"bob", "cy"}),
        ("!=", "Ann Lee", {"bob", "cy"}),
        ("in", ["cy", "ANN LEE", "nobody"], {"ann", "cy"}),
        ("IN", ["cy"], {"cy"}),
        ("nin", ["cy", "ann lee"], {"bob"}),
        ("NIN", ["cy"], {"ann", "bob"}),
        ("contains", "LEE", {"ann"}),
        ("~", "50%", {"bob"}),
        ("contains", "%", {"bob"}),
        ("contains", "_", {"bob"}),
        ("not_contains", "lee", {"bob", "cy"}),
        ("!~", "y", {"ann", "bob"}),
        ("starts_with", "b", {"bob"}),
        ("^", "CY", {"cy"}),
        ("ends_with", "LEE", {"ann"}),
        ("$", "_sale", {"bob"}),
        ("ends_with", "%", set()),
    ],
)
def test_string_operators_ignore_case(
    api: TestClient, people: dict[str, str], op: str, value: Any, expected: set[str]
) -> None:
    assert matches(api, "name", op, value) == {people[name] for name in expected}


def test_string_exists_and_not_exists(api: TestClient, people: dict[str, str]) -> None:
    assert matches(api, "city", "exists") == {people["ann"], people["cy"]}
    assert matches(api, "city", "not_exists") == {people["bob"]}


def test_ne_and_nin_match_users_without_the_value(api: TestClient, people: dict[str, str]) -> None:
    assert matches(api, "city", "ne", "cork") == {people["bob"], people["cy"]}
    assert matches(api, "city", "nin", ["oslo"]) == {people["ann"], people["bob"]}
    assert matches(api, "city", "not_contains", "o") == {people["bob"]}


def test_identifiers_compare_exactly_and_match_loosely(
    api: TestClient, people: dict[str, str]
) -> None:
    assert matches(api, "user_id", "eq", "A-1") == {people["ann"]}
    assert matches(api, "user_id", "in", ["a-1", "c-3"]) == {people["bob"]}
    assert matches(api, "user_id", "starts_with", "a-") == {people["ann"], people["bob"]}


def test_email_equality_ignores_case(api: TestClient, people: dict[str, str]) -> None:
    assert matches(api, "email", "eq", "ann@example.COM") == {people["ann"]}
    assert matches(api, "email", "ends_with", ".ORG") == {people["bob"]}


# --- numbers ---------------------------------------------------------------------------------


@pytest.fixture
def numbered(api: TestClient) -> dict[int, str]:
    define(api, "seats", "number")
    return {
        seats: user(api, custom_attributes={"seats": seats}) if seats is not None else user(api)
        for seats in (1, 5, 10, None)
    } | {2: user(api, custom_attributes={"seats": 2.5})}


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", 5, {5}),
        ("=", 2.5, {2}),
        ("ne", 5, {1, 10, None, 2}),
        ("!=", 1, {5, 10, None, 2}),
        ("in", [1, 10], {1, 10}),
        ("IN", [2.5], {2}),
        ("nin", [1, 10], {5, None, 2}),
        ("NIN", [5], {1, 10, None, 2}),
        ("gt", 2.5, {5, 10}),
        (">", 5, {10}),
        ("gte", 5, {5, 10}),
        (">=", 2.5, {2, 5, 10}),
        ("lt", 5, {1, 2}),
        ("<", 1, set()),
        ("lte", 5, {1, 2, 5}),
        ("<=", 1, {1}),
        ("between", [2, 5], {2, 5}),
        ("between", [10, 10], {10}),
        ("exists", None, {1, 2, 5, 10}),
        ("not_exists", None, {None}),
    ],
)
def test_number_operators_on_a_custom_attribute(
    api: TestClient, numbered: dict[Any, str], op: str, value: Any, expected: set[Any]
) -> None:
    got = matches(api, "custom_attributes.seats", op, value if value is not None else ...)
    assert got == {numbered[key] for key in expected}


def test_number_operators_on_a_standard_column(api: TestClient, numbered: dict[Any, str]) -> None:
    assert matches(api, "session_count", "eq", 0) == set(numbered.values())
    assert matches(api, "session_count", "gt", 0) == set()
    assert matches(api, "id", "in", [int(numbered[5])]) == {numbered[5]}


def test_a_value_of_another_type_counts_as_missing(api: TestClient) -> None:
    define(api, "level", "string")
    text = user(api, custom_attributes={"level": "high"})
    numeric = user(api, custom_attributes={"level": 3})  # stored as "3": coerced to string
    assert matches(api, "custom_attributes.level", "eq", "3") == {numeric}
    assert matches(api, "custom_attributes.level", "ne", "3") == {text}


# --- booleans --------------------------------------------------------------------------------


def test_boolean_operators(api: TestClient) -> None:
    define(api, "vip", "boolean")
    yes = user(api, custom_attributes={"vip": True}, unsubscribed_from_emails=True)
    no = user(api, custom_attributes={"vip": False})
    unknown = user(api)
    assert matches(api, "custom_attributes.vip", "eq", True) == {yes}
    assert matches(api, "custom_attributes.vip", "=", False) == {no}
    assert matches(api, "custom_attributes.vip", "ne", True) == {no, unknown}
    assert matches(api, "custom_attributes.vip", "!=", False) == {yes, unknown}
    assert matches(api, "custom_attributes.vip", "exists") == {yes, no}
    assert matches(api, "custom_attributes.vip", "not_exists") == {unknown}
    assert matches(api, "unsubscribed_from_emails", "eq", True) == {yes}
    assert matches(api, "unsubscribed_from_emails", "ne", True) == {no, unknown}


# --- dates and datetimes ---------------------------------------------------------------------

DAY = 86_400


@pytest.fixture
def signed_up(api: TestClient) -> dict[str, str]:
    define(api, "trial_end", "datetime")
    define(api, "renewal", "date")
    return {
        "old": user(
            api,
            signed_up_at=ago(days=40),
            custom_attributes={"trial_end": ago(days=40), "renewal": "2020-01-01"},
        ),
        "recent": user(
            api,
            signed_up_at=ago(days=3),
            custom_attributes={"trial_end": ago(days=3) + 0.25, "renewal": "2030-06-30"},
        ),
        "soon": user(api, custom_attributes={"trial_end": ago(days=-3)}),
        "never": user(api),
    }


@pytest.mark.parametrize("field", ["signed_up_at", "custom_attributes.trial_end"])
@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("within_last", {"days": 7}, {"recent"}),
        ("within_last", {"hours": 24 * 50}, {"old", "recent"}),
        ("within_last", {"hours": 1}, set()),
        ("more_than_ago", {"days": 30}, {"old"}),
        ("more_than_ago", {"hours": 1}, {"old", "recent"}),
        ("before", ago(days=10), {"old"}),
        ("<", ago(days=10), {"old"}),
        ("lt", ago(days=10), {"old"}),
        ("lte", ago(days=10), {"old"}),
        ("after", ago(days=10), {"recent", "soon"}),
        (">", ago(days=10), {"recent", "soon"}),
        ("gte", ago(days=10), {"recent", "soon"}),
        ("between", [ago(days=50), ago(days=1)], {"old", "recent"}),
        ("exists", None, {"old", "recent", "soon"}),
        ("not_exists", None, {"never"}),
    ],
)
def test_datetime_operators(
    api: TestClient,
    signed_up: dict[str, str],
    field: str,
    op: str,
    value: Any,
    expected: set[str],
) -> None:
    if field == "signed_up_at":  # "soon" has no signed_up_at
        expected = expected - {"soon"} | ({"soon"} if op == "not_exists" else set())
    got = matches(api, field, op, value if value is not None else ...)
    assert got == {signed_up[name] for name in expected}


def test_within_next_finds_future_datetimes(api: TestClient, signed_up: dict[str, str]) -> None:
    assert matches(api, "custom_attributes.trial_end", "within_next", {"days": 7}) == {
        signed_up["soon"]
    }
    assert matches(api, "custom_attributes.trial_end", "within_next", {"days": 1}) == set()


def test_datetime_equality_is_to_the_microsecond(api: TestClient) -> None:
    define(api, "paid_at", "datetime")
    whole = user(api, custom_attributes={"paid_at": "2024-01-01T10:00:00Z"})
    part = user(api, custom_attributes={"paid_at": "2024-01-01T10:00:00.5Z"})
    field = "custom_attributes.paid_at"
    assert matches(api, field, "eq", "2024-01-01T10:00:00Z") == {whole}
    assert matches(api, field, "eq", "2024-01-01T12:00:00.5+02:00") == {part}
    assert matches(api, field, "ne", "2024-01-01T10:00:00Z") == {part}
    assert matches(api, field, "gt", "2024-01-01T10:00:00Z") == {part}
    assert matches(api, field, "lt", "2024-01-01T10:00:00.500001Z") == {whole, part}
    assert matches(api, field, "before", 1704103200.5) == {whole}


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("eq", "2020-01-01", {"old"}),
        ("ne", "2020-01-01", {"recent", "soon", "never"}),
        ("before", "2025-01-01", {"old"}),
        ("after", "2025-01-01", {"recent"}),
        ("gte", "2030-06-30", {"recent"}),
        ("lte", "2020-01-01", {"old"}),
        ("between", ["2019-12-31", "2020-01-01"], {"old"}),
        ("more_than_ago", {"days": 1}, {"old"}),
        ("within_next", {"days": 365 * 20}, {"recent"}),
        ("within_last", {"days": 365 * 20}, {"old"}),
        ("exists", None, {"old", "recent"}),
    ],
)
def test_date_operators(
    api: TestClient, signed_up: dict[str, str], op: str, value: Any, expected: set[str]
) -> None:
    got = matches(api, "custom_attributes.renewal", op, value if value is not None else ...)
    assert got == {signed_up[name] for name in expected}


def test_date_windows_count_whole_days(api: TestClient) -> None:
    define(api, "due", "date")
    from datetime import UTC, datetime, timedelta

    today = datetime.now(UTC).date()
    dated = {
        offset: user(api, custom_attributes={"due": (today + timedelta(days=offset)).isoformat()})
        for offset in (-2, -1, 0, 1, 2)
    }
    field = "custom_attributes.due"
    assert matches(api, field, "within_last", {"days": 1}) == {dated[-1], dated[0]}
    assert matches(api, field, "within_next", {"days": 1}) == {dated[0], dated[1]}
    assert matches(api, field, "more_than_ago", {"days": 1}) == {dated[-2]}


# --- lists -----------------------------------------------------------------------------------


def test_list_operators(api: TestClient) -> None:
    define(api, "features", "list")
    both = user(api, custom_attributes={"features": ["Chat", "API", 3]})
    chat = user(api, custom_attributes={"features": ["chat"]})
    empty = user(api, custom_attributes={"features": []})
    none = user(api)
    field = "custom_attributes.features"
    assert matches(api, field, "contains", "CHAT") == {both, chat}
    assert matches(api, field, "~", "api") == {both}
    assert matches(api, field, "contains", 3) == {both}
    assert matches(api, field, "contains", "3") == set()
    assert matches(api, field, "not_contains", "chat") == {empty, none}
    assert matches(api, field, "!~", "api") == {chat, empty, none}
    assert matches(api, field, "in", ["api", "sso"]) == {both}
    assert matches(api, field, "nin", ["api", "sso"]) == {chat, empty, none}
    assert matches(api, field, "exists") == {both, chat, empty}
    assert matches(api, field, "not_exists") == {none}


def test_attribute_names_that_need_quoting_are_found(api: TestClient) -> None:
    define(api, 'say "hi"', "string")
    define(api, "café", "number")
    define(api, "it's 100%", "string")
    quoted = user(api, custom_attributes={'say "hi"': "yes", "café": 2, "it's 100%": "x"})
    user(api)
    assert matches(api, 'custom_attributes.say "hi"', "eq", "YES") == {quoted}
    assert matches(api, "custom_attributes.café", "gt", 1) == {quoted}
    assert matches(api, "custom_attributes.it's 100%", "exists") == {quoted}
