"""Parsing filters: the typed tree, and every bad filter a 400 naming the spot (R-SEG-5)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from audience.segments.compile import compile_filter
from audience.segments.filters import (
    ALIASES,
    And,
    Behaviour,
    Condition,
    Definitions,
    Field,
    FilterError,
    Membership,
    Not,
    Or,
    Ref,
    Window,
    parse_filter,
)
from tests.segments.helpers import define, error_of, search

DEFINITIONS = Definitions(
    user={
        "plan": "string",
        "seats": "number",
        "vip": "boolean",
        "due": "date",
        "paid_at": "datetime",
        "features": "list",
    },
    company={"mrr": "number"},
)


def parse(raw: Any) -> Any:
    return parse_filter(raw, definitions=DEFINITIONS)


def spot(raw: Any) -> str:
    with pytest.raises(FilterError) as caught:
        parse(raw)
    assert caught.value.status == 400 and caught.value.code == "invalid_filter"
    return str(caught.value.field)


def cond(field: str, op: str, value: Any = ...) -> dict[str, Any]:
    return {"field": field, "op": op} | ({} if value is ... else {"value": value})


# --- the tree ----------------------------------------------------------------------------------


def test_a_filter_parses_into_a_typed_tree() -> None:
    tree = parse(
        {
            "and": [
                cond("custom_attributes.seats", ">", 3),
                {"not": cond("email", "~", "@gmail.")},
                {"or": [cond("tags", "IN", ["VIP", 7]), cond("company.mrr", "gte", 1.5)]},
                cond("signed_up_at", "within_last", {"days": 7}),
                cond("custom_attributes.due", "before", "2025-01-01"),
                {
                    "event": "Paid",
                    "count": {"gte": 2},
                    "within_days": 30,
                    "where": [cond("amount", "gt", 10)],
                    "last": {"op": "after", "value": 0},
                },
            ]
        }
    )
    assert tree == And(
        (
            Condition(Field("user", "seats", "number", custom=True), "gt", 3),
            Not(Condition(Field("user", "email", "string"), "contains", "@gmail.")),
            Or(
                (
                    Membership("tags", "in", (Ref(name="VIP"), Ref(id=7))),
                    Condition(Field("company", "mrr", "number", custom=True), "gte", 1.5),
                )
            ),
            Condition(Field("user", "signed_up_at", "datetime"), "within_last", Window("days", 7)),
            Condition(Field("user", "due", "date", custom=True), "before", date(2025, 1, 1)),
            Behaviour(
                event="Paid",
                page=None,
                count=("gte", 2),
                within=Window("days", 30),
                where=(Condition(Field("event", "amount", "number"), "gt", 10),),
                last=Condition(
                    Field("event", "last", "datetime"), "after", datetime(1970, 1, 1, tzinfo=UTC)
                ),
            ),
        )
    )


def test_every_alias_names_an_operator() -> None:
    assert set(ALIASES) == {"=", "!=", "IN", "NIN", ">", ">=", "<", "<=", "~", "!~", "^", "$"}
    assert parse(cond("name", "^", "a")).op == "starts_with"  # type: ignore[union-attr]
    assert parse(cond("name", "$", "a")).op == "ends_with"  # type: ignore[union-attr]
    assert parse(cond("name", "!~", "a")).op == "not_contains"  # type: ignore[union-attr]
    assert parse(cond("id", "NIN", [1])).op == "nin"  # type: ignore[union-attr]


def test_identifiers_are_exact_and_text_is_not() -> None:
    assert parse(cond("user_id", "eq", "A")).field.exact  # type: ignore[union-attr]
    assert not parse(cond("email", "eq", "A")).field.exact  # type: ignore[union-attr]


def test_datetimes_are_utc_and_naive_times_are_utc() -> None:
    tree = parse(cond("last_seen_at", "after", "2024-05-01T12:00:00+02:00"))
    assert tree.value == datetime(2024, 5, 1, 10, tzinfo=UTC)  # type: ignore[union-attr]
    tree = parse(cond("last_seen_at", "after", "2024-05-01T12:00:00"))
    assert tree.value == datetime(2024, 5, 1, 12, tzinfo=UTC)  # type: ignore[union-attr]


def test_empty_groups_are_allowed() -> None:
    assert parse({"and": []}) == And(())
    assert parse({"or": []}) == Or(())


# --- bad filters name the spot -----------------------------------------------------------------

DEEP = {"and": [{"or": [{"not": {"and": [cond("name", "exists")]}}]}]}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ([], "filter"),
        ("name = x", "filter"),
        ({}, "filter"),
        ({"and": {}}, "filter.and"),
        ({"and": [], "or": []}, "filter.or"),
        ({"and": [cond("name", "exists"), 5]}, "filter.and[1]"),
        (cond("nope", "eq", 1), "filter.field"),
        (cond(5, "eq", 1), "filter.field"),
        ({"or": [cond("name", "eq", "a"), cond("plan", "eq", "a")]}, "filter.or[1].field"),
        (cond("custom_attributes.unknown", "eq", 1), "filter.field"),
        (cond("company.unknown", "eq", 1), "filter.field"),
        (cond("name", "like", "a"), "filter.op"),
        (cond("name", 5, "a"), "filter.op"),
        ({"field": "name", "value": "a"}, "filter.op"),
        (cond("name", "gt", "a"), "filter.op"),
        (cond("custom_attributes.vip", "in", [True]), "filter.op"),
        (cond("custom_attributes.seats", "contains", 1), "filter.op"),
        (cond("custom_attributes.features", "eq", "a"), "filter.op"),
        (cond("created_at", "within_last", {"days": 1}) | {"extra": 1}, "filter.extra"),
        (cond("name", "eq", 5), "filter.value"),
        (cond("name", "eq", None), "filter.value"),
        (cond("name", "eq"), "filter.value"),
        (cond("name", "exists", "x"), "filter.value"),
        (cond("name", "in", "a"), "filter.value"),
        (cond("name", "in", []), "filter.value"),
        (cond("name", "in", ["a", 2]), "filter.value[1]"),
        (cond("name", "eq", "a\x00"), "filter.value"),
        (cond("session_count", "eq", "3"), "filter.value"),
        (cond("session_count", "eq", True), "filter.value"),
        (cond("session_count", "eq", 10**30), "filter.value"),
        (cond("session_count", "between", [1]), "filter.value"),
        (cond("session_count", "between", [5, 1]), "filter.value"),
        (cond("session_count", "between", [1, "x"]), "filter.value[1]"),
        (cond("custom_attributes.vip", "eq", "true"), "filter.value"),
        (cond("created_at", "before", "yesterday"), "filter.value"),
        (cond("created_at", "before", 10**20), "filter.value"),
        (cond("created_at", "within_last", 7), "filter.value"),
        (cond("created_at", "within_last", {"weeks": 1}), "filter.value"),
        (cond("created_at", "within_last", {"days": -1}), "filter.value"),
        (cond("created_at", "within_last", {"days": 1.5}), "filter.value"),
        (cond("created_at", "within_last", {"days": 1, "hours": 1}), "filter.value"),
        (cond("custom_attributes.due", "eq", "2024-02-30"), "filter.value"),
        (cond("custom_attributes.due", "eq", "2024-02-01T10:00:00Z"), "filter.value"),
        (cond("custom_attributes.features", "in", ["a", 1]), "filter.value"),
        (cond("custom_attributes.features", "contains", ["a"]), "filter.value"),
        (cond("tags", "gt", "a"), "filter.op"),
        (cond("tags", "eq", ""), "filter.value"),
        (cond("tags", "in", ["a", 1.5]), "filter.value[1]"),
        (cond("tags", "in", [{"id": "x"}]), "filter.value[0].id"),
        (cond("segments", "eq", "Active"), "filter.field"),
        ({"event": "A", "page": "*"}, "filter"),
        ({"event": ""}, "filter.event"),
        ({"event": 5}, "filter.event"),
        ({"page": "x" * 2049}, "filter.page"),
        ({"event": "A", "count": 3}, "filter.count"),
        ({"event": "A", "count": {"gt": 3}}, "filter.count"),
        ({"event": "A", "count": {"gte": -1}}, "filter.count.gte"),
        ({"event": "A", "within_days": "7"}, "filter.within_days"),
        ({"event": "A", "within_days": 1, "within_hours": 1}, "filter"),
        ({"event": "A", "where": {}}, "filter.where"),
        ({"event": "A", "where": [5]}, "filter.where[0]"),
        ({"event": "A", "where": [cond("amount", "before", 1)]}, "filter.where[0].op"),
        ({"event": "A", "where": [cond("amount", "gt", "x")]}, "filter.where[0].op"),
        ({"event": "A", "where": [cond("", "eq", "x")]}, "filter.where[0].field"),
        ({"event": "A", "where": [cond("p", "in", ["x", 1])]}, "filter.where[0].value[1]"),
        ({"event": "A", "first": "2024-01-01"}, "filter.first"),
        ({"event": "A", "last": {"op": "exists"}}, "filter.last.op"),
        ({"event": "A", "last": {"op": "after"}}, "filter.last.value"),
        ({"event": "A", "times": 3}, "filter.times"),
        ({"and": [{"or": [{"not": {"and": [{"or": []}]}}]}]}, "filter.and[0].or[0].not.and[0]"),
    ],
)
def test_a_bad_filter_names_the_spot(raw: Any, field: str) -> None:
    assert spot(raw) == field


def test_four_levels_of_groups_are_allowed_and_five_are_not() -> None:
    parse(DEEP)
    assert spot({"not": DEEP}) == "filter.not.and[0].or[0].not"  # the fifth group


def test_fifty_conditions_are_allowed_and_fifty_one_are_not() -> None:
    parse({"and": [cond("name", "exists")] * 50})
    assert spot({"and": [cond("name", "exists")] * 51}) == "filter.and[50]"
    where = [cond("a", "exists")] * 49
    assert spot({"and": [{"event": "E", "where": where}, cond("name", "exists")]}) == (
        "filter.and[1]"
    )


def test_a_custom_attribute_without_its_prefix_gets_a_hint() -> None:
    with pytest.raises(FilterError, match=r"custom_attributes\.plan"):
        parse(cond("plan", "eq", "pro"))


# --- never a 500 -------------------------------------------------------------------------------

FIELDS = [
    "name",
    "user_id",
    "session_count",
    "created_at",
    "unsubscribed_from_emails",
    "tags",
    "lists",
    "segments",
    "company.plan",
    "company.mrr",
    "company.size",
    "custom_attributes.plan",
    "custom_attributes.seats",
    "custom_attributes.vip",
    "custom_attributes.due",
    "custom_attributes.paid_at",
    "custom_attributes.features",
    "nope",
]
OPS = [
    "eq",
    "ne",
    "in",
    "nin",
    "gt",
    "gte",
    "lt",
    "lte",
    "between",
    "contains",
    "not_contains",
    "starts_with",
    "ends_with",
    "exists",
    "not_exists",
    "before",
    "after",
    "within_last",
    "within_next",
    "more_than_ago",
    *ALIASES,
    "bad",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["2024-01-01", "2024-01-01T10:00:00Z", "VIP", "*x*"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["days", "hours", "id", "name", "x"]), inner, max_size=2)
    ),
    max_leaves=5,
)
conditions = st.fixed_dictionaries(
    {"field": st.sampled_from(FIELDS), "op": st.sampled_from(OPS)}, optional={"value": values}
)
behaviours = st.fixed_dictionaries(
    {"event": st.sampled_from(["A", "", 3])},
    optional={
        "count": st.dictionaries(st.sampled_from(["eq", "gte", "lte", "gt"]), values, max_size=2),
        "within_days": values,
        "where": st.lists(conditions | values, max_size=2),
        "first": st.fixed_dictionaries({"op": st.sampled_from(OPS)}, optional={"value": values}),
    },
)
filters = st.recursive(
    conditions | behaviours | values,
    lambda inner: st.dictionaries(
        st.sampled_from(["and", "or", "not"]), st.lists(inner, max_size=3) | inner, max_size=2
    ),
    max_leaves=8,
)


@settings(max_examples=400, deadline=None)
@given(raw=filters)
def test_any_json_parses_or_is_a_filter_error_and_compiles_on_both_databases(raw: Any) -> None:
    try:
        tree = parse_filter(raw, definitions=DEFINITIONS)
    except FilterError as error:
        assert error.field is not None and error.field.startswith("filter")
        return
    now = datetime(2024, 6, 1, tzinfo=UTC)
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        expression = compile_filter(tree, environment_id=1, now=now, dialect=dialect.name)
        str(expression.compile(dialect=dialect))


# --- through HTTP -------------------------------------------------------------------------------


def test_a_bad_filter_is_a_400_in_the_error_shape(api: TestClient) -> None:
    define(api, "plan", "string")
    response = search(
        api, {"and": [cond("name", "exists"), cond("custom_attributes.plan", "gt", 1)]}
    )
    assert response.status_code == 400
    assert response.json() == {
        "type": "error.list",
        "errors": [
            {
                "code": "invalid_filter",
                "message": "operator 'gt' doesn't apply to a string field; use one of eq, ne, in, "
                "nin, contains, not_contains, starts_with, ends_with, exists, not_exists",
                "field": "filter.and[1].op",
            }
        ],
    }


@pytest.mark.parametrize(
    "body",
    [
        '{"filter": {"field": "session_count", "op": "eq", "value": NaN}}',
        '{"filter": {"field": "name", "op": "eq", "value": "\\ud800"}}',
        '{"filter": {"field": "session_count", "op": "gt", "value": 1e400}}',
        '{"filter": {"field": "name", "op": "exists", "value\\ud800": 1}}',
    ],
)
def test_values_json_allows_but_databases_cannot_hold_are_400(api: TestClient, body: str) -> None:
    response = api.post(
        "/api/v1/users/search", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert error_of(response)["field"] in ("filter.value", "filter")


def test_a_filter_nested_past_any_limit_is_a_400(api: TestClient) -> None:
    deep: Any = cond("name", "exists")
    for _ in range(200):
        deep = {"not": deep}
    response = search(api, deep)
    assert response.status_code == 400
    assert error_of(response)["field"] == "filter.not.not.not.not"
