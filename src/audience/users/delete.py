"""Deleting users, many at a time: the bulk delete job and DELETE /users/{id} alike.

A chunk of ids costs a constant number of statements whatever its size or the depth of its
merge chains: one SELECT of the live users (for the `user.deleted` payloads, made before the
rows go) and one DELETE whose recursive CTE walks the users merged into them, level by level
for the whole chunk. The foreign keys cascade to events, identities, tags, lists, companies,
segment memberships and history, and set the merge log's user ids to NULL (migration 0006).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from audience.users.models import User
from audience.users.service import live_users
from audience.webhooks.payloads import user_event
from audience.webhooks.service import queue_event

CHUNK = 500  # live ids per round: well under both databases' parameter limits


def delete_users(session: Session, *, environment_id: int, ids: Iterable[int]) -> int:
    """Delete the live users of `ids` with every user merged into them (down the chain: they
    are the same person and must not come back by an undo). Queues one `user.deleted` per live
    user; the merged-away users are not announced. Unknown and merged-away ids are skipped.
    Returns how many of `ids` were deleted."""
    wanted = sorted(set(ids))
    deleted = 0
    for start in range(0, len(wanted), CHUNK):
        deleted += _delete_chunk(session, environment_id, wanted[start : start + CHUNK])
    return deleted


def _delete_chunk(session: Session, environment_id: int, ids: list[int]) -> int:
    # Locked in id order as merges lock (no deadlock), and read fresh: the payloads show the
    # users as they are deleted, and a user merged away meanwhile is skipped.
    query = live_users(environment_id).where(User.id.in_(ids)).order_by(User.id)
    locked = query.with_for_update().execution_options(populate_existing=True)
    users = list(session.scalars(locked))
    if not users:
        return 0
    for user in users:
        # Made now, from the row as it was (queue_event skips it when nobody listens).
        data = partial(user_event, user)
        queue_event(
            session, environment_id=environment_id, topic="user.deleted", data=data, user=user
        )
    # UNION, not UNION ALL: it would stop even on a (corrupt) cycle of merged_into_id.
    found = [user.id for user in users]
    chain = select(User.id).where(User.id.in_(found)).cte("chain", recursive=True)
    chain = chain.union(
        select(User.id).where(
            User.environment_id == environment_id, User.merged_into_id == chain.c.id
        )
    )
    session.execute(
        delete(User).where(User.environment_id == environment_id, User.id.in_(select(chain.c.id))),
        execution_options={"synchronize_session": False},
    )
    for user in users:  # their rows are gone: the session must not flush or refresh them
        session.expunge(user)
    return len(users)
