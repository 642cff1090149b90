"""A time more than 24 hours ahead (R-ING-6) never moves last_seen_at or last_request_at."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from audience.db import Database
from tests.conftest import Tenant
from tests.factories import create_user
from tests.processing.helpers import deliver, events_of, message, user_by

FAR_FUTURE = "2099-01-01T00:00:00Z"


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _seen(api: TestClient, user_id: str) -> tuple[int | None, int | None]:
    user = user_by(api, user_id=user_id)
    return user["last_seen_at"], user["last_request_at"]


def test_a_far_future_track_is_kept_but_moves_no_seen_time(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    deliver(
        app, database, tenant, message("track", userId="u1", event="A", timestamp=_iso(hour_ago))
    )
    before = _seen(tenant.client, "u1")
    assert before == (int(hour_ago.timestamp()),) * 2

    deliver(app, database, tenant, message("track", userId="u1", event="B", timestamp=FAR_FUTURE))

    assert _seen(tenant.client, "u1") == before
    user = user_by(tenant.client, user_id="u1")
    late = [event for event in events_of(tenant.client, user) if event["name"] == "B"]
    assert [event["timestamp"] for event in late] == [
        int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())
    ]


def test_a_user_first_seen_in_the_far_future_has_no_seen_time_until_a_real_one(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    deliver(app, database, tenant, message("page", userId="u2", timestamp=FAR_FUTURE))
    assert _seen(tenant.client, "u2") == (None, None)
    assert user_by(tenant.client, user_id="u2")["session_count"] == 0

    now = datetime.now(UTC).replace(microsecond=0)
    deliver(app, database, tenant, message("track", userId="u2", event="A", timestamp=_iso(now)))
    assert _seen(tenant.client, "u2") == (int(now.timestamp()),) * 2


def test_a_time_less_than_24_hours_ahead_still_moves_seen_times(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=23)
    deliver(app, database, tenant, message("track", userId="u3", event="A", timestamp=_iso(ahead)))
    assert _seen(tenant.client, "u3") == (int(ahead.timestamp()),) * 2


def test_the_rest_api_refuses_a_far_future_event_and_seen_times_stay(api: TestClient) -> None:
    user = create_user(api)
    at = int(time.time()) - 60
    response = api.post(f"/api/v1/users/{user['id']}/events", json={"name": "A", "timestamp": at})
    assert response.status_code == 200, response.text
    before = api.get(f"/api/v1/users/{user['id']}").json()
    assert before["last_seen_at"] == at

    late = {"name": "B", "timestamp": int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())}
    response = api.post(f"/api/v1/users/{user['id']}/events", json=late)

    assert response.status_code == 422
    after = api.get(f"/api/v1/users/{user['id']}").json()
    assert (after["last_seen_at"], after["last_request_at"]) == (
        before["last_seen_at"],
        before["last_request_at"],
    )
