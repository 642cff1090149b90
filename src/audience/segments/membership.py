"""Live segment membership (R-SEG-3): kept in `segment_memberships`, updated set-based.

- `compute_segment`: every member of one segment at once (created, filter changed, or its time
  windows moved): one UPDATE … RETURNING for those who left, one INSERT … SELECT … RETURNING
  for those who entered.
- `refresh_users`: the same two statements per segment of the environment, restricted to the
  users a change touched (an ingestion batch, a REST write).
- `refresh_segments`: `compute_segment` for every segment whose filter has a relative time
  window (or refers to such a segment), run by the processor at most once a minute.

Each entry and exit queues `segment.entered` / `segment.exited`, except when a segment is first
computed or its filter is edited: that is the segment changing, not the users.

Segments referring to segments are evaluated after the ones they refer to (cycles are refused
when a segment is saved), so one pass leaves every membership current.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from sqlalchemy import ColumnElement, Select, exists, insert, literal, select, update
from sqlalchemy.orm import Session

from audience.db import utcnow
from audience.segments import service
from audience.segments.filters import Behaviour, Condition, Definitions, Filter, walk
from audience.segments.language import WINDOW_OPS, FilterError, Ref, ref_value
from audience.segments.models import Segment, SegmentMembership
from audience.segments.touched import take, touched
from audience.users.models import User
from audience.webhooks import payloads
from audience.webhooks.service import queue_event

_CHUNK = 500  # user ids per IN list


# --- the references between segments -----------------------------------------------------------


def raw_refs(raw: Any) -> Iterator[Ref]:
    """The segments a stored (already valid) JSON filter refers to; bad parts are skipped."""
    if isinstance(raw, list):
        for item in raw:
            yield from raw_refs(item)
    elif isinstance(raw, dict):
        if raw.get("field") == "segments":
            value = raw.get("value")
            for item in value if isinstance(value, list) else [value]:
                if (ref := _ref(item)) is not None:
                    yield ref
            return
        for key in ("and", "or", "not"):
            if key in raw:
                yield from raw_refs(raw[key])


def _ref(value: Any) -> Ref | None:
    try:
        return ref_value(value, "filter")
    except FilterError:
        return None


def time_relative(filter: Filter) -> bool:
    """Whether a filter's answer can change with the clock alone."""
    for node in walk(filter):
        if isinstance(node, Condition) and node.op in WINDOW_OPS:
            return True
        if isinstance(node, Behaviour):
            if node.within is not None:
                return True
            if any(c is not None and c.op in WINDOW_OPS for c in (node.first, node.last)):
                return True
    return False


@dataclass
class Graph:
    """The environment's segments and which of them each one refers to."""

    segments: dict[int, Segment]
    refers: dict[int, set[int]]

    @classmethod
    def load(cls, session: Session, *, environment_id: int) -> Graph:
        rows = session.scalars(
            select(Segment).where(Segment.environment_id == environment_id).order_by(Segment.id)
        ).all()
        segments = {segment.id: segment for segment in rows}
        by_name = {segment.name: segment.id for segment in rows}
        refers = {
            segment.id: resolve(raw_refs(segment.filter), segments, by_name) for segment in rows
        }
        return cls(segments, refers)

    def ordered(self) -> list[Segment]:
        """Referred-to segments before the segments referring to them."""
        done: set[int] = set()
        order: list[Segment] = []

        def visit(id: int, path: frozenset[int]) -> None:
            if id in done or id in path:  # a cycle (refused on save) is cut, not looped
                return
            for target in sorted(self.refers.get(id, ())):
                visit(target, path | {id})
            done.add(id)
            order.append(self.segments[id])

        for id in self.segments:
            visit(id, frozenset())
        return order

    def dependents(self, ids: Collection[int]) -> set[int]:
        """Segments referring to any of `ids`, directly or not (not `ids` themselves)."""
        found: set[int] = set()
        frontier = set(ids)
        while frontier:
            frontier = {
                id for id, targets in self.refers.items() if targets & frontier and id not in found
            } - set(ids)
            found |= frontier
        return found


def resolve(refs: Iterable[Ref], segments: dict[int, Segment], by_name: dict[str, int]) -> set[int]:
    """The ids of the existing segments `refs` name (unknown ones match no one)."""
    found: set[int] = set()
    for ref in refs:
        if ref.id is not None and ref.id in segments:
            found.add(ref.id)
        elif ref.name is not None and ref.name in by_name:
            found.add(by_name[ref.name])
    return found


# --- computing membership ----------------------------------------------------------------------


@dataclass
class Change:
    segment: Segment
    topic: str
    user_id: int


def _matching(
    session: Session,
    segment: Segment,
    definitions: Definitions,
    now: datetime,
    user_ids: list[int] | None,
) -> Select[Any] | None:
    """`SELECT users.id` of the live users matching the segment (among `user_ids` if given);
    None when the stored filter no longer parses."""
    try:
        parsed = service.parse(
            session,
            environment_id=segment.environment_id,
            raw=segment.filter,
            definitions=definitions,
        )
        where: ColumnElement[bool] = service.condition(
            session, environment_id=segment.environment_id, filter=parsed, now=now
        )
    except FilterError:
        # Valid when saved, but an attribute it reads was deleted since: membership stays as it
        # is (rather than everyone leaving, with a webhook each) until the filter is fixed.
        return None
    query = select(User.id).where(
        User.environment_id == segment.environment_id, User.merged_into_id.is_(None), where
    )
    if user_ids is not None:
        query = query.where(User.id.in_(user_ids))
    return query


def _apply(
    session: Session,
    segment: Segment,
    definitions: Definitions,
    now: datetime,
    user_ids: list[int] | None,
) -> list[Change]:
    """Exit the members who no longer match and enter the users who newly do."""
    matching = _matching(session, segment, definitions, now, user_ids)
    if matching is None:
        return []
    current = [SegmentMembership.segment_id == segment.id, SegmentMembership.exited_at.is_(None)]
    if user_ids is not None:
        current.append(SegmentMembership.user_id.in_(user_ids))
    left = session.scalars(
        update(SegmentMembership)
        # NOT EXISTS (an anti-join), not NOT IN: PostgreSQL can't hash a large NOT IN list.
        .where(*current, ~exists(matching.where(User.id == SegmentMembership.user_id)))
        .values(exited_at=now)
        .returning(SegmentMembership.user_id),
        execution_options={"synchronize_session": False},
    ).all()
    member = exists(
        select(1).where(
            SegmentMembership.segment_id == segment.id,
            SegmentMembership.exited_at.is_(None),
            SegmentMembership.user_id == User.id,
        )
    )
    entering = matching.where(~member).with_only_columns(
        literal(segment.id), User.id, literal(now, SegmentMembership.entered_at.type)
    )
    entered = session.scalars(
        insert(SegmentMembership)
        .from_select(["segment_id", "user_id", "entered_at"], entering)
        .returning(SegmentMembership.user_id)
    ).all()
    return [Change(segment, "segment.exited", id) for id in left] + [
        Change(segment, "segment.entered", id) for id in entered
    ]


def _notify(session: Session, environment_id: int, changes: list[Change]) -> None:
    """Queue the webhooks of `changes` (the users read in one query per 500)."""
    if not changes:
        return
    ids = sorted({change.user_id for change in changes})
    users: dict[int, User] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        users.update(
            (user.id, user) for user in session.scalars(select(User).where(User.id.in_(chunk)))
        )
    for change in changes:
        user = users.get(change.user_id)
        if user is None:
            continue
        segment = change.segment
        queue_event(
            session,
            environment_id=environment_id,
            topic=change.topic,
            data=partial(
                payloads.segment_event, segment_id=segment.id, segment_name=segment.name, user=user
            ),
            user=user,
        )


def compute_segment(
    session: Session, *, segment: Segment, now: datetime | None = None, notify: bool = False
) -> int:
    """Bring every membership of `segment` up to date; returns how many changed. `notify`
    queues webhooks for the changes (the clock moved), not for a new or edited filter."""
    session.flush()
    definitions = service.load_definitions(session, environment_id=segment.environment_id)
    changes = _apply(session, segment, definitions, now or utcnow(), None)
    if notify:
        _notify(session, segment.environment_id, changes)
    return len(changes)


def refresh_users(
    session: Session,
    *,
    environment_id: int,
    user_ids: Collection[int],
    now: datetime | None = None,
) -> int:
    """Re-evaluate every segment of the environment for `user_ids` (users whose data, tags,
    lists, companies or events changed); returns how many memberships changed."""
    ids = set(user_ids) | take(session, environment_id)
    if not ids:
        return 0
    segments = Graph.load(session, environment_id=environment_id).ordered()
    if not segments:
        return 0
    session.flush()
    now = now or utcnow()
    definitions = service.load_definitions(session, environment_id=environment_id)
    ordered = sorted(ids)
    changes: list[Change] = []
    for start in range(0, len(ordered), _CHUNK):
        chunk = ordered[start : start + _CHUNK]
        # Users just merged into these ones are no longer live: their memberships end too.
        chunk += session.scalars(
            select(User.id).where(
                User.merged_into_id.in_(chunk),
                exists().where(
                    SegmentMembership.user_id == User.id, SegmentMembership.exited_at.is_(None)
                ),
            )
        ).all()
        for segment in segments:
            changes += _apply(session, segment, definitions, now, chunk)
    _notify(session, environment_id, changes)
    return len(changes)


def refresh_segments(session: Session, *, now: datetime | None = None) -> int:
    """Recompute the segments of every environment whose answer depends on the clock (and the
    segments referring to them), queueing webhooks; returns how many memberships changed."""
    now = now or utcnow()
    environments = session.scalars(
        select(Segment.environment_id).where(Segment.time_relative.is_(True)).distinct()
    ).all()
    changed = 0
    for environment_id in environments:
        graph = Graph.load(session, environment_id=environment_id)
        moving = {id for id, segment in graph.segments.items() if segment.time_relative}
        moving |= graph.dependents(moving)
        definitions = service.load_definitions(session, environment_id=environment_id)
        for segment in graph.ordered():
            if segment.id in moving:
                changes = _apply(session, segment, definitions, now, None)
                _notify(session, environment_id, changes)
                changed += len(changes)
    return changed


# --- users touched by REST writes --------------------------------------------------------------


def refresh_touched(session: Session) -> None:
    """Re-evaluate the segments of every user noted by `touched.touch` in this session."""
    for environment_id in list(touched(session)):
        refresh_users(session, environment_id=environment_id, user_ids=())
