"""Undoing a merge (R-ID-7): both users back as they were, newer changes kept.

The merge log (`Merge.moved`) says what moved and the survivor's prior values; this puts it
back. Split from merge.py, whose helpers it shares.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from audience.db import insert_ignore, utcnow
from audience.errors import AudienceError, Conflict
from audience.events.models import Event
from audience.users.merge import (
    _BULK,
    _COUNTERS,
    _LINKS,
    Changes,
    _among,
    _chunks,
    _dump,
    _in_runs,
    _load,
    _lock,
    _value,
    _write,
    get_merge,
)
from audience.users.models import Identity, Merge, User
from audience.users.service import ChangeSource, record_changes
from audience.webhooks.payloads import unmerge_event
from audience.webhooks.service import queue_event


def _restore_times(merge: Merge, target: User, restored: Changes) -> None:
    """Write times of the restored fields back as they were (unless written again since)."""
    times = dict(target.attribute_times or {})
    for name, (before, after) in merge.moved.get("times", {}).items():
        if name in restored and times.get(name) == after:
            if before is None:
                times.pop(name, None)
            else:
                times[name] = before
    target.attribute_times = times


def _deleted(merge_id: int, field: str) -> AudienceError:
    """A merge whose user was deleted (its id is NULL in the log) can never be undone: a code of
    its own, so a client can tell it from the 409s that another undo first would clear."""
    who = "survivor" if field == "into_user_id" else "merged-away user"
    return AudienceError(
        "merge_user_deleted",
        f"merge {merge_id} can't be undone: its {who} was deleted",
        status=409,
        field=field,
    )


def _blocking_merge(session: Session, environment_id: int, user: User) -> str:
    later = session.scalar(
        select(Merge.id)
        .where(
            Merge.environment_id == environment_id,
            Merge.from_user_id == user.id,
            Merge.undone_at.is_(None),
        )
        .order_by(Merge.id.desc())
        .limit(1)
    )
    return f" (merge {later})" if later is not None else ""


def _restore_survivor(
    session: Session, merge: Merge, target: User
) -> tuple[Changes, dict[str, Any]]:
    """The survivor's fields back as they were, unless changed since: (changes, kept)."""
    changes: Changes = {}
    kept: dict[str, Any] = {}
    added = merge.moved.get("added", {})
    for name, (old, new) in merge.moved.get("into", {}).items():
        current = _value(target, name)
        if name in _COUNTERS:  # subtract what the source brought: later counts stay
            restored = max(0, current - added.get(name, 0))
            if restored != current:
                changes[name] = (current, restored)
        elif _dump(current) == new:
            changes[name] = (current, _load(name, old))
        else:
            kept[name] = {"kept": _dump(current), "before_merge": old}
    return changes, kept


def _restore_source(session: Session, merge: Merge, source: User, kept: dict[str, Any]) -> Changes:
    changes: Changes = {}
    for name, old in merge.moved.get("from", {}).items():
        value = _load(name, old)
        if name == "user_id" and value is not None:
            holder = session.scalar(
                select(User.id).where(
                    User.environment_id == source.environment_id, User.user_id == value
                )
            )
            if holder is not None:  # kept by the survivor, or taken since: unique, so not back
                kept[f"from.{name}"] = {"kept": None, "before_merge": old, "held_by": holder}
                continue
        changes[name] = (_value(source, name), value)
    return changes


def _move_back(session: Session, merge: Merge, *, source_id: int, target_id: int) -> None:
    moved = merge.moved
    for condition in _in_runs(Event.id, moved.get("events", [])):
        session.execute(
            update(Event)
            .where(Event.environment_id == merge.environment_id, Event.user_id == target_id)
            .where(condition)
            .values(user_id=source_id),
            execution_options=_BULK,
        )
    for ids in _chunks(moved.get("identities", [])):
        session.execute(
            update(Identity)
            .where(
                Identity.environment_id == merge.environment_id,
                Identity.user_id == target_id,
                _among(Identity.id, ids),
            )
            .values(user_id=source_id),
            execution_options=_BULK,
        )
    for link in _LINKS:
        model, links = link.model, moved.get(link.name, {})
        key = getattr(model, link.key)
        for ids in _chunks(links.get("moved", [])):
            session.execute(
                update(model)
                .where(model.user_id == target_id, _among(key, ids))
                .values(user_id=source_id),
                execution_options=_BULK,
            )
        rows = [
            {link.key: id, "user_id": source_id, link.stamp: datetime.fromisoformat(at)}
            for id, at in links.get("dropped", [])
        ]
        for chunk in _chunks(rows):
            # A tag, list or company deleted since the merge doesn't come back.
            wanted = [row[link.key] for row in chunk]
            alive = set(session.scalars(select(link.parent.id).where(link.parent.id.in_(wanted))))
            insert_ignore(session, model, [row for row in chunk if row[link.key] in alive])


def undo_merge(session: Session, *, environment_id: int, merge_id: int, actor: str | None) -> Merge:
    """Undo a merge: the source is live again with its events, identities, links and values; the
    survivor's fields the merge changed go back unless they changed since (kept, and recorded).
    """
    merge = get_merge(session, environment_id=environment_id, id=merge_id, lock=True)
    if merge.undone_at is not None:
        raise Conflict(f"merge {merge_id} was undone already")
    source_id, target_id = merge.from_user_id, merge.into_user_id
    if target_id is None or source_id is None:
        raise _deleted(merge_id, "into_user_id" if target_id is None else "from_user_id")
    users = _lock(session, environment_id, [source_id, target_id])
    source, target = users.get(source_id), users.get(target_id)
    if target is None or source is None:  # can't be: the foreign keys set the ids to NULL
        raise _deleted(merge_id, "into_user_id" if target is None else "from_user_id")
    if target.merged_into_id is not None:
        raise Conflict(
            f"merge {merge_id} can't be undone while its survivor, user {target_id}, is merged "
            f"into user {target.merged_into_id}{_blocking_merge(session, environment_id, target)}"
            "; undo that merge first"
        )
    if source.merged_into_id != target_id:
        raise Conflict(f"user {source_id} is no longer merged into user {target_id}")
    now = utcnow()
    into, kept = _restore_survivor(session, merge, target)
    _write(target, into)
    _restore_times(merge, target, into)
    times = merge.moved.get("updated_at", {})
    untouched = not kept and _dump(target.updated_at) == times.get("at")
    target.updated_at = _load("updated_at", times["into"]) if untouched and times else now
    session.flush()  # the survivor lets go of a user_id before the source takes it back
    out = _restore_source(session, merge, source, kept)
    _write(source, out)
    source.merged_into_id = None
    source.updated_at = _load("updated_at", times["from"]) if times else now
    session.flush()
    _move_back(session, merge, source_id=source_id, target_id=target_id)
    change = ChangeSource("merge", f"unmerge:{merge.id}")
    record_changes(session, target, into, change)
    record_changes(session, source, out, change)
    kept_now = {
        n: (_value(target, n), _value(target, n)) for n in kept if not n.startswith("from.")
    }
    record_changes(session, target, kept_now, ChangeSource("merge", f"unmerge:{merge.id}:kept"))
    merge.moved = {**merge.moved, "kept": kept, "undone_by": actor}
    merge.undone_at = now
    session.flush()
    queue_event(
        session,
        environment_id=environment_id,
        topic="user.unmerged",
        data=lambda: unmerge_event(merge, source=source, target=target),
        user=target,
    )
    return merge
