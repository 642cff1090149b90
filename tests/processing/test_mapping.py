"""Seed 001's mapping tables and R-ING-3's effects, message kind by message kind."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audience.db import Database
from audience.environments.models import Environment
from audience.events.models import Event
from tests.conftest import Tenant
from tests.processing.helpers import deliver, events_of, message, user_by

IDENTIFY_ROWS = [
    ({"firstName": "Alex"}, "first_name", "Alex"),
    ({"firstname": "Alex"}, "first_name", "Alex"),
    ({"first_name": "Alex"}, "first_name", "Alex"),
    ({"lastName": "Keener"}, "last_name", "Keener"),
    ({"lastname": "Keener"}, "last_name", "Keener"),
    ({"last_name": "Keener"}, "last_name", "Keener"),
    ({"email": "alex@example.com"}, "email", "alex@example.com"),
    ({"phone": "+1 202 555 0146"}, "phone", "+12025550146"),
    ({"address": {"city": "New Orleans"}}, "city", "New Orleans"),
    ({"region": "Louisiana"}, "region", "Louisiana"),
    ({"country": "USA"}, "country", "USA"),
    ({"gender": "female"}, "gender", "female"),
    ({"status": "user"}, "status", "user"),
    ({"googleUrl": "https://g.co/a"}, "google_url", "https://g.co/a"),
    ({"linkedinUrl": "https://li.com/a"}, "linkedin_url", "https://li.com/a"),
    ({"twitterUrl": "https://x.com/a"}, "twitter_url", "https://x.com/a"),
    ({"facebookUrl": "https://fb.com/a"}, "facebook_url", "https://fb.com/a"),
    ({"avatar": "https://i.co/1.png"}, "avatar_url", "https://i.co/1.png"),
    ({"avatarURL": "https://i.co/2.png"}, "avatar_url", "https://i.co/2.png"),
    ({"avatar_URL": "https://i.co/3.png"}, "avatar_url", "https://i.co/3.png"),
    ({"timezone": "Europe/Dublin"}, "timezone", "Europe/Dublin"),
    ({"createdAt": "2024-01-02T03:04:05Z"}, "signed_up_at", 1704164645),
    ({"name": "Alex K"}, "name", "Alex K"),
]


@pytest.mark.parametrize(("traits", "attribute", "value"), IDENTIFY_ROWS)
@pytest.mark.parametrize("where", ["traits", "context.traits"])
def test_identify_trait_maps_to_standard_attribute(
    app: TestClient,
    database: Database,
    tenant: Tenant,
    api: TestClient,
    traits: dict[str, Any],
    attribute: str,
    value: Any,
    where: str,
) -> None:
    body = {"traits": traits} if where == "traits" else {"context": {"traits": traits}}
    deliver(app, database, tenant, message("identify", userId="u", **body))
    user = user_by(api, user_id="u")
    assert user[attribute] == value
    assert user["custom_attributes"] == {}


@pytest.mark.parametrize("trait", ["userId", "id"])
def test_identify_user_id_from_traits_and_context_traits(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient, trait: str
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("identify", anonymousId="a", context={"traits": {trait: "ctx-id"}}),
    )
    assert user_by(api, user_id="ctx-id")["id"] == user_by(api, anonymous_id="a")["id"]


def test_other_traits_become_typed_custom_attributes(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    traits = {"plan": "enterprise", "mrr": 500, "trial_ends": "2025-02-01", "is_admin": True}
    deliver(app, database, tenant, message("identify", userId="u", traits=traits))
    assert user_by(api, user_id="u")["custom_attributes"] == traits


def test_identify_merges_traits_and_null_removes(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("identify", userId="u", traits={"plan": "pro", "seats": 3, "city": "Cork"}),
    )
    deliver(
        app,
        database,
        tenant,
        message("identify", userId="u", traits={"plan": None, "city": None, "role": "x"}),
    )
    user = user_by(api, user_id="u")
    assert user["custom_attributes"] == {"seats": 3, "role": "x"}
    assert user["city"] is None


def test_bad_trait_is_skipped_and_the_rest_applied(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", userId="u", traits={"seats": 3}))
    deliver(
        app,
        database,
        tenant,
        message(
            "identify",
            userId="u",
            traits={"seats": "many", "email": "not-an-email", "plan": "pro", "nested": {"a": 1}},
        ),
    )
    user = user_by(api, user_id="u")
    assert user["custom_attributes"] == {"seats": 3, "plan": "pro"}
    assert user["email"] is None


def test_identify_tags_are_attached(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", userId="u", traits={"tags": ["vip", "b2b"]}))
    assert sorted(t["name"] for t in user_by(api, user_id="u")["tags"]["tags"]) == ["b2b", "vip"]


def test_identify_company_trait_acts_as_group(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    company = {"id": "company_456", "name": "Acme Inc", "plan": "growth", "employee_count": 50}
    deliver(app, database, tenant, message("identify", userId="u", traits={"company": company}))
    (member,) = user_by(api, user_id="u")["companies"]["companies"]
    assert (member["company_id"], member["name"]) == ("company_456", "Acme Inc")
    stored = api.get(f"/api/v1/companies/{member['id']}").json()
    assert stored["plan"] == "growth" and stored["size"] == 50


def test_group_maps_seed_traits_to_company_fields(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    traits = {
        "name": "Alex Keener",
        "phone": "1-202-555-0146",
        "size": 51,
        "zipcode": 90009,
        "address": {"street": "6649 N Blue Gum Street"},
        "city": "New Orleans",
        "region": "Louisiana",
        "country": "USA",
        "email": "hq@acme.co",
        "description": "Gum",
        "tier": "gold",
    }
    deliver(app, database, tenant, message("group", userId="u", groupId="group01", traits=traits))
    (member,) = user_by(api, user_id="u")["companies"]["companies"]
    company = api.get(f"/api/v1/companies/{member['id']}").json()
    assert company["company_id"] == "group01" and company["name"] == "Alex Keener"
    assert company["phone_numbers"] == ["1-202-555-0146"] and company["size"] == 51
    assert company["postal_code"] == "90009" and company["address"] == "6649 N Blue Gum Street"
    assert (company["city"], company["region"], company["country"]) == (
        "New Orleans",
        "Louisiana",
        "USA",
    )
    assert company["email"] == "hq@acme.co" and company["description"] == "Gum"
    assert company["custom_attributes"] == {"tier": "gold"}


def test_single_company_membership_moves_the_user(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    with database.transaction() as session:
        environment = session.get(Environment, tenant.id)
        assert environment is not None
        environment.settings = {"company_membership": "single"}
    deliver(app, database, tenant, message("group", userId="u", groupId="c1"))
    deliver(app, database, tenant, message("group", userId="u", groupId="c2"))
    companies = user_by(api, user_id="u")["companies"]["companies"]
    assert [company["company_id"] for company in companies] == ["c2"]


def test_track_maps_event_properties_and_timestamp(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message(
            "track",
            userId="u",
            event="Add to cart",
            properties={"purchased_item": "T-Shirt", "brand": "Zara"},
            originalTimestamp="2024-05-01T10:00:00Z",
        ),
    )
    (event,) = events_of(api, user_by(api, user_id="u"))
    assert event["name"] == "Add to cart" and event["kind"] == "track"
    assert event["properties"] == {"purchased_item": "T-Shirt", "brand": "Zara"}
    assert event["timestamp"] == 1714557600


def test_track_context_traits_update_the_profile(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message(
            "track", userId="u", event="E", context={"traits": {"email": "t@b.co", "plan": "pro"}}
        ),
    )
    user = user_by(api, user_id="u")
    assert user["email"] == "t@b.co" and user["custom_attributes"] == {"plan": "pro"}


def test_page_records_url_path_title_and_counts(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message(
            "page",
            anonymousId="a",
            name="Pricing",
            properties={
                "url": "https://shop.example.com/pricing?utm_source=ads&utm_medium=cpc",
                "title": "Pricing",
                "referrer": "https://google.com",
            },
            context={
                "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) "
                "AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
                "locale": "en-IE",
            },
        ),
    )
    user = user_by(api, anonymous_id="a")
    (event,) = events_of(api, user)
    assert event["kind"] == "page" and event["name"] == "Pricing"
    assert event["page_url"].startswith("https://shop.example.com/pricing")
    assert event["properties"]["path"] == "/pricing"
    assert (user["page_views"], user["session_count"]) == (1, 1)
    assert (user["utm_source"], user["utm_medium"]) == ("ads", "cpc")
    assert (user["first_utm_source"], user["referrer"]) == ("ads", "https://google.com")
    assert (user["browser"], user["os"], user["language"]) == ("Chrome", "Mac OS X", "en-IE")
    assert user["last_seen_at"] == event["timestamp"]


def test_sessions_start_after_thirty_quiet_minutes(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    times = ["2024-05-01T10:00:00Z", "2024-05-01T10:20:00Z", "2024-05-01T10:51:00Z"]
    deliver(
        app,
        database,
        tenant,
        *[message("page", anonymousId="a", name="P", originalTimestamp=t) for t in times],
    )
    user = user_by(api, anonymous_id="a")
    assert (user["session_count"], user["page_views"]) == (2, 3)


def test_first_touch_utm_is_kept_and_last_touch_follows(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("page", anonymousId="a", context={"campaign": {"source": "ads", "name": "spring"}}),
        message("page", anonymousId="a", context={"campaign": {"source": "newsletter"}}),
    )
    user = user_by(api, anonymous_id="a")
    assert (user["first_utm_source"], user["first_utm_campaign"]) == ("ads", "spring")
    assert (user["utm_source"], user["utm_campaign"]) == ("newsletter", None)


def test_screen_is_a_screen_event(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("screen", userId="u", name="Settings"))
    (event,) = events_of(api, user_by(api, user_id="u"))
    assert (event["kind"], event["name"]) == ("screen", "Settings")


def test_repeated_message_id_has_no_further_effect(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    page = message("page", anonymousId="a", name="Home")
    identify = message("identify", userId="u", traits={"visits": {"$add": 1}})
    deliver(app, database, tenant, page, page, identify)
    deliver(app, database, tenant, page, identify)
    assert user_by(api, anonymous_id="a")["page_views"] == 1
    assert user_by(api, user_id="u")["custom_attributes"] == {"visits": 1}


def test_configured_event_and_property_names_apply(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    with database.transaction() as session:
        environment = session.get(Environment, tenant.id)
        assert environment is not None
        environment.settings = {
            "event_names": {"login": "Signed In", "sign_in": "Signed In"},
            "event_properties": {"sku": "product_id"},
            "traits": {"company_size": "size_bucket"},
        }
    deliver(
        app,
        database,
        tenant,
        message("track", userId="u", event="login", properties={"sku": "A1"}),
        message("track", userId="u", event="sign_in"),
        message("identify", userId="u", traits={"company_size": "50-100"}),
    )
    user = user_by(api, user_id="u")
    events = events_of(api, user)
    assert {event["name"] for event in events} == {"Signed In"}
    assert any(event["properties"] == {"product_id": "A1"} for event in events)
    assert user["custom_attributes"] == {"size_bucket": "50-100"}


def test_every_accepted_event_is_stored_once(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    messages = [message("track", userId=f"u{n % 7}", event="E") for n in range(120)]
    deliver(app, database, tenant, *messages)
    with database.transaction(write=False) as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 120


def test_an_older_message_arriving_later_does_not_overwrite(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    newer = message(
        "identify",
        userId="u",
        traits={"plan": "pro", "city": "Cork"},
        originalTimestamp="2024-05-01T12:00:00Z",
    )
    older = message(
        "identify",
        userId="u",
        traits={"plan": "free", "city": "Dublin", "seats": 2},
        originalTimestamp="2024-05-01T09:00:00Z",
    )
    deliver(app, database, tenant, newer)
    deliver(app, database, tenant, older)
    user = user_by(api, user_id="u")
    assert user["custom_attributes"] == {"plan": "pro", "seats": 2}
    assert user["city"] == "Cork"


def test_a_rest_edit_is_not_overwritten_by_older_tracked_data(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", userId="u"))
    user = user_by(api, user_id="u")
    api.patch(f"/api/v1/users/{user['id']}", json={"custom_attributes": {"plan": "agent-set"}})
    deliver(
        app,
        database,
        tenant,
        message(
            "identify", userId="u", traits={"plan": "old"}, originalTimestamp="2020-01-01T00:00:00Z"
        ),
    )
    assert user_by(api, user_id="u")["custom_attributes"] == {"plan": "agent-set"}


def test_group_traits_describe_the_company_not_the_user(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", userId="u", traits={"name": "Ada"}))
    deliver(
        app,
        database,
        tenant,
        message("group", userId="u", groupId="g", traits={"name": "Acme", "plan": "pro"}),
    )
    user = user_by(api, user_id="u")
    assert user["name"] == "Ada" and user["custom_attributes"] == {}


def test_a_group_that_fails_leaves_nothing_half_applied(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", userId="u"))
    bad = message("group", userId="u", groupId=" padded ", context={"traits": {"plan": "changed"}})
    deliver(app, database, tenant, bad, message("identify", userId="u", traits={"seats": 2}))
    user = user_by(api, user_id="u")
    assert user["custom_attributes"] == {"seats": 2}
    assert user["companies"]["companies"] == []
