"""Real failed messages, produced through /v1 and the processor."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from audience.db import Database
from audience.events.models import Event
from audience.ingest.models import InboxMessage
from tests.conftest import Tenant
from tests.processing.helpers import deliver, message


def by_email(email: str, **fields: Any) -> dict[str, Any]:
    """A track message for the one user with `email`: none is a `lookup_not_found` failure."""
    return message(
        "track",
        anonymousId=f"anon-{email}",
        event="Upgraded",
        properties={"email": email, "plan": "pro"},
        integrations={"audience": {"lookup": "email"}},
        **fields,
    )


def fail(
    app: TestClient, database: Database, tenant: Tenant, *messages: dict[str, Any]
) -> list[dict[str, Any]]:
    """Deliver `messages` (which fail) and return the new failed messages, oldest first."""
    deliver(app, database, tenant, *messages)
    listing = tenant.client.get("/api/v1/failed-messages", params={"per_page": len(messages)})
    assert listing.status_code == 200, listing.text
    return list(reversed(listing.json()["failed_messages"]))


def failed_list(api: TestClient, **params: Any) -> dict[str, Any]:
    response = api.get("/api/v1/failed-messages", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def events_named(database: Database, name: str) -> list[Event]:
    with database.transaction(write=False) as session:
        return list(session.scalars(select(Event).where(Event.name == name)))


def waiting(database: Database) -> int:
    with database.transaction(write=False) as session:
        return session.scalar(select(func.count()).select_from(InboxMessage)) or 0
