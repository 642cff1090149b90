"""Live segment membership: after ingestion and REST writes, entered/exited times, webhooks on
enter and exit, time windows re-evaluated on a fixed clock, merges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.db import Database
from audience.ingest.processor import Processor
from audience.segments import membership
from audience.segments.models import SegmentMembership
from tests.conftest import Tenant
from tests.processing.helpers import deliver, message, user_by
from tests.segments.helpers import define, track, user
from tests.segments.test_saved import ACME, count_of, create_segment, member_ids
from tests.webhooks.helpers import create_webhook, deliveries

SEGMENT_TOPICS = ["segment.entered", "segment.exited"]


def stays(database: Database, segment: dict[str, Any]) -> list[SegmentMembership]:
    """Every stay of every user in the segment, oldest first."""
    with database.transaction() as session:
        query = (
            select(SegmentMembership)
            .where(SegmentMembership.segment_id == int(segment["id"]))
            .order_by(SegmentMembership.id)
        )
        return list(session.scalars(query))


def segment_events(database: Database) -> list[tuple[str, str, str]]:
    """(topic, segment id, user id) of the queued segment webhooks."""
    return [
        (row.topic, row.payload["segment"]["id"], row.payload["user"]["id"])
        for row in deliveries(database)
        if row.topic.startswith("segment.")
    ]


def test_ingested_users_enter_and_leave(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    segment = create_segment(tenant.client)
    deliver(app, database, tenant, message("identify", userId="u1", traits={"email": "a@acme.com"}))
    ann = user_by(tenant.client, user_id="u1")
    assert member_ids(tenant.client, segment) == {ann["id"]}
    assert ann["segments"]["segments"][0]["name"] == "Acme"
    deliver(app, database, tenant, message("identify", userId="u1", traits={"email": "a@b.com"}))
    assert count_of(tenant.client, segment) == 0
    [stay] = stays(database, segment)
    assert stay.exited_at is not None and stay.exited_at >= stay.entered_at


def test_events_ingested_move_users_into_behaviour_segments(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    segment = create_segment(tenant.client, "Buyers", {"event": "Purchased", "count": {"gte": 2}})
    deliver(app, database, tenant, message("track", userId="u1", event="Purchased"))
    assert count_of(tenant.client, segment) == 0
    deliver(app, database, tenant, message("track", userId="u1", event="Purchased"))
    assert member_ids(tenant.client, segment) == {user_by(tenant.client, user_id="u1")["id"]}


def test_rest_writes_update_membership(api: TestClient, database: Database) -> None:
    ann = user(api, email="ann@other.com")
    acme = create_segment(api)
    vip = create_segment(api, "VIP", {"field": "tags", "op": "eq", "value": "vip"})
    listed = create_segment(api, "Listed", {"field": "lists", "op": "exists"})
    buyers = create_segment(api, "Buyers", {"event": "Purchased"})
    response = api.patch(f"/api/v1/users/{ann}", json={"email": "ann@acme.com"})
    assert [s["name"] for s in response.json()["segments"]["segments"]] == ["Acme"]
    assert api.post(f"/api/v1/users/{ann}/tags", json={"name": "vip"}).status_code == 200
    assert member_ids(api, vip) == {ann}
    tag_id = api.get("/api/v1/tags").json()["tags"][0]["id"]
    assert api.delete(f"/api/v1/users/{ann}/tags/{tag_id}").status_code == 200
    assert count_of(api, vip) == 0
    list_id = api.post("/api/v1/lists", json={"name": "L"}).json()["id"]
    assert api.post(f"/api/v1/users/{ann}/lists", json={"id": list_id}).status_code == 200
    assert member_ids(api, listed) == {ann}
    track(api, ann, "Purchased")
    assert member_ids(api, buyers) == {ann}
    created = user(api, email="new@acme.com")
    assert member_ids(api, acme) == {ann, created}


def test_leaving_and_coming_back_keeps_each_stay(api: TestClient, database: Database) -> None:
    ann = user(api, email="ann@acme.com")
    segment = create_segment(api)
    for email in ("ann@other.com", "ann@acme.com"):
        assert api.patch(f"/api/v1/users/{ann}", json={"email": email}).status_code == 200
    first, second = stays(database, segment)
    assert first.exited_at is not None and second.exited_at is None
    assert second.entered_at >= first.exited_at
    assert count_of(api, segment) == 1


def test_webhooks_fire_on_enter_and_exit(api: TestClient, database: Database) -> None:
    create_webhook(api, topics=SEGMENT_TOPICS)
    ann = user(api, email="ann@other.com")
    segment = create_segment(api)
    assert segment_events(database) == []  # computing a new segment is not users moving
    api.patch(f"/api/v1/users/{ann}", json={"email": "ann@acme.com"})
    api.patch(f"/api/v1/users/{ann}", json={"name": "Ann"})  # still a member: nothing
    api.patch(f"/api/v1/users/{ann}", json={"email": "ann@other.com"})
    assert segment_events(database) == [
        ("segment.entered", segment["id"], ann),
        ("segment.exited", segment["id"], ann),
    ]
    payload = deliveries(database)[0].payload
    assert payload["segment"] == {"id": segment["id"], "name": "Acme"}
    assert payload["user"]["email"] == "ann@acme.com"


def test_ingestion_queues_segment_webhooks(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    create_webhook(tenant.client, topics=SEGMENT_TOPICS)
    segment = create_segment(tenant.client)
    deliver(app, database, tenant, message("identify", userId="u9", traits={"email": "z@acme.com"}))
    ann = user_by(tenant.client, user_id="u9")
    assert segment_events(database) == [("segment.entered", segment["id"], ann["id"])]


def test_time_windows_are_re_evaluated_on_the_clock(api: TestClient, database: Database) -> None:
    create_webhook(api, topics=SEGMENT_TOPICS)
    now = datetime.now(UTC)
    ann = user(api, signed_up_at=int((now - timedelta(days=6)).timestamp()))
    recent = {"field": "signed_up_at", "op": "within_last", "value": {"days": 7}}
    segment = create_segment(api, "Recent", recent)
    old_hat = create_segment(
        api, "Old", {"not": {"field": "segments", "op": "eq", "value": "Recent"}}
    )
    assert member_ids(api, segment) == {ann}
    with database.transaction() as session:
        assert membership.refresh_segments(session, now=now + timedelta(hours=1)) == 0
    assert Processor(database).refresh_segments(now=now + timedelta(days=2)) == 2
    assert count_of(api, segment) == 0
    assert member_ids(api, old_hat) == {ann}  # a segment of the moving segment moves with it
    assert segment_events(database) == [
        ("segment.exited", segment["id"], ann),
        ("segment.entered", old_hat["id"], ann),
    ]


def test_merged_away_users_leave_their_segments(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    segment = create_segment(tenant.client, "Everyone", {"and": []})
    deliver(app, database, tenant, message("identify", anonymousId="anon-1"))
    deliver(app, database, tenant, message("identify", userId="u1"))
    assert count_of(tenant.client, segment) == 2
    deliver(app, database, tenant, message("alias", previousId="anon-1", userId="u1"))
    assert member_ids(tenant.client, segment) == {user_by(tenant.client, user_id="u1")["id"]}


def test_membership_is_per_environment(
    app: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    mine = create_segment(tenant.client)
    theirs = create_segment(other_tenant.client, "Acme", ACME)
    deliver(
        app,
        database,
        other_tenant,
        message("identify", userId="u1", traits={"email": "a@acme.com"}),
    )
    assert count_of(tenant.client, mine) == 0
    assert count_of(other_tenant.client, theirs) == 1


def test_refresh_users_on_a_fixed_clock(
    api: TestClient, database: Database, tenant: Tenant
) -> None:
    ann = user(api, email="ann@acme.com")
    segment = create_segment(api)
    at = datetime(2030, 1, 1, tzinfo=UTC)
    api.patch(f"/api/v1/users/{ann}", json={"email": "ann@other.com"})
    with database.transaction() as session:
        # Nothing changed since: calling it again is a no-op.
        assert (
            membership.refresh_users(session, environment_id=tenant.id, user_ids=[int(ann)], now=at)
            == 0
        )
    [stay] = stays(database, segment)
    assert stay.exited_at is not None and stay.exited_at < at


def test_renaming_or_deleting_a_tag_or_list_moves_its_users(api: TestClient) -> None:
    ann = user(api, email="ann@acme.com")
    api.post(f"/api/v1/users/{ann}/tags", json={"name": "vip"})
    list_id = api.post("/api/v1/lists", json={"name": "L"}).json()["id"]
    api.post(f"/api/v1/users/{ann}/lists", json={"id": list_id})
    vip = create_segment(api, "VIP", {"field": "tags", "op": "eq", "value": "vip"})
    listed = create_segment(api, "Listed", {"field": "lists", "op": "eq", "value": "L"})
    assert count_of(api, vip) == 1 and count_of(api, listed) == 1
    tag_id = api.get("/api/v1/tags").json()["tags"][0]["id"]
    assert api.patch(f"/api/v1/tags/{tag_id}", json={"name": "gold"}).status_code == 200
    assert api.patch(f"/api/v1/lists/{list_id}", json={"name": "M"}).status_code == 200
    assert count_of(api, vip) == 0 and count_of(api, listed) == 0
    api.patch(f"/api/v1/tags/{tag_id}", json={"name": "vip"})
    assert count_of(api, vip) == 1
    assert api.delete(f"/api/v1/tags/{tag_id}").status_code == 200
    assert count_of(api, vip) == 0


def test_company_changes_move_its_users(api: TestClient) -> None:
    ann = user(api, email="ann@acme.com")
    company = api.post("/api/v1/companies", json={"company_id": "c1", "plan": "free"}).json()
    pro = create_segment(api, "Pro", {"field": "company.plan", "op": "eq", "value": "pro"})
    response = api.post(f"/api/v1/companies/{company['id']}/users", json={"id": ann})
    assert response.status_code == 200, response.text
    assert count_of(api, pro) == 0
    api.post("/api/v1/companies", json={"company_id": "c1", "plan": "pro"})
    assert member_ids(api, pro) == {ann}
    assert api.delete(f"/api/v1/companies/{company['id']}").status_code == 200
    assert count_of(api, pro) == 0


def test_a_segment_whose_attribute_was_deleted_keeps_its_members(api: TestClient) -> None:
    define(api, "plan", "string")
    ann = user(api, custom_attributes={"plan": "pro"})
    pro = create_segment(
        api, "Pro", {"field": "custom_attributes.plan", "op": "eq", "value": "pro"}
    )
    definitions = api.get("/api/v1/data_attributes", params={"model": "user"}).json()
    [plan] = [d for d in definitions["data_attributes"] if d["name"] == "plan"]
    assert api.delete(f"/api/v1/data_attributes/{plan['id']}").status_code == 200
    response = api.patch(f"/api/v1/users/{ann}", json={"name": "Ann"})
    assert response.status_code == 200, response.text
    assert member_ids(api, pro) == {ann}
