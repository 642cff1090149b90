"""Undoing a merge (R-ID-7): both users back exactly, later changes kept, refusals."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from audience.db import Database, utcnow
from audience.events.models import Event
from audience.users.models import Merge
from tests.conftest import Tenant
from tests.factories import create_company, create_user
from tests.users.test_merge import (
    T0,
    add_anonymous_id,
    add_to_list,
    at,
    create_list,
    error_of,
    fetch,
    history,
    join,
    linked_rows,
    merged,
    owners,
    set_columns,
    tag,
    track,
    undo,
    user_rows,
)


def populated_pair(
    api: TestClient, database: Database, tenant: Tenant
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A survivor and a source with events, identities and links, some of them shared."""
    survivor = create_user(
        api, user_id=..., email=..., first_name="Visitor", custom_attributes={"plan": "pro"}
    )
    source = create_user(
        api,
        user_id="src-1",
        email="src@example.com",
        phone="+353 1 234 5678",
        city="Cork",
        custom_attributes={"plan": "free", "seats": 3},
    )
    set_columns(database, survivor, created_at=at(T0), session_count=2, page_views=7)
    set_columns(database, source, created_at=at(T0 - 100), session_count=1, page_views=4)
    for user, n in ((survivor, 2), (source, 3)):
        for i in range(n):
            track(api, user, name=f"Event {i}", timestamp=T0 + i)
    add_anonymous_id(database, tenant, survivor, f"dev-{survivor['id']}")
    add_anonymous_id(database, tenant, source, f"dev-{source['id']}")
    tag(api, survivor, "vip")
    tag(api, source, "vip")
    tag(api, source, "beta")
    shared, own = create_list(api), create_list(api)
    add_to_list(api, shared, survivor, source)
    add_to_list(api, own, source)
    acme, initech = create_company(api), create_company(api)
    join(api, survivor, acme)
    join(api, source, acme)
    join(api, source, initech)
    return fetch(api, survivor), fetch(api, source)


def test_undo_restores_both_users_exactly(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    survivor, source = populated_pair(api, database, tenant)
    ids = [int(survivor["id"]), int(source["id"])]
    rows_before, links_before = user_rows(database, ids), linked_rows(database, ids)
    body = merged(api, survivor, source)
    assert linked_rows(database, ids) != links_before
    response = undo(api, body["id"])
    assert response.status_code == 200, response.text
    assert response.json()["undone_at"] is not None
    assert response.json()["undone_by"] == body["actor"]
    assert fetch(api, survivor) == survivor
    assert fetch(api, source) == source
    assert user_rows(database, ids) == rows_before
    assert linked_rows(database, ids) == links_before


def test_undo_writes_the_restored_values_to_the_history(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    survivor, source = populated_pair(api, database, tenant)
    body = merged(api, survivor, source)
    undo(api, body["id"])
    rows = [r for r in history(database, survivor) if r.source_ref == f"unmerge:{body['id']}"]
    changed = {row.attribute: (row.old_value, row.new_value) for row in rows}
    assert changed["user_id"] == ("src-1", None)
    assert changed["city"] == ("Cork", None)
    assert changed["custom_attributes.seats"] == (3, None)
    restored = [r for r in history(database, source) if r.source_ref == f"unmerge:{body['id']}"]
    assert {r.attribute: r.new_value for r in restored}["user_id"] == "src-1"


def test_undo_moves_back_thousands_of_events_exactly(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    # A long run of consecutive ids (one range) and ids interleaved with the survivor's (lists).
    survivor, source = create_user(api), create_user(api)
    owners_in_order = [source] * 1500 + [source, survivor, source] * 500
    now = utcnow()
    rows = [
        {
            "environment_id": tenant.id,
            "user_id": int(user["id"]),
            "name": "Bulk",
            "kind": "track",
            "timestamp": now,
            "received_at": now,
            "message_id": f"bulk-{n}",
            "properties": {},
        }
        for n, user in enumerate(owners_in_order)
    ]
    with database.transaction() as session:
        session.execute(insert(Event), rows)
    ids = [int(survivor["id"]), int(source["id"])]
    before = linked_rows(database, ids)["events"]
    body = merged(api, survivor, source)
    assert body["moved_counts"]["events"] == 2500
    assert undo(api, body["id"]).status_code == 200
    assert linked_rows(database, ids)["events"] == before


def test_undoing_twice_is_a_conflict(api: TestClient) -> None:
    survivor, source = create_user(api), create_user(api)
    body = merged(api, survivor, source)
    assert undo(api, body["id"]).status_code == 200
    response = undo(api, body["id"])
    assert response.status_code == 409
    assert "undone already" in error_of(response)["message"]


def test_undo_of_unknown_or_foreign_merge_is_not_found(
    api: TestClient, other_tenant: Tenant
) -> None:
    survivor, source = create_user(api), create_user(api)
    body = merged(api, survivor, source)
    assert undo(api, "999999").status_code == 404
    assert undo(api, "x").status_code == 404
    assert undo(other_tenant.client, body["id"]).status_code == 404
    assert api.get(f"/api/v1/merges/{body['id']}").json()["undone_at"] is None


def test_events_that_arrive_after_the_merge_stay_with_the_survivor(
    api: TestClient, database: Database
) -> None:
    survivor, source = create_user(api), create_user(api)
    before = [track(api, source, name="Before") for _ in range(3)]
    body = merged(api, survivor, source)
    after = [track(api, survivor, name="After") for _ in range(2)]
    undo(api, body["id"])
    assert owners(database, Event, before) == {int(source["id"])}
    assert owners(database, Event, after) == {int(survivor["id"])}


def test_anonymous_ids_go_back_to_their_user(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    survivor, source = create_user(api), create_user(api)
    add_anonymous_id(database, tenant, source, "phone-1")
    body = merged(api, survivor, source)
    assert (
        api.get("/api/v1/users/lookup", params={"anonymous_id": "phone-1"}).json()["id"]
        == (survivor["id"])
    )
    undo(api, body["id"])
    found = api.get("/api/v1/users/lookup", params={"anonymous_id": "phone-1"}).json()
    assert found["id"] == source["id"]


def test_undo_keeps_survivor_values_changed_since_and_records_it(
    api: TestClient, database: Database
) -> None:
    survivor = create_user(api)
    source = create_user(api, city="Cork", country="Ireland")
    body = merged(api, survivor, source)
    api.patch(f"/api/v1/users/{survivor['id']}", json={"city": "Galway"})
    response = undo(api, body["id"])
    assert response.status_code == 200
    after = fetch(api, survivor)
    assert (after["city"], after["country"]) == ("Galway", None)
    assert fetch(api, source)["city"] == "Cork"
    kept = [r for r in history(database, survivor) if r.source_ref == f"unmerge:{body['id']}:kept"]
    assert [(r.attribute, r.old_value, r.new_value) for r in kept] == [("city", "Galway", "Galway")]


def test_counters_lose_only_what_the_source_brought(api: TestClient, database: Database) -> None:
    survivor, source = create_user(api), create_user(api)
    set_columns(database, survivor, page_views=10)
    set_columns(database, source, page_views=4)
    body = merged(api, survivor, source)
    set_columns(database, survivor, page_views=20)  # six more page views since the merge
    undo(api, body["id"])
    assert fetch(api, survivor)["page_views"] == 16
    assert fetch(api, source)["page_views"] == 4


def test_undo_when_the_survivor_was_merged_elsewhere_is_a_conflict(api: TestClient) -> None:
    first, second, third = create_user(api), create_user(api), create_user(api)
    inner = merged(api, second, first)
    outer = merged(api, third, second)
    response = undo(api, inner["id"])
    assert response.status_code == 409
    message = error_of(response)["message"]
    assert f"merged into user {third['id']} (merge {outer['id']})" in message
    assert undo(api, outer["id"]).status_code == 200
    assert undo(api, inner["id"]).status_code == 200
    assert {fetch(api, u)["id"] for u in (first, second, third)} == {
        first["id"],
        second["id"],
        third["id"],
    }


def test_independent_merges_undo_in_any_order(api: TestClient, database: Database) -> None:
    survivor = create_user(api)
    a = create_user(api, user_id=..., email=..., city="Cork")
    b = create_user(api, user_id=..., email=..., country="Ireland")
    events_a, events_b = track(api, a), track(api, b)
    tag(api, a, "from-a")
    tag(api, b, "from-b")
    first, second = merged(api, survivor, a), merged(api, survivor, b)
    assert undo(api, first["id"]).status_code == 200
    after = fetch(api, survivor)
    assert (after["city"], after["country"]) == (None, "Ireland")
    assert [t["name"] for t in after["tags"]["tags"]] == ["from-b"]
    assert owners(database, Event, [events_a]) == {int(a["id"])}
    assert owners(database, Event, [events_b]) == {int(survivor["id"])}
    assert undo(api, second["id"]).status_code == 200
    assert fetch(api, b)["country"] == "Ireland"


def test_a_user_id_taken_since_stays_with_its_new_holder(api: TestClient) -> None:
    survivor = create_user(api, user_id=..., email=...)
    source = create_user(api, user_id="moving")
    body = merged(api, survivor, source)
    api.patch(f"/api/v1/users/{survivor['id']}", json={"user_id": "renamed"})
    newcomer = create_user(api, user_id="moving")
    assert undo(api, body["id"]).status_code == 200
    assert fetch(api, source)["user_id"] is None
    assert fetch(api, newcomer)["user_id"] == "moving"
    assert fetch(api, survivor)["user_id"] == "renamed"


def test_links_deleted_since_the_merge_are_not_restored(api: TestClient) -> None:
    survivor, source = create_user(api), create_user(api)
    vip = tag(api, survivor, "vip")
    tag(api, source, "vip")
    body = merged(api, survivor, source)
    assert api.delete(f"/api/v1/tags/{vip}").status_code == 200
    assert undo(api, body["id"]).status_code == 200
    assert fetch(api, source)["tags"]["tags"] == []


def test_undo_is_recorded_on_the_merge(api: TestClient, database: Database) -> None:
    survivor, source = create_user(api), create_user(api)
    body = merged(api, survivor, source)
    undone = undo(api, body["id"]).json()
    assert api.get(f"/api/v1/merges/{body['id']}").json() == undone
    with database.transaction() as session:
        row = session.scalar(select(Merge).where(Merge.id == int(body["id"])))
        assert row is not None and row.undone_at is not None
