"""A user the processor creates gets its starting values straight into the new row (no
attribute events): the row must hold them all, and later writes in the same batch apply."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.db import Database
from audience.users.models import User
from tests.conftest import Tenant
from tests.processing.helpers import deliver, message


def test_new_users_rows_hold_their_starting_values_and_later_writes(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    deliver(
        app,
        database,
        tenant,
        message("track", anonymousId="a-1", event="Opened"),
        message("identify", userId="u-1", traits={"plan": "pro", "gender": "female"}),
        message("identify", userId="u-1", traits={"plan": "team"}),
    )
    with database.transaction(write=False) as session:
        anonymous, identified = session.scalars(select(User).order_by(User.id)).all()
    assert anonymous.user_id is None and anonymous.status == "visitor"
    assert anonymous.gender == "unknown" and anonymous.unsubscribed_from_emails is False
    assert anonymous.custom_attributes == {} and anonymous.page_views == 0
    assert anonymous.session_count == 1 and anonymous.user_key
    assert anonymous.created_at is not None and anonymous.attribute_times == {}
    assert identified.user_id == "u-1" and identified.status == "user"
    assert identified.gender == "female" and identified.session_count == 0
    assert identified.custom_attributes == {"plan": "team"}
    assert identified.user_key != anonymous.user_key
