"""Property: for random people, companies, tags, lists and events, and random valid filters, the
database finds exactly the users the plain Python evaluator (evaluator.py) accepts.

Each example writes a small world into a new environment of the same database (so earlier
examples' data sits beside it and must never match) and checks a few filters against it.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from audience.attributes.models import AttributeDefinition
from audience.companies.models import Company
from audience.companies.models import Membership as CompanyMembership
from audience.db import Database
from audience.environments import service as environments
from audience.events.models import Event
from audience.lists.models import ListMember, UserList
from audience.segments import service
from audience.tags.models import Tag, UserTag
from audience.users.models import User
from tests.segments.evaluator import (
    ALIASES,
    COMPANY_TYPES,
    USER_TYPES,
    Ev,
    Firm,
    Person,
    evaluate,
)

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)

# --- worlds ------------------------------------------------------------------------------------

HOURS = [-24 * 40, -24 * 7 - 1, -24 * 7, -25, -24, -1, 0, 1, 24, 24 * 7]
times = st.sampled_from(HOURS).map(lambda h: NOW + timedelta(hours=h)) | st.sampled_from(
    [NOW - timedelta(hours=24, seconds=0.5), NOW + timedelta(microseconds=1)]
)
texts = st.text("aAb%_\\ ", max_size=3)
numbers = st.sampled_from([-1, 0, 1, 2, 2.5, 3, 10])
days = st.integers(-3, 3).map(lambda n: (NOW.date() + timedelta(days=n)).isoformat())


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")  # as values.format_datetime writes them


custom_values = st.fixed_dictionaries(
    {},
    optional={
        "plan": texts | st.just(5),
        "seats": numbers | st.just("3"),
        "vip": st.booleans() | st.just(1),
        "due": days | st.just("soon"),
        "paid_at": times.map(iso) | st.just("2024-06-15T12:00:00") | st.just(3),
        "features": st.lists(st.sampled_from(["a", "A", "b", 1, 2, True]), max_size=3) | texts,
    },
)
firms = st.builds(
    Firm,
    plan=st.sampled_from([None, "pro", "Pro", "free"]),
    size=st.sampled_from([None, 1, 10]),
    custom=st.fixed_dictionaries(
        {}, optional={"mrr": numbers | st.just("x"), "tier": texts | st.just(2)}
    ),
)
properties = st.fixed_dictionaries(
    {},
    optional={
        "plan": texts | st.none() | st.just(1),
        "amount": numbers | st.just("2"),
        "gift": st.booleans() | st.none(),
    },
)
events = st.builds(
    Ev,
    name=st.sampled_from(["Paid", "Login"]),
    kind=st.sampled_from(["track", "page", "$pageview"]),
    timestamp=times,
    properties=properties,
    page_url=st.sampled_from(
        [None, "https://x.io/Pricing", "https://x.io/docs/a_b", "http://y.io/100%", ""]
    ),
)
people = st.builds(
    Person,
    standard=st.fixed_dictionaries(
        {
            "name": texts | st.none(),
            "email": texts | st.none(),
            "user_id": st.sampled_from([None, "a1", "A1", "b_2"]),
            "city": st.sampled_from([None, "Cork", "cork", "Oslo"]),
            "session_count": st.integers(0, 3),
            "unsubscribed_from_emails": st.booleans(),
            "signed_up_at": times | st.none(),
            "created_at": times,
        }
    ),
    custom=custom_values,
    tags=st.sets(st.sampled_from(["VIP", "vip", "churn"]), max_size=2),
    lists=st.sets(st.sampled_from(["Beta", "News"]), max_size=2),
    companies=st.just([]),
    events=st.lists(events, max_size=4),
)
worlds = st.tuples(
    st.lists(people, min_size=1, max_size=6),
    st.lists(firms, max_size=3),
    st.lists(st.lists(st.integers(0, 2), max_size=2), min_size=6, max_size=6),
    st.lists(st.booleans(), min_size=6, max_size=6),
)

# --- valid filters -----------------------------------------------------------------------------


def op(*names: str) -> st.SearchStrategy[str]:
    aliases = [alias for alias, name in ALIASES.items() if name in names]
    return st.sampled_from([*names, *aliases])


def condition(field: str, operator: st.SearchStrategy[str], value: Any = None) -> Any:
    if value is None:
        return st.builds(lambda o: {"field": field, "op": o}, operator)
    return st.builds(lambda o, v: {"field": field, "op": o, "value": v}, operator, value)


windows = st.builds(
    lambda unit, n: {unit: n}, st.sampled_from(["days", "hours"]), st.sampled_from([0, 1, 7, 30])
)
moments = times.map(iso) | times.map(lambda t: int(t.timestamp()))
spans = st.tuples(times, times).map(lambda pair: [iso(t) for t in sorted(pair)])
MATCHING = ("contains", "not_contains", "starts_with", "ends_with")
presence = op("exists", "not_exists")


def pair(values: st.SearchStrategy[Any]) -> st.SearchStrategy[list[Any]]:
    return st.tuples(values, values).map(sorted).map(list)  # type: ignore[arg-type]


def typed_condition(field: str, type_: str) -> st.SearchStrategy[dict[str, Any]]:
    if type_ == "string":
        return (
            condition(field, op("eq", "ne", *MATCHING), texts | st.sampled_from(["a1", "cork"]))
            | condition(field, op("in", "nin"), st.lists(texts, min_size=1, max_size=3))
            | condition(field, presence)
        )  # fmt: skip
    if type_ == "number":
        return (
            condition(field, op("eq", "ne", "gt", "gte", "lt", "lte"), numbers)
            | condition(field, op("in", "nin"), st.lists(numbers, min_size=1, max_size=3))
            | condition(field, op("between"), pair(numbers))
            | condition(field, presence)
        )
    if type_ == "boolean":
        return condition(field, op("eq", "ne"), st.booleans()) | condition(field, presence)
    if type_ == "list":
        elements = st.sampled_from(["a", "b", "B", 1, 2, True])
        same_kind = st.sampled_from([["a", "B"], ["b"], [1], [2, 3], [True], [False]])
        return (
            condition(field, op("contains", "not_contains"), elements)
            | condition(field, op("in", "nin"), same_kind)
            | condition(field, presence)
        )
    points = days if type_ == "date" else moments
    return (
        condition(field, op("eq", "ne", "gt", "gte", "lt", "lte", "before", "after"), points)
        | condition(field, op("between"), pair(days) if type_ == "date" else spans)
        | condition(field, op("within_last", "within_next", "more_than_ago"), windows)
        | condition(field, presence)
    )  # fmt: skip


def property_condition() -> st.SearchStrategy[dict[str, Any]]:
    return (
        typed_condition("plan", "string")
        | typed_condition("amount", "number")
        | typed_condition("gift", "boolean")
    )


occurrence = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["eq", "gt", "gte", "lt", "lte", "before", "after"]),
        "value": moments,
    }
) | st.fixed_dictionaries(
    {"op": st.sampled_from(["within_last", "within_next", "more_than_ago"]), "value": windows}
)
behaviours = st.fixed_dictionaries(
    {"event": st.sampled_from(["Paid", "Login", "Never"])},
    optional={
        "count": st.dictionaries(
            st.sampled_from(["eq", "gte", "lte"]), st.integers(0, 3), min_size=1, max_size=1
        ),
        "within_days": st.sampled_from([1, 7, 30]),
        "where": st.lists(property_condition(), max_size=2),
        "first": occurrence,
        "last": occurrence,
    },
) | st.fixed_dictionaries(
    {"page": st.sampled_from(["*", "*pricing*", "*.io/docs/*", "https://x.io/pricing", "*%*"])},
    optional={"count": st.just({"gte": 2}), "within_hours": st.sampled_from([1, 24])},
)  # fmt: skip
memberships = st.sampled_from(["tags", "lists"]).flatmap(
    lambda kind: (
        condition(
            kind,
            op("eq", "ne"),
            st.sampled_from(["VIP", "vip", "churn", "Beta", "News", "none"]),
        )
        | condition(
            kind, op("in", "nin"), st.lists(st.sampled_from(["VIP", "churn", "Beta"]), min_size=1)
        )
        | condition(kind, presence)
    )
)
leaves = st.one_of(
    *(typed_condition(name, type_) for name, type_ in {
        "name": "string", "email": "string", "user_id": "string", "city": "string",
        "session_count": "number", "unsubscribed_from_emails": "boolean",
        "signed_up_at": "datetime", "created_at": "datetime",
    }.items()),
    *(typed_condition(f"custom_attributes.{name}", type_) for name, type_ in USER_TYPES.items()),
    typed_condition("company.plan", "string"),
    typed_condition("company.size", "number"),
    *(typed_condition(f"company.{name}", type_) for name, type_ in COMPANY_TYPES.items()),
    memberships,
    behaviours,
)  # fmt: skip


def trees(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    if depth == 0:
        return leaves
    inner = trees(depth - 1)
    return (
        leaves
        | st.builds(lambda items: {"and": items}, st.lists(inner, max_size=2))
        | st.builds(lambda items: {"or": items}, st.lists(inner, max_size=2))
        | st.builds(lambda item: {"not": item}, inner)
    )


# --- the property ------------------------------------------------------------------------------


def store(session: Session, world: tuple[Any, ...]) -> tuple[int, dict[int, Person]]:
    persons, firms_, joins, merges = world
    n = next(_ids)
    environment = environments.create_environment(session, name=f"P{n}", slug=f"prop-{n}")
    env = environment.id
    for model, types in (("user", USER_TYPES), ("company", COMPANY_TYPES)):
        session.add_all(
            AttributeDefinition(environment_id=env, model=model, name=name, label=name, type=type_)
            for name, type_ in types.items()
        )
    companies = [
        Company(
            environment_id=env,
            company_id=f"c{i}",
            name="Acme",
            plan=firm.plan,
            size=firm.size,
            custom_attributes=firm.custom,
        )
        for i, firm in enumerate(firms_)
    ]
    tags = {name: Tag(environment_id=env, name=name) for name in ("VIP", "vip", "churn")}
    lists = {name: UserList(environment_id=env, name=name) for name in ("Beta", "News")}
    session.add_all([*companies, *tags.values(), *lists.values()])
    stored: dict[int, Person] = {}
    taken: set[str] = set()
    for index, person in enumerate(persons):
        columns = dict(person.standard)
        if columns["user_id"] in taken:
            columns["user_id"] = person.standard["user_id"] = None
        taken.add(columns["user_id"])
        row = User(
            environment_id=env,
            user_key=f"k{n}-{index}",
            custom_attributes=person.custom,
            attribute_times={},
            updated_at=NOW,
            **columns,
        )
        session.add(row)
        session.flush()
        if merges[index] and stored:
            row.merged_into_id = next(iter(stored))
            person.merged = True
        joined = sorted({i for i in joins[index] if i < len(firms_)})
        person.companies = [firms_[i] for i in joined]
        session.add_all(
            CompanyMembership(company_id=companies[i].id, user_id=row.id) for i in joined
        )
        session.add_all(UserTag(tag_id=tags[name].id, user_id=row.id) for name in person.tags)
        session.add_all(ListMember(list_id=lists[name].id, user_id=row.id) for name in person.lists)
        session.add_all(
            Event(
                environment_id=env,
                user_id=row.id,
                name=event.name,
                kind=event.kind,
                timestamp=event.timestamp,
                message_id=f"m{n}-{index}-{i}",
                properties=event.properties,
                page_url=event.page_url,
            )
            for i, event in enumerate(person.events)
        )
        stored[row.id] = person
    session.flush()
    return env, stored


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(world=worlds, filters=st.lists(trees(3), min_size=1, max_size=4))
def test_the_database_finds_exactly_who_the_evaluator_accepts(
    database: Database, world: tuple[Any, ...], filters: list[dict[str, Any]]
) -> None:
    with database.transaction() as session:
        env, stored = store(session, world)
        for raw in filters:
            tree = service.parse(session, environment_id=env, raw=raw)
            query = service.matching_users(session, environment_id=env, filter=tree, now=NOW)
            got = {user.id for user in session.scalars(query)}
            expected = {
                id
                for id, person in stored.items()
                if not person.merged and evaluate(raw, person, NOW)
            }
            assert got == expected, raw
