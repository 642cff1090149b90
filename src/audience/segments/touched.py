"""Users a write changed, whose segment membership must be re-evaluated before the commit.

A service that changes what a filter can see (a user's attributes, tags, lists, events) calls
`touch`; a `before_commit` hook on every session then runs `membership.refresh_users` for them,
in the same transaction. This module imports nothing of the domains, so any service can use it.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import event
from sqlalchemy.orm import Session

KEY = "audience.segments.touched"  # session.info: {environment_id: {user ids}}


def touched(session: Session) -> dict[int, set[int]]:
    found: dict[int, set[int]] = session.info.setdefault(KEY, {})
    return found


def touch(session: Session, *, environment_id: int, user_ids: Iterable[int]) -> None:
    """Note that these users changed: their segments are re-evaluated before the commit."""
    touched(session).setdefault(environment_id, set()).update(user_ids)


def take(session: Session, environment_id: int) -> set[int]:
    """The users noted for the environment, forgetting them."""
    return touched(session).pop(environment_id, set())


@event.listens_for(Session, "before_commit")
def _before_commit(session: Session) -> None:
    # The one place no write path can miss: membership is never committed behind the data.
    # Releasing a savepoint fires this too; the outermost commit refreshes for it.
    if session.info.get(KEY) and not session.in_nested_transaction():
        from audience.segments.membership import refresh_touched

        refresh_touched(session)


@event.listens_for(Session, "after_rollback")
def _after_rollback(session: Session) -> None:
    # A savepoint rolled back (it fires for those too) leaves what the transaction touched
    # before it to be refreshed; re-evaluating a user whose change was undone is harmless.
    if not session.in_nested_transaction():
        session.info.pop(KEY, None)
