"""Merging users through the REST API (R-ID-4, R-ID-5, R-ID-7): what moves, what wins, errors.

The helpers at the top are shared by the other test_merge*.py files.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import inspect, select, update

from audience.companies.models import Membership
from audience.db import Database
from audience.environments.models import Environment
from audience.events.models import Event
from audience.lists.models import ListMember
from audience.tags.models import UserTag
from audience.users.models import AttributeChange, Identity, Merge, User
from tests.conftest import Tenant
from tests.factories import create_company, create_user, unique

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error.list", body
    return dict(body["errors"][0])


def merge(api: TestClient, into: dict[str, Any], source: dict[str, Any]) -> Any:
    return api.post(f"/api/v1/users/{into['id']}/merge", json={"from": source["id"]})


def merged(api: TestClient, into: dict[str, Any], source: dict[str, Any]) -> dict[str, Any]:
    response = merge(api, into, source)
    assert response.status_code == 200, response.text
    return dict(response.json())


def undo(api: TestClient, merge_id: str) -> Any:
    return api.post(f"/api/v1/merges/{merge_id}/undo")


def fetch(api: TestClient, user: dict[str, Any]) -> dict[str, Any]:
    response = api.get(f"/api/v1/users/{user['id']}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def track(api: TestClient, user: dict[str, Any], **fields: Any) -> str:
    response = api.post(f"/api/v1/users/{user['id']}/events", json={"name": "Viewed", **fields})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def tag(api: TestClient, user: dict[str, Any], name: str) -> str:
    response = api.post(f"/api/v1/users/{user['id']}/tags", json={"name": name})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def create_list(api: TestClient) -> str:
    response = api.post("/api/v1/lists", json={"name": unique("list")})
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def add_to_list(api: TestClient, list_id: str, *users: dict[str, Any]) -> None:
    refs = [{"id": user["id"]} for user in users]
    response = api.post(f"/api/v1/lists/{list_id}/users", json={"users": refs})
    assert response.status_code == 200, response.text


def join(api: TestClient, user: dict[str, Any], company: dict[str, Any]) -> None:
    body = {"company_id": company["company_id"]}
    response = api.post(f"/api/v1/users/{user['id']}/companies", json=body)
    assert response.status_code == 200, response.text


def add_anonymous_id(database: Database, tenant: Tenant, user: dict[str, Any], value: str) -> int:
    with database.transaction() as session:
        identity = Identity(
            environment_id=tenant.id, user_id=int(user["id"]), kind="anonymous_id", value=value
        )
        session.add(identity)
        session.flush()
        return identity.id


def set_columns(database: Database, user: dict[str, Any], **values: Any) -> None:
    """Write system columns no API writes (created_at, session_count, …) straight to the row."""
    with database.transaction() as session:
        session.execute(update(User).where(User.id == int(user["id"])).values(**values))


def at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def user_rows(database: Database, ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    """Every column of the users, for exact before/after comparisons."""
    columns = [column.key for column in inspect(User).columns]
    with database.transaction() as session:
        users = session.scalars(select(User).where(User.id.in_(list(ids))))
        return {user.id: {name: getattr(user, name) for name in columns} for user in users}


def linked_rows(database: Database, ids: Iterable[int]) -> dict[str, set[tuple[Any, ...]]]:
    """Who owns which events, identities, tags, lists and companies (with link timestamps)."""
    wanted = list(ids)
    with database.transaction() as session:
        return {
            "events": set(
                session.execute(select(Event.id, Event.user_id).where(Event.user_id.in_(wanted)))
            ),
            "identities": set(
                session.execute(
                    select(Identity.id, Identity.user_id, Identity.value).where(
                        Identity.user_id.in_(wanted)
                    )
                )
            ),
            "tags": set(
                session.execute(
                    select(UserTag.tag_id, UserTag.user_id, UserTag.tagged_at).where(
                        UserTag.user_id.in_(wanted)
                    )
                )
            ),
            "lists": set(
                session.execute(
                    select(ListMember.list_id, ListMember.user_id, ListMember.added_at).where(
                        ListMember.user_id.in_(wanted)
                    )
                )
            ),
            "companies": set(
                session.execute(
                    select(
                        Membership.company_id, Membership.user_id, Membership.member_since
                    ).where(Membership.user_id.in_(wanted))
                )
            ),
        }


def owners(database: Database, model: Any, ids: Iterable[str | int]) -> set[int]:
    with database.transaction() as session:
        rows = session.scalars(select(model.user_id).where(model.id.in_([int(i) for i in ids])))
        return set(rows)


def history(database: Database, user: dict[str, Any]) -> list[AttributeChange]:
    with database.transaction() as session:
        query = select(AttributeChange).where(AttributeChange.user_id == int(user["id"]))
        return list(session.scalars(query.order_by(AttributeChange.id)))


def set_membership_mode(database: Database, tenant: Tenant, mode: str) -> None:
    with database.transaction() as session:
        environment = session.get(Environment, tenant.id)
        assert environment is not None
        environment.settings = {**environment.settings, "company_membership": mode}


# --- what a merge returns and moves -------------------------------------------------------------


def test_merge_returns_the_merge_object(api: TestClient, tenant: Tenant) -> None:
    survivor, source = create_user(api), create_user(api)
    track(api, source)
    body = merged(api, survivor, source)
    assert body["type"] == "merge" and body["id"].isdigit()
    assert (body["from_user_id"], body["into_user_id"]) == (source["id"], survivor["id"])
    assert body["reason"] == "api"
    assert body["actor"].startswith("api_key:")
    assert isinstance(body["created_at"], int) and body["undone_at"] is None
    assert body["moved_counts"] == {
        "events": 1,
        "identities": 0,
        "tags": 0,
        "lists": 0,
        "companies": 0,
    }
    assert api.get(f"/api/v1/merges/{body['id']}").json() == body


def test_merge_accepts_the_source_id_as_a_number(api: TestClient) -> None:
    survivor, source = create_user(api), create_user(api)
    response = api.post(f"/api/v1/users/{survivor['id']}/merge", json={"from": int(source["id"])})
    assert response.status_code == 200, response.text


def test_merge_moves_every_event_to_the_survivor(api: TestClient, database: Database) -> None:
    survivor, source = create_user(api), create_user(api)
    own = track(api, survivor, name="Own")
    moved = [track(api, source, name=f"Event {n}") for n in range(3)]
    body = merged(api, survivor, source)
    assert body["moved_counts"]["events"] == 3
    assert owners(database, Event, [own, *moved]) == {int(survivor["id"])}
    listing = api.get(f"/api/v1/users/{survivor['id']}/events").json()
    assert listing["total_count"] == 4


def test_merge_moves_tags_without_duplicating_shared_ones(
    api: TestClient, database: Database
) -> None:
    survivor, source = create_user(api), create_user(api)
    tag(api, survivor, "vip")
    tag(api, source, "vip")
    tag(api, source, "beta")
    body = merged(api, survivor, source)
    assert body["moved_counts"]["tags"] == 1
    names = [t["name"] for t in fetch(api, survivor)["tags"]["tags"]]
    assert sorted(names) == ["beta", "vip"]
    rows = linked_rows(database, [int(source["id"])])
    assert rows["tags"] == set()


def test_merge_moves_list_memberships(api: TestClient, database: Database) -> None:
    survivor, source = create_user(api), create_user(api)
    shared, only_source = create_list(api), create_list(api)
    add_to_list(api, shared, survivor, source)
    add_to_list(api, only_source, source)
    body = merged(api, survivor, source)
    assert body["moved_counts"]["lists"] == 1
    on_lists = api.get(f"/api/v1/users/{survivor['id']}/lists").json()
    assert {item["id"] for item in on_lists["lists"]} == {shared, only_source}
    assert linked_rows(database, [int(source["id"])])["lists"] == set()


def test_merge_moves_company_memberships(api: TestClient) -> None:
    survivor, source = create_user(api), create_user(api)
    acme, initech = create_company(api), create_company(api)
    join(api, survivor, acme)
    join(api, source, acme)
    join(api, source, initech)
    body = merged(api, survivor, source)
    assert body["moved_counts"]["companies"] == 1
    companies = fetch(api, survivor)["companies"]["companies"]
    assert {c["company_id"] for c in companies} == {acme["company_id"], initech["company_id"]}
    counts = api.get(f"/api/v1/companies/{acme['id']}").json()["user_count"]
    assert counts == 1


def test_single_company_mode_keeps_the_survivors_company(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    set_membership_mode(database, tenant, "single")
    survivor, source = create_user(api), create_user(api)
    acme, initech = create_company(api), create_company(api)
    join(api, survivor, acme)
    join(api, source, initech)
    body = merged(api, survivor, source)
    assert body["moved_counts"]["companies"] == 0
    companies = fetch(api, survivor)["companies"]["companies"]
    assert [c["company_id"] for c in companies] == [acme["company_id"]]


def test_single_company_mode_moves_the_company_to_a_survivor_without_one(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    set_membership_mode(database, tenant, "single")
    survivor, source = create_user(api), create_user(api)
    acme = create_company(api)
    join(api, source, acme)
    assert merged(api, survivor, source)["moved_counts"]["companies"] == 1
    companies = fetch(api, survivor)["companies"]["companies"]
    assert [c["company_id"] for c in companies] == [acme["company_id"]]


def test_merge_moves_anonymous_ids(api: TestClient, database: Database, tenant: Tenant) -> None:
    survivor, source = create_user(api), create_user(api, user_id=..., email=...)
    add_anonymous_id(database, tenant, survivor, "device-a")
    add_anonymous_id(database, tenant, source, "device-b")
    add_anonymous_id(database, tenant, source, "device-c")
    body = merged(api, survivor, source)
    assert body["moved_counts"]["identities"] == 2
    for device in ("device-a", "device-b", "device-c"):
        found = api.get("/api/v1/users/lookup", params={"anonymous_id": device})
        assert (found.status_code, found.json()["id"]) == (200, survivor["id"])


# --- values ---------------------------------------------------------------------------------------


def test_survivor_values_win_conflicts(api: TestClient) -> None:
    survivor = create_user(api, city="Dublin", gender="female", custom_attributes={"plan": "pro"})
    source = create_user(api, city="Cork", gender="male", custom_attributes={"plan": "free"})
    merged(api, survivor, source)
    after = fetch(api, survivor)
    assert (after["city"], after["gender"]) == ("Dublin", "female")
    assert after["custom_attributes"] == {"plan": "pro"}
    assert (after["user_id"], after["email"]) == (survivor["user_id"], survivor["email"])


def test_survivor_empty_attributes_are_filled_from_the_source(api: TestClient) -> None:
    survivor = create_user(api, first_name="Ann", custom_attributes={"plan": "pro"})
    source = create_user(
        api,
        first_name="Annie",
        last_name="Lee",
        city="Cork",
        gender="female",
        twitter_url="https://twitter.com/ann",
        unsubscribed_from_emails=True,
        custom_attributes={"plan": "free", "seats": 3},
    )
    merged(api, survivor, source)
    after = fetch(api, survivor)
    assert (after["first_name"], after["last_name"]) == ("Ann", "Lee")
    assert after["name"] == "Ann Lee"  # derived from first and last name, so derived again
    assert (after["city"], after["gender"]) == ("Cork", "female")
    assert after["twitter_url"] == "https://twitter.com/ann"
    assert after["unsubscribed_from_emails"] is True
    assert after["custom_attributes"] == {"plan": "pro", "seats": 3}


def test_filled_values_keep_the_time_they_were_written(api: TestClient, database: Database) -> None:
    # R-ATTR-5 compares incoming data with these times: the merge must not make a value younger.
    source = create_user(api, city="Cork")
    survivor = create_user(api)
    ids = [int(survivor["id"]), int(source["id"])]
    written = user_rows(database, ids)[int(source["id"])]["attribute_times"]["city"]
    body = merged(api, survivor, source)
    times = user_rows(database, ids)[int(survivor["id"])]["attribute_times"]
    assert times["city"] == written
    assert undo(api, body["id"]).status_code == 200
    assert "city" not in user_rows(database, ids)[int(survivor["id"])]["attribute_times"]


def test_identifiers_move_to_a_survivor_that_lacks_them(api: TestClient) -> None:
    survivor = create_user(api, user_id=..., email=..., first_name="Visitor")
    source = create_user(api, user_id="cust-9", email="nine@example.com", phone="+353 1 234 5678")
    assert survivor["kind"] == "anonymous"
    merged(api, survivor, source)
    after = fetch(api, survivor)
    assert (after["user_id"], after["email"]) == ("cust-9", "nine@example.com")
    assert (after["phone"], after["phone_original"]) == ("+35312345678", "+353 1 234 5678")
    assert (after["kind"], after["status"]) == ("identified", "user")
    found = api.get("/api/v1/users/lookup", params={"user_id": "cust-9"}).json()
    assert found["id"] == survivor["id"]


def test_two_identified_users_can_be_merged_explicitly(api: TestClient) -> None:
    survivor, source = create_user(api, user_id="keep"), create_user(api, user_id="other")
    merged(api, survivor, source)
    assert fetch(api, survivor)["user_id"] == "keep"
    assert api.get("/api/v1/users/lookup", params={"user_id": "other"}).status_code == 404


def test_merge_keeps_the_earliest_and_latest_times(api: TestClient, database: Database) -> None:
    survivor, source = create_user(api), create_user(api)
    set_columns(
        database,
        survivor,
        created_at=at(T0),
        first_seen_at=at(T0 + 10),
        last_seen_at=at(T0 + 100),
        last_request_at=None,
    )
    set_columns(
        database,
        source,
        created_at=at(T0 - 500),
        first_seen_at=at(T0 - 400),
        last_seen_at=at(T0 + 50),
        last_request_at=at(T0 + 70),
    )
    merged(api, survivor, source)
    after = fetch(api, survivor)
    assert (after["created_at"], after["first_seen_at"]) == (T0 - 500, T0 - 400)
    assert (after["last_seen_at"], after["last_request_at"]) == (T0 + 100, T0 + 70)


def test_merge_adds_up_sessions_and_page_views(api: TestClient, database: Database) -> None:
    survivor, source = create_user(api), create_user(api)
    set_columns(database, survivor, session_count=3, page_views=10)
    set_columns(database, source, session_count=2, page_views=5)
    merged(api, survivor, source)
    after = fetch(api, survivor)
    assert (after["session_count"], after["page_views"]) == (5, 15)


def test_merge_writes_every_change_to_the_survivors_history(
    api: TestClient, database: Database
) -> None:
    survivor = create_user(api, user_id=..., email=...)
    source = create_user(api, user_id="h-1", city="Oslo", custom_attributes={"seats": 2})
    set_columns(database, survivor, session_count=1)
    set_columns(database, source, session_count=4)
    body = merged(api, survivor, source)
    rows = [row for row in history(database, survivor) if row.source == "merge"]
    changed = {row.attribute: (row.old_value, row.new_value) for row in rows}
    assert {row.source_ref for row in rows} == {f"merge:{body['id']}"}
    assert changed["user_id"] == (None, "h-1")
    assert changed["city"] == (None, "Oslo")
    assert changed["custom_attributes.seats"] == (None, 2)
    assert changed["session_count"] == (1, 5)
    assert changed["status"] == ("visitor", "user")
    listed = api.get(f"/api/v1/users/{survivor['id']}/history").json()["changes"]
    assert {c["attribute"] for c in listed if c["source"] == "merge"} == set(changed)


# --- the merged-away user -------------------------------------------------------------------------


def test_merged_user_is_hidden_everywhere(api: TestClient, database: Database) -> None:
    survivor = create_user(api)
    source = create_user(api, user_id="gone-1", email="gone@example.com")
    merged(api, survivor, source)
    assert api.get(f"/api/v1/users/{source['id']}").status_code == 404
    listed = {user["id"] for user in api.get("/api/v1/users").json()["users"]}
    assert listed == {survivor["id"]}
    for key, value in (
        ("user_id", "gone-1"),
        ("email", "gone@example.com"),
        ("user_key", source["user_key"]),
    ):
        assert api.get("/api/v1/users/lookup", params={key: value}).status_code == 404
    assert api.get("/api/v1/users", params={"q": "gone"}).json()["total_count"] == 0
    row = user_rows(database, [int(source["id"])])[int(source["id"])]
    assert row["merged_into_id"] == int(survivor["id"])


# --- refusals -------------------------------------------------------------------------------------


def test_merging_a_user_into_itself_is_refused(api: TestClient) -> None:
    user = create_user(api)
    response = merge(api, user, user)
    assert response.status_code == 422
    assert error_of(response)["field"] == "from"


def test_merging_unknown_users_is_not_found(api: TestClient) -> None:
    user = create_user(api)
    response = merge(api, user, {"id": "999999"})
    assert (response.status_code, error_of(response)["field"]) == (404, "from")
    assert merge(api, {"id": "999999"}, user).status_code == 404
    assert merge(api, {"id": "abc"}, user).status_code == 404


def test_users_of_another_environment_are_not_found(
    api: TestClient, other_tenant: Tenant, database: Database
) -> None:
    ours, theirs = create_user(api), create_user(other_tenant.client)
    assert merge(api, ours, theirs).status_code == 404
    assert merge(api, theirs, ours).status_code == 404
    assert merge(other_tenant.client, theirs, ours).status_code == 404
    rows = user_rows(database, [int(ours["id"]), int(theirs["id"])])
    assert all(row["merged_into_id"] is None for row in rows.values())


def test_merging_into_a_merged_user_is_a_conflict(api: TestClient) -> None:
    first, second, third = create_user(api), create_user(api), create_user(api)
    merged(api, first, second)
    response = merge(api, second, third)
    assert response.status_code == 409
    assert f"merged into user {first['id']}" in error_of(response)["message"]
    again = merge(api, third, second)
    assert (again.status_code, error_of(again)["field"]) == (409, "from")


def test_bad_merge_bodies_are_422_naming_the_field(api: TestClient) -> None:
    user = create_user(api)
    url = f"/api/v1/users/{user['id']}/merge"
    for body, field in (
        ({}, "from"),
        ({"from": "abc"}, "from"),
        ({"from": ""}, "from"),
        ({"from": None}, "from"),
        ({"from": "1" * 19}, "from"),
        ({"from": user["id"], "reason": "x"}, "reason"),
    ):
        response = api.post(url, json=body)
        assert response.status_code == 422, (body, response.text)
        assert error_of(response)["field"] == field


def test_a_failed_merge_changes_nothing(api: TestClient, database: Database) -> None:
    survivor, source = create_user(api), create_user(api)
    merged(api, survivor, source)
    other = create_user(api)
    assert merge(api, source, other).status_code == 409
    with database.transaction() as session:
        assert (
            session.scalar(select(Merge.id).where(Merge.into_user_id == int(source["id"]))) is None
        )


# --- reading the log ------------------------------------------------------------------------------


def test_get_unknown_or_foreign_merge_is_not_found(api: TestClient, other_tenant: Tenant) -> None:
    survivor, source = create_user(api), create_user(api)
    body = merged(api, survivor, source)
    assert api.get("/api/v1/merges/999999").status_code == 404
    assert api.get("/api/v1/merges/nope").status_code == 404
    assert other_tenant.client.get(f"/api/v1/merges/{body['id']}").status_code == 404


def test_user_merges_lists_merges_into_and_from_the_user_newest_first(api: TestClient) -> None:
    survivor, a, b, other = create_user(api), create_user(api), create_user(api), create_user(api)
    first = merged(api, survivor, a)
    second = merged(api, survivor, b)
    merged(api, other, create_user(api))
    listing = api.get(f"/api/v1/users/{survivor['id']}/merges").json()
    assert listing["type"] == "merge.list" and listing["total_count"] == 2
    assert [m["id"] for m in listing["merges"]] == [second["id"], first["id"]]
    # A merged-away user's merges stay readable: that is how an old id finds its survivor.
    of_source = api.get(f"/api/v1/users/{a['id']}/merges").json()
    assert [m["into_user_id"] for m in of_source["merges"]] == [survivor["id"]]
    paged = api.get(f"/api/v1/users/{survivor['id']}/merges", params={"per_page": 1}).json()
    assert [m["id"] for m in paged["merges"]] == [second["id"]]
    assert paged["pages"]["next"] is not None


def test_user_merges_of_unknown_or_foreign_user_is_not_found(
    api: TestClient, other_tenant: Tenant
) -> None:
    theirs = create_user(other_tenant.client)
    assert api.get("/api/v1/users/999999/merges").status_code == 404
    assert api.get(f"/api/v1/users/{theirs['id']}/merges").status_code == 404
