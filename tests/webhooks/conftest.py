"""Fixtures of the webhook tests: a client allowed private URLs, a receiver, a deliverer."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from audience.app import create_app
from audience.config import Settings
from audience.db import Database
from audience.webhooks.deliver import Deliverer
from tests.conftest import Tenant
from tests.webhooks.helpers import FakeClock, Receiver


@pytest.fixture
def private_api(settings: Settings, database: Database, tenant: Tenant) -> TestClient:
    """The tenant's REST client on an app with AUDIENCE_WEBHOOK_ALLOW_PRIVATE=true."""
    allowed = settings.model_copy(update={"webhook_allow_private": True})
    return TestClient(
        create_app(allowed, database=database),
        headers={"Authorization": f"Bearer {tenant.api_key}"},
        raise_server_exceptions=False,
    )


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def deliverer(database: Database, clock: FakeClock) -> Iterator[Deliverer]:
    sender = Deliverer(
        database, allow_private=True, clock=clock, timeout=httpx.Timeout(0.5), deadline=2.0
    )
    try:
        yield sender
    finally:
        sender.close()
