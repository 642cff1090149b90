"""Merging one user into another (R-ID-4, R-ID-5, R-ID-7) and undoing it.

Shared by the REST API and the ingestion processor: no HTTP and no commits, and the rows that
move (a user may have 100k events) move in bulk UPDATE … RETURNING statements, never through
ORM loads. `Merge.moved` records exactly what moved and what the survivor held before, so that
`undo_merge` can put both users back:

    events      moved event ids as sorted runs: 7 alone, [10, 14] for 10..14
    identities  moved identity ids
    tags, lists, companies
                {"moved": [tag/list/company id], "dropped": [[id, linked at], …]}; "dropped" are
                the source's links the survivor already had, deleted instead of duplicated
    into        {field: [survivor's value before, value the merge wrote]}, custom attributes as
                "custom_attributes.<name>"
    from        {field: source's value before} for the identifiers that moved off the source
    added       {counter: amount the source added} (session_count, page_views)
    updated_at  both users' updated_at before the merge and the one it wrote
    times       {field: [survivor's write time before, after]} for values taken from the source
    counts      rows moved per kind (the API's moved_counts)
    kept        (after undo) fields left as they were because they changed after the merge
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    and_,
    bindparam,
    delete,
    inspect,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from audience.companies.models import Company, Membership
from audience.companies.service import membership_mode
from audience.db import UtcDateTime, utcnow
from audience.environments.models import Environment
from audience.errors import AudienceError, Conflict, NotFound
from audience.events.models import Event
from audience.lists.models import ListMember, UserList
from audience.pagination import Order, Page, PageParams, paginate
from audience.tags.models import Tag, UserTag
from audience.users.models import Identity, Merge, User
from audience.users.service import ChangeSource, record_changes
from audience.webhooks.payloads import merge_event
from audience.webhooks.service import queue_event

Changes = dict[str, tuple[Any, Any]]

CUSTOM = "custom_attributes."
_IDENTIFIERS = {"user_id": ("user_id",), "email": ("email",), "phone": ("phone", "phone_original")}
_EARLIER = ("created_at", "first_seen_at")
_LATER = ("last_seen_at", "last_request_at", "last_heard_from_at")
_COUNTERS = ("session_count", "page_views")
_NAMES = ("first_name", "last_name")
# Values that mean "not set" for columns that can't be NULL.
_BLANK: dict[str, Any] = {"gender": "unknown", "status": "visitor"}
_SPECIAL = {
    *("id", "environment_id", "user_key", "merged_into_id", "updated_at", "custom_attributes"),
    *("attribute_times", "unsubscribed_from_emails"),
    *(column for columns in _IDENTIFIERS.values() for column in columns),
    *_EARLIER,
    *_LATER,
    *_COUNTERS,
}
_COLUMNS = inspect(User).columns
# Every other standard attribute is filled on the survivor when it has none (new columns too).
_FILLED = tuple(column.key for column in _COLUMNS if column.key not in _SPECIAL)
_DATETIMES = frozenset(column.key for column in _COLUMNS if isinstance(column.type, UtcDateTime))
_CHUNK = 1000  # ids per statement: well under both databases' parameter limits


@dataclass(frozen=True)
class _Link:
    """A table linking users to something else, keyed by (other id, user id)."""

    name: str
    model: type[Any]
    key: str
    stamp: str
    parent: type[Any]


_LINKS = (
    _Link("tags", UserTag, "tag_id", "tagged_at", Tag),
    _Link("lists", ListMember, "list_id", "added_at", UserList),
    _Link("companies", Membership, "company_id", "member_since", Company),
)
_BULK = {"synchronize_session": False}


def _dump(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _load(name: str, value: Any) -> Any:
    return datetime.fromisoformat(value) if name in _DATETIMES and value is not None else value


def _full_name(first: str | None, last: str | None) -> str | None:
    return " ".join(part for part in (first, last) if part) or None


def _blank(name: str, value: Any) -> bool:
    return value is None or value == "" or value == {} or value == _BLANK.get(name)


def _value(user: User, name: str) -> Any:
    if name.startswith(CUSTOM):
        return (user.custom_attributes or {}).get(name[len(CUSTOM) :])
    return getattr(user, name)


def _write(user: User, changes: Changes) -> None:
    custom = dict(user.custom_attributes or {})
    for name, (_, new) in changes.items():
        if not name.startswith(CUSTOM):
            setattr(user, name, new)
        elif new is None:
            custom.pop(name[len(CUSTOM) :], None)
        else:
            custom[name[len(CUSTOM) :]] = new
    if any(name.startswith(CUSTOM) for name in changes):
        user.custom_attributes = custom  # a new dict: JSON columns don't track in-place edits


def _lock(session: Session, environment_id: int, ids: Sequence[int]) -> dict[int, User]:
    """Lock the users in id order (so two merges can't deadlock) and read them fresh.

    FOR UPDATE on PostgreSQL also waits for writers holding a key-share lock through a foreign
    key (an event being inserted for one of them); SQLite's BEGIN IMMEDIATE already serialises.
    """
    rows = session.scalars(
        select(User)
        .where(User.environment_id == environment_id, User.id.in_(sorted(set(ids))))
        .order_by(User.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return {user.id: user for user in rows}


def hold_user(session: Session, *, environment_id: int, id: int) -> User:
    """For writers of user-linked rows: lock a user against merges until the transaction ends
    and return the live user it is now (following merges). Without it an event inserted after
    its user was read but while a merge runs lands on the merged-away user (R-ID-8).
    """
    for _ in range(100):
        user = session.scalar(
            select(User)
            .where(User.environment_id == environment_id, User.id == id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE: excludes merges, not FKs
            .execution_options(populate_existing=True)
        )
        if user is None:
            raise NotFound("user", id)
        if user.merged_into_id is None:
            return user
        id = user.merged_into_id
    raise Conflict(f"user {id} is at the end of a chain of over 100 merges")


def _plan(source: User, target: User) -> tuple[Changes, Changes]:
    """What the merge writes on the survivor and on the source: {field: (old, new)} each."""
    into: Changes = {}
    out: Changes = {}
    for field, columns in _IDENTIFIERS.items():
        if not _blank(field, getattr(source, field)) and _blank(field, getattr(target, field)):
            for column in columns:  # moved, not copied: user_id is unique
                into[column] = (getattr(target, column), getattr(source, column))
                out[column] = (getattr(source, column), None)
    for field in _FILLED:
        theirs, ours = getattr(source, field), getattr(target, field)
        if not _blank(field, theirs) and _blank(field, ours):
            into[field] = (ours, theirs)
    for fields, pick in ((_EARLIER, min), (_LATER, max)):
        for field in fields:
            theirs, ours = getattr(source, field), getattr(target, field)
            best = pick(v for v in (theirs, ours) if v is not None) if theirs or ours else None
            if best != ours:
                into[field] = (ours, best)
    for field in _COUNTERS:
        if getattr(source, field):
            into[field] = (getattr(target, field), getattr(target, field) + getattr(source, field))
    # Unsubscribing is a person's wish: either profile's opt-out holds for the merged one.
    if source.unsubscribed_from_emails and not target.unsubscribed_from_emails:
        into["unsubscribed_from_emails"] = (False, True)
    # A name derived from first and last name is derived again from the filled-in ones.
    before = _full_name(target.first_name, target.last_name)
    after = _full_name(*(into.get(f, (None, getattr(target, f)))[1] for f in _NAMES))
    if "name" not in into and target.name in (None, before) and after != target.name:
        into["name"] = (target.name, after)
    identified = any(_value(target, f) or f in into for f in _IDENTIFIERS)
    if identified and into.get("status", (None, target.status))[1] == "visitor":
        into["status"] = (target.status, "user")  # as an identify would (users.service._apply)
    ours_custom = target.custom_attributes or {}
    for key, theirs in (source.custom_attributes or {}).items():
        if theirs is not None and ours_custom.get(key) is None:
            into[CUSTOM + key] = (None, theirs)
    return into, out


def _carry_times(source: User, target: User, into: Changes) -> dict[str, list[Any]]:
    """A value taken from the source keeps its write time (R-ATTR-5: older data arriving later
    must not overwrite it), or the survivor's if later: {name: [survivor's before, now]}."""
    theirs, ours = source.attribute_times or {}, dict(target.attribute_times or {})
    carried: dict[str, list[Any]] = {}
    for name in into:
        if name in theirs:
            carried[name] = [ours.get(name), max(theirs[name], ours.get(name, theirs[name]))]
            ours[name] = carried[name][1]
    if carried:
        target.attribute_times = ours
    return carried


def _runs(ids: Sequence[int]) -> list[Any]:
    """Sorted ids as runs of consecutive ids: 7 alone, [10, 14] for 10..14."""
    runs: list[Any] = []
    for id in sorted(ids):
        last = runs[-1] if runs else None
        if isinstance(last, list) and last[1] == id - 1:
            last[1] = id
        elif isinstance(last, int) and last == id - 1:
            runs[-1] = [last, id]
        else:
            runs.append(id)
    return runs


def _in_runs(column: Any, runs: Sequence[Any]) -> Iterator[ColumnElement[bool]]:
    """Conditions matching the ids of `runs`: long runs as one range each, the rest as lists of
    ids (each a primary-key lookup; an OR of many ranges would be checked row by row)."""
    ids: list[int] = []
    for run in runs:
        low, high = (run, run) if isinstance(run, int) else run
        if high - low >= _CHUNK:
            yield column.between(low, high)
            continue
        ids.extend(range(low, high + 1))
        if len(ids) >= _CHUNK:
            yield _among(column, ids)
            ids = []
    if ids:
        yield _among(column, ids)


def _among(column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """`column IN (ids)` with the ids written into the SQL (integers only, so safe): a prepared
    statement's generic plan would compare each row with every parameter in turn."""
    values = [int(id) for id in ids]
    listed = bindparam(
        "ids", values, BigInteger(), expanding=True, literal_execute=True, unique=True
    )
    condition: ColumnElement[bool] = column.in_(listed)
    return condition


def _chunks(ids: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _move_links(
    session: Session, link: _Link, *, source_id: int, target_id: int, drop_all: bool = False
) -> dict[str, Any]:
    # Link tables have no environment column: both user ids were checked against it already.
    model = link.model
    key, stamp, owner = getattr(model, link.key), getattr(model, link.stamp), model.user_id
    duplicate = owner == source_id
    if not drop_all:
        duplicate = and_(duplicate, key.in_(select(key).where(owner == target_id)))
    dropped = session.execute(
        delete(model).where(duplicate).returning(key, stamp), execution_options=_BULK
    ).all()
    moved = session.scalars(
        update(model).where(owner == source_id).values(user_id=target_id).returning(key),
        execution_options=_BULK,
    ).all()
    return {
        "moved": sorted(moved),
        "dropped": sorted([id, _dump(at)] for id, at in dropped),
    }


def _single_company(session: Session, environment_id: int) -> bool:
    environment = session.get(Environment, environment_id)
    return environment is not None and membership_mode(environment) == "single"


def _has_company(session: Session, user_id: int) -> bool:
    query = select(Membership.company_id).where(Membership.user_id == user_id).limit(1)
    return session.scalar(query) is not None


def _refuse_merged(user: User, field: str | None) -> None:
    if user.merged_into_id is not None:
        raise Conflict(
            f"user {user.id} was merged into user {user.merged_into_id}; "
            f"use user {user.merged_into_id} or undo that merge",
            field=field,
        )


def merge_users(
    session: Session,
    *,
    environment_id: int,
    source_id: int,
    target_id: int,
    reason: str,
    actor: str | None,
) -> Merge:
    """Merge user `source_id` into `target_id` (the survivor) and log it (R-ID-4, R-ID-7).

    Two identified users may be merged here: R-ID-5 forbids only implicit merges, which is the
    processor's rule to keep. The source stays as a hidden row (`merged_into_id`) for undo.
    """
    if source_id == target_id:
        raise AudienceError(
            "invalid_merge", "a user can't be merged into itself", status=422, field="from"
        )
    users = _lock(session, environment_id, [source_id, target_id])
    if target_id not in users:
        raise NotFound("user", target_id)
    if source_id not in users:
        raise AudienceError("not_found", f"user {source_id} not found", status=404, field="from")
    source, target = users[source_id], users[target_id]
    _refuse_merged(target, None)
    _refuse_merged(source, "from")
    now = utcnow()
    merge = Merge(
        environment_id=environment_id,
        from_user_id=source_id,
        into_user_id=target_id,
        reason=reason,
        actor=actor,
        moved={},
        created_at=now,
    )
    session.add(merge)
    session.flush()

    moved: dict[str, Any] = {}
    events = session.scalars(
        update(Event)
        .where(Event.environment_id == environment_id, Event.user_id == source_id)
        .values(user_id=target_id)
        .returning(Event.id),
        execution_options=_BULK,
    ).all()
    identities = session.scalars(
        update(Identity)
        .where(Identity.environment_id == environment_id, Identity.user_id == source_id)
        .values(user_id=target_id)
        .returning(Identity.id),
        execution_options=_BULK,
    ).all()
    moved["events"] = _runs(events)
    moved["identities"] = sorted(identities)
    counts = {"events": len(events), "identities": len(identities)}
    # One company at a time (seed 004): a survivor's company wins, the source's is dropped.
    keeps_company = _single_company(session, environment_id) and _has_company(session, target_id)
    for link in _LINKS:
        drop_all = link.name == "companies" and keeps_company
        links = _move_links(
            session, link, source_id=source_id, target_id=target_id, drop_all=drop_all
        )
        moved[link.name] = links
        counts[link.name] = len(links["moved"])

    into, out = _plan(source, target)
    moved["into"] = {name: [_dump(old), _dump(new)] for name, (old, new) in into.items()}
    moved["from"] = {name: _dump(old) for name, (old, _) in out.items()}
    moved["added"] = {field: getattr(source, field) for field in _COUNTERS if field in into}
    moved["updated_at"] = {
        "from": _dump(source.updated_at),
        "into": _dump(target.updated_at),
        "at": _dump(now),
    }
    moved["counts"] = counts
    moved["times"] = _carry_times(source, target, into)
    _write(source, out)
    source.merged_into_id = target_id
    source.updated_at = now
    session.flush()  # the source lets go of its user_id before the survivor takes it
    _write(target, into)
    target.updated_at = now
    session.flush()
    change = ChangeSource("merge", f"merge:{merge.id}")
    record_changes(session, target, into, change)
    record_changes(session, source, out, change)
    merge.moved = moved
    session.flush()
    queue_event(
        session,
        environment_id=environment_id,
        topic="user.merged",
        data=lambda: merge_event(merge, source=source, target=target),
        user=target,
    )
    return merge


def get_merge(session: Session, *, environment_id: int, id: int, lock: bool = False) -> Merge:
    query = select(Merge).where(Merge.environment_id == environment_id, Merge.id == id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    merge = session.scalar(query)
    if merge is None:
        raise NotFound("merge", id)
    return merge


def list_merges(session: Session, *, environment_id: int, user_id: int, params: PageParams) -> Page:
    """Merges into or from a user, newest first. Merged-away users have theirs listed too: it
    is how a client holding an old id finds where that user went."""
    known = session.scalar(
        select(User.id).where(User.environment_id == environment_id, User.id == user_id)
    )
    if known is None:
        raise NotFound("user", user_id)
    query = select(Merge).where(
        Merge.environment_id == environment_id,
        or_(Merge.from_user_id == user_id, Merge.into_user_id == user_id),
    )
    return paginate(session, query, order=Order("id", Merge.id, Merge.id, True), params=params)
