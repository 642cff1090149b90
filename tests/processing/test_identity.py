"""Identity resolution through the processor (R-ID-2..R-ID-6)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audience.db import Database
from audience.ingest.models import FailedMessage, ProcessedMessage
from audience.users.models import User
from tests.conftest import Tenant
from tests.processing.helpers import deliver, events_of, message, user_by


def live_users(database: Database) -> int:
    with database.transaction(write=False) as session:
        query = select(func.count()).select_from(User).where(User.merged_into_id.is_(None))
        return int(session.scalar(query) or 0)


def failures(database: Database) -> list[FailedMessage]:
    with database.transaction(write=False) as session:
        return list(session.scalars(select(FailedMessage).order_by(FailedMessage.id)))


def warnings_of(database: Database, message_id: str) -> list[dict[str, str]]:
    with database.transaction(write=False) as session:
        row = session.get(ProcessedMessage, (1, message_id))
        return [] if row is None else list(row.warnings)


def test_anonymous_visitor_is_created_from_an_anonymous_id(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("page", anonymousId="a-1", name="Home"))
    user = user_by(api, anonymous_id="a-1")
    assert user["kind"] == "anonymous" and user["type"] == "contact"
    assert user["page_views"] == 1


def test_identify_with_anonymous_id_turns_the_visitor_into_the_user(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("page", anonymousId="a-1", name="Home"))
    visitor = user_by(api, anonymous_id="a-1")
    deliver(app, database, tenant, message("identify", anonymousId="a-1", userId="u-1"))
    user = user_by(api, user_id="u-1")
    assert user["id"] == visitor["id"]  # no user had u-1: the visitor simply becomes them
    assert live_users(database) == 1


def test_anonymous_visitor_merges_into_the_existing_identified_user(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", userId="u-1", traits={"email": "a@b.co"}))
    deliver(app, database, tenant, message("track", anonymousId="a-9", event="Viewed Pricing"))
    assert live_users(database) == 2
    deliver(app, database, tenant, message("identify", anonymousId="a-9", userId="u-1"))
    assert live_users(database) == 1
    user = user_by(api, user_id="u-1")
    assert [event["name"] for event in events_of(api, user)] == ["Viewed Pricing"]
    assert user_by(api, anonymous_id="a-9")["id"] == user["id"]


def test_identified_users_are_never_merged_implicitly(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", userId="u-1", anonymousId="device"))
    shared = message("identify", userId="u-2", anonymousId="device")
    deliver(app, database, tenant, shared)
    first, second = user_by(api, user_id="u-1"), user_by(api, user_id="u-2")
    assert first["id"] != second["id"]
    assert user_by(api, anonymous_id="device")["id"] == first["id"]
    codes = [warning["code"] for warning in warnings_of(database, shared["messageId"])]
    assert codes == ["identity_conflict"]


def test_user_key_is_looked_up_first(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", anonymousId="a-1"))
    visitor = user_by(api, anonymous_id="a-1")
    keyed = message(
        "track",
        anonymousId="other-device",
        event="Clicked",
        context={"externalId": [{"type": "userKey", "id": visitor["user_key"]}]},
    )
    deliver(app, database, tenant, keyed)
    assert [event["name"] for event in events_of(api, visitor)] == ["Clicked"]
    assert user_by(api, anonymous_id="other-device")["id"] == visitor["id"]


def test_lookup_by_email_finds_exactly_one_user(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", userId="u-1", traits={"email": "A@b.co"}))
    lookup = message(
        "track",
        anonymousId="x",
        event="Add to cart",
        properties={"email": "a@B.co"},
        integrations={"User.com": {"lookup": "email"}},
    )
    deliver(app, database, tenant, lookup)
    assert [e["name"] for e in events_of(api, user_by(api, user_id="u-1"))] == ["Add to cart"]


def test_lookup_by_phone(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("identify", userId="u-1", traits={"phone": "+1 202 555 0146"}),
    )
    lookup = message(
        "page",
        anonymousId="x",
        name="Cart",
        properties={"phone": "+12025550146"},
        integrations={"user": {"lookup": "phone"}},
    )
    deliver(app, database, tenant, lookup)
    assert [e["name"] for e in events_of(api, user_by(api, user_id="u-1"))] == ["Cart"]


def test_lookup_matching_nobody_is_a_failed_message(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    lookup = message(
        "track",
        anonymousId="x",
        event="E",
        properties={"email": "ghost@b.co"},
        integrations={"audience": {"lookup": "email"}},
    )
    deliver(app, database, tenant, lookup)
    (failure,) = failures(database)
    assert (failure.error_code, failure.stage) == ("lookup_not_found", "resolve")
    assert failure.payload["messageId"] == lookup["messageId"]
    assert live_users(database) == 0


def test_lookup_matching_several_users_is_a_failed_message(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("identify", userId="u-1", traits={"email": "same@b.co"}),
        message("identify", userId="u-2", traits={"email": "same@b.co"}),
    )
    lookup = message(
        "identify",
        anonymousId="x",
        traits={"email": "same@b.co"},
        integrations={"user": {"lookup": "email"}},
    )
    deliver(app, database, tenant, lookup)
    assert [failure.error_code for failure in failures(database)] == ["lookup_ambiguous"]


def test_user_id_from_traits_when_the_message_has_none(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("identify", anonymousId="a", traits={"userId": "from-traits"}),
    )
    assert user_by(api, user_id="from-traits")["id"] == user_by(api, anonymous_id="a")["id"]


def test_placeholder_ids_never_match_or_merge(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("identify", userId="undefined", anonymousId="a-1", traits={"id": "null"}),
        message("identify", userId="NULL", anonymousId="a-2"),
    )
    assert live_users(database) == 2
    assert user_by(api, anonymous_id="a-1")["user_id"] is None


def test_alias_merges_the_previous_anonymous_identity(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("track", anonymousId="old", event="Visited"))
    deliver(app, database, tenant, message("identify", userId="new-id"))
    deliver(app, database, tenant, message("alias", previousId="old", userId="new-id"))
    assert live_users(database) == 1
    user = user_by(api, user_id="new-id")
    assert [event["name"] for event in events_of(api, user)] == ["Visited"]


def test_alias_of_an_unknown_previous_id_remembers_it(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("alias", previousId="cookie-7", userId="u-7"))
    assert user_by(api, anonymous_id="cookie-7")["user_id"] == "u-7"


def test_many_messages_for_one_new_person_make_one_user(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    messages = [
        message("track", userId="same", anonymousId=f"device-{n}", event="E") for n in range(50)
    ]
    deliver(app, database, tenant, *messages)
    assert live_users(database) == 1
    assert len(events_of(api, user_by(api, user_id="same"))) == 50


def test_environments_never_share_users(
    app: TestClient, database: Database, tenant: Tenant, other_tenant: Tenant
) -> None:
    deliver(app, database, tenant, message("identify", userId="u-1"))
    deliver(app, database, other_tenant, message("identify", userId="u-1"))
    mine = user_by(tenant.client, user_id="u-1")
    theirs = user_by(other_tenant.client, user_id="u-1")
    assert mine["id"] != theirs["id"]


def test_anonymous_only_message_reaches_the_identified_owner_of_the_device(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(app, database, tenant, message("identify", userId="u-1", anonymousId="device"))
    deliver(app, database, tenant, message("track", anonymousId="device", event="Later"))
    assert live_users(database) == 1
    assert [e["name"] for e in events_of(api, user_by(api, user_id="u-1"))] == ["Later"]


def test_user_id_of_an_explicitly_merged_user_reaches_the_survivor(
    app: TestClient, database: Database, tenant: Tenant, api: TestClient
) -> None:
    deliver(
        app, database, tenant, message("identify", userId="u-1"), message("identify", userId="u-2")
    )
    first, second = user_by(api, user_id="u-1"), user_by(api, user_id="u-2")
    merged = api.post(f"/api/v1/users/{second['id']}/merge", json={"from": first["id"]})
    assert merged.status_code == 200, merged.text
    deliver(app, database, tenant, message("track", userId="u-1", event="After merge"))
    assert failures(database) == []
    assert [e["name"] for e in events_of(api, user_by(api, user_id="u-2"))] == ["After merge"]
    assert live_users(database) == 1
