"""Rows the processor's batch writes in bulk (identities, attribute history, ids it allocates):
the same outcome as writing them one message at a time, also around a message that fails."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.db import Database
from audience.ingest.models import FailedMessage
from audience.users.models import AttributeChange, Identity, User
from tests.conftest import Tenant
from tests.processing.helpers import deliver, events_of, message, user_by


def rows(database: Database, query: Any) -> list[Any]:
    with database.transaction(write=False) as session:
        return list(session.execute(query).all())


def test_a_failed_group_takes_back_its_new_person_and_device_but_not_earlier_ones(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("track", anonymousId="a-1", userId="u-1", event="Before"),
        # A new person and a new device, then a company that can't be stored: all taken back.
        message("group", anonymousId="a-2", userId="u-2", groupId=" padded "),
        # The same device again in the same batch: it is new, not the rolled-back one's.
        message("identify", anonymousId="a-2", userId="u-3", traits={"plan": "pro"}),
        message("track", anonymousId="a-1", event="After"),
    )
    identities = rows(database, select(Identity.value, User.user_id).join(User))
    assert sorted(identities) == [("a-1", "u-1"), ("a-2", "u-3")]
    assert rows(database, select(User.user_id).where(User.user_id == "u-2")) == []
    assert user_by(api, user_id="u-3")["custom_attributes"] == {"plan": "pro"}
    (failure,) = rows(database, select(FailedMessage.error_code))
    assert failure.error_code == "invalid_company"
    history = rows(database, select(AttributeChange.attribute, User.user_id).join(User))
    assert ("custom_attributes.plan", "u-3") in history
    assert all(user_id != "u-2" for _, user_id in history)


def test_anonymous_ids_written_in_bulk_follow_a_merge_in_the_same_batch(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("page", anonymousId="browser", properties={"url": "https://x.test/"}),
        message("identify", anonymousId="browser", userId="ada", traits={"email": "a@x.test"}),
        message("track", anonymousId="phone", userId="ada", event="Opened"),
    )
    ada = user_by(api, user_id="ada")
    assert ada["email"] == "a@x.test"
    identities = rows(database, select(Identity.value, Identity.user_id))
    assert sorted(identities) == [("browser", int(ada["id"])), ("phone", int(ada["id"]))]


def test_ids_of_new_users_increase_across_batches(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    for n in range(3):
        deliver(app, database, tenant, message("identify", userId=f"u-{n}"))
    deliver(app, database, tenant, *[message("identify", userId=f"v-{n}") for n in range(5)])
    ids = [id for (id,) in rows(database, select(User.id).order_by(User.user_id))]
    assert len(set(ids)) == 8
    u_ids, v_ids = ids[:3], ids[3:]
    assert u_ids == sorted(u_ids) and v_ids == sorted(v_ids) and max(u_ids) < min(v_ids)


def members_of(api: TestClient, user_id: str) -> list[str]:
    companies = user_by(api, user_id=user_id)["companies"]["companies"]
    return sorted(company["company_id"] for company in companies)


def company(api: TestClient, company_id: str) -> dict[str, Any]:
    response = api.get("/api/v1/companies/lookup", params={"company_id": company_id})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_company_joins_of_one_batch_apply_in_message_order(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("group", userId="u-1", groupId="acme", traits={"name": "Acme", "tier": "gold"}),
        message("group", userId="u-2", groupId="acme", traits={"name": "Acme Inc"}),
        message("identify", userId="u-3", traits={"company": {"id": "acme", "seats": 5}}),
        message(
            "track", userId="u-4", event="Seen", context={"traits": {"company": {"id": "beta"}}}
        ),
    )
    acme = company(api, "acme")
    assert acme["name"] == "Acme Inc"
    assert acme["custom_attributes"] == {"tier": "gold", "seats": 5}
    assert [members_of(api, f"u-{n}") for n in (1, 2, 3, 4)] == [["acme"]] * 3 + [["beta"]]


def test_a_company_attribute_its_definition_refuses_warns_on_its_own_message(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    defined = api.post(
        "/api/v1/data_attributes", json={"name": "seats", "type": "number", "model": "company"}
    )
    assert defined.status_code == 200, defined.text
    track = message(
        "track",
        userId="u-1",
        event="Seen",
        context={"traits": {"company": {"id": "acme", "seats": "many", "tier": "gold"}}},
    )
    group = message("group", userId="u-2", groupId="acme", traits={"seats": 3})
    deliver(app, database, tenant, track, group)
    assert company(api, "acme")["custom_attributes"] == {"tier": "gold", "seats": 3}
    assert members_of(api, "u-1") == members_of(api, "u-2") == ["acme"]
    status = api.get(f"/api/v1/messages/{track['messageId']}").json()
    assert status["status"] == "processed"
    assert [(w["code"], w["field"]) for w in status["warnings"]] == [
        ("invalid_trait", "custom_attributes.seats")
    ]
    assert api.get(f"/api/v1/messages/{group['messageId']}").json()["warnings"] == []


def test_a_company_joined_before_a_merge_in_the_same_batch_goes_with_the_user(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", userId="ada", anonymousId="laptop"))
    deliver(
        app,
        database,
        tenant,
        message("group", anonymousId="phone", groupId="acme"),
        # The phone's visitor is merged into ada (R-ID-4): its company goes with it.
        message("identify", anonymousId="phone", userId="ada"),
    )
    assert members_of(api, "ada") == ["acme"]
    merged = rows(database, select(User.id).where(User.merged_into_id.is_not(None)))
    assert len(merged) == 1


def test_a_lookup_by_email_finds_a_person_created_earlier_in_the_same_batch(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("identify", userId="u-1", traits={"email": "ada@x.test"}),
        message(
            "track",
            anonymousId="kiosk",
            event="Checked in",
            properties={"email": "ADA@x.test"},
            integrations={"audience": {"lookup": "email"}},
        ),
    )
    ada = user_by(api, user_id="u-1")
    assert [event["name"] for event in events_of(api, ada)] == ["Checked in"]
    assert rows(database, select(FailedMessage.message_id)) == []


def test_new_people_of_a_batch_get_their_tags_and_values_in_one_batch(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("identify", userId="u-1", traits={"tags": ["vip"], "plan": "pro"}),
        message("page", userId="u-1", properties={"url": "https://x.test/a"}),
        message("identify", userId="u-2", traits={"tags": "trial, beta", "email": "b@x.test"}),
        message("track", userId="u-1", event="Paid"),
    )
    first, second = user_by(api, user_id="u-1"), user_by(api, user_id="u-2")
    assert [tag["name"] for tag in first["tags"]["tags"]] == ["vip"]
    assert sorted(tag["name"] for tag in second["tags"]["tags"]) == ["beta", "trial"]
    assert first["page_views"] == 1 and first["custom_attributes"] == {"plan": "pro"}
    assert second["email"] == "b@x.test" and second["status"] == "user"
