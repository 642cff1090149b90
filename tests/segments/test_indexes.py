"""Expression indexes for custom attributes of saved segments: created, used, dropped."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, insert, text

from audience.db import Database
from audience.pagination import PageParams
from audience.segments import indexes, service
from audience.segments.filters import parse_filter
from audience.users.models import User
from tests.conftest import Tenant
from tests.segments.helpers import define

TYPES = {"plan": "string", "mrr": "number", "signed_up": "date", "beta": "boolean"}


@pytest.fixture
def populated(tenant: Tenant, database: Database) -> Tenant:
    """3,000 users with varied custom attributes, statistics gathered."""
    for name, type_ in TYPES.items():
        define(tenant.client, name, type_)
    rng = random.Random(7)
    now = datetime.now(UTC)
    rows = [
        {
            "environment_id": tenant.id,
            "user_key": f"k{index:08d}",
            "custom_attributes": {
                "plan": rng.choice(["free", "starter", "pro", "enterprise"] * 5 + [f"p{index}"]),
                "mrr": rng.randrange(0, 100_000),
                "signed_up": f"202{rng.randrange(5)}-0{rng.randrange(1, 10)}-1{rng.randrange(10)}",
                "beta": rng.random() < 0.01,
            },
            "created_at": now,
            "updated_at": now,
        }
        for index in range(3000)
    ]
    with database.transaction() as session:
        session.execute(insert(User), rows)
    with database.engine.begin() as connection:
        connection.execute(text("ANALYZE"))
    return tenant


def _plan(engine: Engine, run: Any) -> str:
    """The query plan of the statement `run` sends that reads users (EXPLAIN of the very SQL
    and parameters the driver got)."""
    seen: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM users" in statement and "count(" not in statement.lower():
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    statement, parameters = seen[-1]
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
        rows = connection.exec_driver_sql(explain + statement, parameters).fetchall()
    return "\n".join(str(row[-1] if sqlite else row[0]) for row in rows)


def _search(database: Database, tenant: Tenant, filter: Any, sort: str = "created_at") -> Any:
    def run() -> None:
        with database.transaction(write=False) as session:
            service.search_users(
                session,
                environment_id=tenant.id,
                filter=filter,
                q=None,
                sort=sort,
                descending=False,
                params=PageParams(1, 50, None),
            )

    return _plan(database.engine, run)


@pytest.fixture
def synced(populated: Tenant, database: Database) -> Iterator[Tenant]:
    wanted = {("user", name, type_) for name, type_ in TYPES.items()}
    indexes.sync_custom_attribute_indexes(database.engine, wanted=wanted)
    yield populated
    indexes.sync_custom_attribute_indexes(database.engine, wanted=set())


def _index(name: str, dialect: str) -> str:
    found = indexes.index_for("user", name, TYPES[name], dialect=dialect)
    assert found is not None
    return found.name


def _names(dialect: str, *attributes: str) -> list[str]:
    """The indexes wanted for `attributes`: one each, and on PostgreSQL the GIN over them."""
    singles = [indexes.index_for("user", name, TYPES[name], dialect=dialect) for name in attributes]
    names = [index.name for index in singles if index is not None]
    combined = indexes.combined_index(index for index in singles if index is not None)
    if dialect == "postgresql" and combined is not None:
        names.append(combined.name)
    return sorted(names)


def test_sync_creates_the_wanted_indexes_and_drops_the_rest(
    populated: Tenant, database: Database
) -> None:
    engine = database.engine
    dialect = engine.dialect.name
    first = indexes.sync_custom_attribute_indexes(
        engine, wanted={("user", "plan", "string"), ("user", "mrr", "number")}
    )
    assert sorted(first.created) == _names(dialect, "plan", "mrr")
    again = indexes.sync_custom_attribute_indexes(
        engine, wanted={("user", "plan", "string"), ("user", "mrr", "number")}
    )
    assert again.created == [] and again.dropped == []
    indexes.sync_custom_attribute_indexes(engine, wanted={("user", "mrr", "number")})
    with engine.connect() as connection:
        assert set(indexes.existing_indexes(connection)) == {_index("mrr", dialect)}
    indexes.sync_custom_attribute_indexes(engine, wanted=set())
    with engine.connect() as connection:
        assert indexes.existing_indexes(connection) == {}


def test_lists_and_company_attributes_get_no_index() -> None:
    assert indexes.index_for("user", "tags", "list", dialect="postgresql") is None
    assert indexes.index_for("company", "plan", "string", dialect="sqlite") is None
    assert indexes.index_for("user", 'a"b', "string", dialect="sqlite") is None


def test_index_names_are_stable_and_differ_by_type() -> None:
    a = indexes.index_for("user", "plan", "string", dialect="sqlite")
    b = indexes.index_for("user", "plan", "string", dialect="postgresql")
    c = indexes.index_for("user", "plan", "number", dialect="sqlite")
    assert a is not None and b is not None and c is not None
    assert a.name == b.name != c.name
    assert a.name.startswith("ix_users_ca_")


def test_filter_on_string_equality_uses_its_index(synced: Tenant, database: Database) -> None:
    plan = _search(database, synced, {"field": "custom_attributes.plan", "op": "eq", "value": "p7"})
    assert _index("plan", database.engine.dialect.name) in plan, plan


def test_filter_on_number_range_uses_its_index(synced: Tenant, database: Database) -> None:
    filter = {"field": "custom_attributes.mrr", "op": "between", "value": [10, 20]}
    plan = _search(database, synced, filter)
    assert _index("mrr", database.engine.dialect.name) in plan, plan


def test_filter_on_date_uses_its_index(synced: Tenant, database: Database) -> None:
    filter = {"field": "custom_attributes.signed_up", "op": "eq", "value": "2021-03-14"}
    plan = _search(database, synced, filter)
    assert _index("signed_up", database.engine.dialect.name) in plan, plan


def test_sort_by_a_number_uses_its_index(synced: Tenant, database: Database) -> None:
    plan = _search(database, synced, None, sort="custom_attributes.mrr")
    assert _index("mrr", database.engine.dialect.name) in plan, plan


def test_wanted_by_segments_reads_saved_filters(populated: Tenant, database: Database) -> None:
    response = populated.client.post(
        "/api/v1/segments",
        json={
            "name": "Pro payers",
            "filter": {
                "and": [
                    {"field": "custom_attributes.plan", "op": "eq", "value": "pro"},
                    {"not": {"field": "custom_attributes.mrr", "op": "lt", "value": 5}},
                    {"field": "email", "op": "exists"},
                ]
            },
        },
    )
    assert response.status_code in (200, 201), response.text
    with database.transaction(write=False) as session:
        assert indexes.wanted_by_segments(session) == {
            ("user", "plan", "string"),
            ("user", "mrr", "number"),
            ("column", "email", "string"),  # wanted, but it has an index of its own
        }
    result = indexes.sync_segment_indexes(database.engine)
    assert sorted(result.created) == _names(database.engine.dialect.name, "plan", "mrr")
    indexes.sync_custom_attribute_indexes(database.engine, wanted=set())


def test_parsed_filter_compiles_to_the_indexed_expression() -> None:
    """The index text is rendered from the compiler's own expression, not written by hand."""
    definitions = service.Definitions(user=TYPES)
    parsed = parse_filter(
        {"field": "custom_attributes.mrr", "op": "gt", "value": 1}, definitions=definitions
    )
    assert parsed is not None
    index = indexes.index_for("user", "mrr", "number", dialect="sqlite")
    assert index is not None and "json_extract(custom_attributes" in index.expression


def test_two_syncs_at_once_build_each_index_once(populated: Tenant, database: Database) -> None:
    wanted = {("user", name, type_) for name, type_ in TYPES.items()}
    with ThreadPoolExecutor(2) as pool:
        results = list(
            pool.map(
                lambda _: indexes.sync_custom_attribute_indexes(database.engine, wanted=wanted),
                range(2),
            )
        )
    assert sorted(results[0].created + results[1].created) == _names(
        database.engine.dialect.name, *TYPES
    )
    with database.engine.connect() as connection:
        assert all(indexes.existing_indexes(connection).values())
    indexes.sync_custom_attribute_indexes(database.engine, wanted=set())


def _eventually(check: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_segment_writes_keep_the_indexes_in_step(populated: Tenant, database: Database) -> None:
    """The API wakes the app's IndexKeeper after each segment write has committed; its thread
    builds what saved filters use and drops what they no longer use."""
    keeper = populated.client.app.state.index_keeper  # type: ignore[attr-defined]
    stop = threading.Event()
    thread = threading.Thread(target=keeper.run_forever, args=(stop,), daemon=True)
    thread.start()
    dialect = database.engine.dialect.name

    def ours() -> set[str]:
        with database.engine.connect() as connection:
            return {name for name, valid in indexes.existing_indexes(connection).items() if valid}

    try:
        created = populated.client.post(
            "/api/v1/segments",
            json={
                "name": "Pro",
                "filter": {"field": "custom_attributes.plan", "op": "eq", "value": "pro"},
            },
        )
        assert created.status_code == 200, created.text
        _eventually(lambda: ours() == {_index("plan", dialect)})
        id = created.json()["id"]

        renamed = populated.client.patch(f"/api/v1/segments/{id}", json={"name": "Payers"})
        assert renamed.status_code == 200, renamed.text
        changed = populated.client.patch(
            f"/api/v1/segments/{id}",
            json={"filter": {"field": "custom_attributes.mrr", "op": "gte", "value": 5}},
        )
        assert changed.status_code == 200, changed.text
        _eventually(lambda: ours() == {_index("mrr", dialect)})

        assert populated.client.delete(f"/api/v1/segments/{id}").status_code == 200
        _eventually(lambda: ours() == set())
    finally:
        stop.set()
        thread.join(timeout=30)
        indexes.sync_custom_attribute_indexes(database.engine, wanted=set())


def test_postgresql_combines_the_attributes_in_one_gin_index(
    synced: Tenant, database: Database
) -> None:
    """The GIN over every indexed attribute answers a filter on several of them at once."""
    if database.engine.dialect.name != "postgresql":
        pytest.skip("GIN is PostgreSQL's")
    (name,) = [n for n in _names("postgresql", *TYPES) if "_gin_" in n]
    with database.engine.connect() as connection:
        definition = connection.execute(
            text("SELECT indexdef FROM pg_indexes WHERE indexname = :name"), {"name": name}
        ).scalar_one()
    assert "USING gin (environment_id" in definition
    assert all(f"'{attribute}'" in definition for attribute in TYPES)
    both = {
        "and": [
            {"field": "custom_attributes.plan", "op": "eq", "value": "PRO"},
            {"field": "custom_attributes.mrr", "op": "gte", "value": 90_000},
        ]
    }
    with database.transaction(write=False) as session:
        page = service.search_users(
            session,
            environment_id=synced.id,
            filter=both,
            q=None,
            sort="created_at",
            descending=True,
            params=PageParams(1, 50, None),
        )
        rows = session.execute(text("SELECT custom_attributes FROM users")).scalars().all()
    expected = sum(1 for ca in rows if ca["plan"] == "pro" and ca["mrr"] >= 90_000)
    assert page.total == expected > 0


def test_standard_columns_of_saved_filters_get_indexes_too(
    populated: Tenant, database: Database
) -> None:
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "UPDATE users SET country = CASE WHEN id % 300 = 0 THEN 'Iceland' ELSE 'Germany' "
                "END, session_count = id % 7"
            )
        )
        connection.execute(text("ANALYZE"))
    filter = {
        "and": [
            {"field": "country", "op": "eq", "value": "iceland"},  # strings ignore case
            {"field": "session_count", "op": "gt", "value": 2},
            {"field": "email", "op": "exists"},  # has an index of its own
        ]
    }
    response = populated.client.post("/api/v1/segments", json={"name": "Far", "filter": filter})
    assert response.status_code == 200, response.text
    with database.transaction(write=False) as session:
        wanted = indexes.wanted_by_segments(session)
    assert wanted == {
        ("column", "country", "string"),
        ("column", "session_count", "number"),
        ("column", "email", "string"),
    }
    dialect = database.engine.dialect.name
    country = indexes.index_for("column", "country", "string", dialect=dialect)
    assert country is not None and country.expression == "lower(country)"
    assert indexes.index_for("column", "email", "string", dialect=dialect) is None
    try:
        created = indexes.sync_segment_indexes(database.engine).created
        assert country.name in created
        iceland = {"field": "country", "op": "eq", "value": "ICELAND"}
        # Sorted by an attribute without an index: the rows are found through country's.
        plan = _search(database, populated, iceland, sort="custom_attributes.mrr")
        assert country.name in plan, plan
    finally:
        indexes.sync_custom_attribute_indexes(database.engine, wanted=set())
