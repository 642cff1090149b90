"""Database conflicts become 409s naming the field (a race past the service's own check)."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from audience.errors import conflict_from_integrity_error


@pytest.mark.parametrize(
    "driver_message",
    [
        "UNIQUE constraint failed: users.environment_id, users.user_id",
        'duplicate key value violates unique constraint "uq_users_environment_id_user_id"\n'
        "DETAIL:  Key (environment_id, user_id)=(1, racer) already exists.",
    ],
)
def test_unique_violation_names_the_field(driver_message: str) -> None:
    conflict = conflict_from_integrity_error(
        IntegrityError("INSERT", {}, Exception(driver_message))
    )
    assert (conflict.status, conflict.field) == (409, "user_id")


def test_other_integrity_errors_are_a_plain_conflict() -> None:
    error = IntegrityError("INSERT", {}, Exception("FOREIGN KEY constraint failed"))
    conflict = conflict_from_integrity_error(error)
    assert conflict.status == 409 and conflict.field is None
