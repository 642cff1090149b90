"""Rate limits per key (R-SEC-5): 429 with Retry-After, nothing stored, other keys unaffected."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from audience.app import create_app
from audience.config import Settings
from audience.db import Database
from tests.conftest import make_tenant
from tests.ingest.helpers import assert_error, batch, stored, track


@pytest.fixture
def limited(settings: Settings, database: Database) -> TestClient:
    limits = {"ingest_rate_limit": "2/minute", "api_rate_limit": "3 per minute"}
    app = create_app(settings.model_copy(update=limits), database=database)
    return TestClient(app, raise_server_exceptions=False)


def _retry_after(response: httpx.Response) -> int:
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= 60
    return seconds


def test_tracking_requests_over_the_limit_are_429_and_store_nothing(
    limited: TestClient, database: Database
) -> None:
    tenant = make_tenant(limited, database, "production")
    sent = [track() for _ in range(3)]
    for message in sent[:2]:
        assert batch(limited, [message], token=tenant.app_token).status_code == 200
    refused = batch(limited, [sent[2]], token=tenant.app_token)
    assert_error(refused, 429, "rate_limited")
    _retry_after(refused)
    assert set(stored(database)) == {message["messageId"] for message in sent[:2]}


def test_the_tracking_limit_is_per_app_token(limited: TestClient, database: Database) -> None:
    tenant = make_tenant(limited, database, "production")
    other = make_tenant(limited, database, "staging")
    for _ in range(3):
        batch(limited, [track()], token=tenant.app_token)
    assert batch(limited, [track()], token=other.app_token).status_code == 200


def test_api_requests_over_the_limit_are_429_with_retry_after(
    limited: TestClient, database: Database
) -> None:
    tenant = make_tenant(limited, database, "production")
    for _ in range(3):
        assert tenant.client.get("/api/v1/users").status_code == 200
    refused = tenant.client.get("/api/v1/users")
    assert refused.status_code == 429
    assert refused.json()["errors"][0]["code"] == "rate_limited"
    _retry_after(refused)
    other = make_tenant(limited, database, "staging")
    assert other.client.get("/api/v1/users").status_code == 200


def test_a_limit_set_off_allows_any_number(settings: Settings, database: Database) -> None:
    app = create_app(settings.model_copy(update={"api_rate_limit": "off"}), database=database)
    tenant = make_tenant(TestClient(app), database, "production")
    assert all(tenant.client.get("/api/v1/users").status_code == 200 for _ in range(12))
