"""The `data` of each topic's delivery, built from rows already in memory (no queries).

The user is the REST user object (R-API-2) without its relation lists (`companies`, `tags`,
`segments`: they would cost queries on the ingestion path; a receiver that needs them reads
`GET /api/v1/users/{id}`), and with `last_seen_ip`/`user_agent_data` null as when the
environment keeps no tracking data.
"""

from __future__ import annotations

from typing import Any

from audience.schemas import unix
from audience.users.models import Merge, User
from audience.users.schemas import user_object

_RELATIONS = {"companies", "tags", "segments"}
_IDENTIFIERS = ("user_id", "email", "phone")


def user_data(user: User) -> dict[str, Any]:
    """The user as a webhook shows it."""
    shown = user_object(user, companies=[], tags=[], segments=[], keep_tracking_data=False)
    return shown.model_dump(mode="json", exclude=_RELATIONS)


def user_event(user: User) -> dict[str, Any]:
    """`user.created` and `user.deleted`: `{user}`."""
    return {"user": user_data(user)}


def _merge(merge: Merge) -> dict[str, Any]:
    return {
        "id": str(merge.id),
        "reason": merge.reason,
        "created_at": unix(merge.created_at),
        "undone_at": unix(merge.undone_at),
    }


def merge_event(merge: Merge, *, source: User, target: User) -> dict[str, Any]:
    """`user.merged`: the survivor, and the merged-away user's identifiers before the merge."""
    before = merge.moved.get("from", {})
    merged = {"id": str(source.id), "user_key": source.user_key}
    merged |= {name: before.get(name, getattr(source, name)) for name in _IDENTIFIERS}
    return {"merge": _merge(merge), "user": user_data(target), "merged_user": merged}


def unmerge_event(merge: Merge, *, source: User, target: User) -> dict[str, Any]:
    """`user.unmerged`: the survivor and the user brought back, as they are after the undo."""
    return {"merge": _merge(merge), "user": user_data(target), "restored_user": user_data(source)}


def segment_event(*, segment_id: int, segment_name: str, user: User) -> dict[str, Any]:
    """`segment.entered` / `segment.exited`: `{segment: {id, name}, user}`."""
    return {"segment": {"id": str(segment_id), "name": segment_name}, "user": user_data(user)}
