"""Lists: static groups of users, created, renamed, deleted and filled by hand or by the API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audience.db import get_scoped, insert_ignore, utcnow
from audience.errors import Conflict
from audience.lists.models import ListMember, UserList
from audience.pagination import Order, Page, PageParams, paginate
from audience.refs import UserRefIn, name_prefix, resolve_users
from audience.segments.touched import touch
from audience.users.models import User
from audience.users.service import get_user, live_users


def get_list(session: Session, *, environment_id: int, id: int) -> UserList:
    return get_scoped(session, UserList, environment_id=environment_id, id=id, what="list")


def _check_name(session: Session, environment_id: int, name: str, id: int | None) -> None:
    taken = session.scalar(
        select(UserList.id).where(UserList.environment_id == environment_id, UserList.name == name)
    )
    if taken is not None and taken != id:
        raise Conflict(f"a list named {name!r} already exists", field="name")


def _save(session: Session, user_list: UserList, name: str) -> None:
    """Flush a new or renamed list; a name taken meanwhile by another request is a 409."""
    try:
        with session.begin_nested():
            session.add(user_list)
            session.flush()
    except IntegrityError:
        raise Conflict(f"a list named {name!r} already exists", field="name") from None


def create_list(
    session: Session, *, environment_id: int, name: str, description: str | None
) -> UserList:
    _check_name(session, environment_id, name, None)
    now = utcnow()
    user_list = UserList(
        environment_id=environment_id,
        name=name,
        description=description,
        created_at=now,
        updated_at=now,
    )
    _save(session, user_list, name)
    return user_list


def update_list(
    session: Session, *, environment_id: int, id: int, data: dict[str, Any]
) -> UserList:
    """Change the name and/or description (`data` holds only the fields that were sent)."""
    user_list = get_list(session, environment_id=environment_id, id=id)
    name = data.get("name", user_list.name)
    if name != user_list.name:
        _check_name(session, environment_id, name, user_list.id)
        _touch_members(session, user_list)
    description = data.get("description", user_list.description)
    if (name, description) != (user_list.name, user_list.description):
        user_list.name = name
        user_list.description = description
        user_list.updated_at = utcnow()
        _save(session, user_list, name)
    return user_list


def delete_list(session: Session, *, environment_id: int, id: int) -> None:
    """Delete a list; the database cascades to its memberships (the users stay)."""
    user_list = get_list(session, environment_id=environment_id, id=id)
    _touch_members(session, user_list)
    session.delete(user_list)
    session.flush()


def _touch_members(session: Session, user_list: UserList) -> None:
    """Segments naming the list change for its members (segments.touched)."""
    members = session.scalars(select(ListMember.user_id).where(ListMember.list_id == user_list.id))
    touch(session, environment_id=user_list.environment_id, user_ids=members)


def list_lists(session: Session, *, environment_id: int, q: str | None, params: PageParams) -> Page:
    """Lists by name; `q` keeps those whose name starts with it (case-insensitive)."""
    query = select(UserList).where(UserList.environment_id == environment_id)
    if q and q.strip():
        query = query.where(name_prefix(UserList.name, q.strip()))
    return paginate(session, query, order=Order("name", UserList.name, UserList.id), params=params)


def counts(session: Session, *, list_ids: Sequence[int]) -> dict[int, int]:
    """{list id: live members} for many lists in one query."""
    result = dict.fromkeys(list_ids, 0)
    if not list_ids:
        return result
    rows = session.execute(
        select(ListMember.list_id, func.count())
        .join(User, User.id == ListMember.user_id)
        .where(ListMember.list_id.in_(list_ids), User.merged_into_id.is_(None))
        .group_by(ListMember.list_id)
    )
    result.update((list_id, count) for list_id, count in rows)
    return result


def _add(session: Session, user_list: UserList, user_ids: list[int]) -> None:
    """Add members, skipping those already in; `updated_at` moves only when someone was added."""
    existing = set(
        session.scalars(
            select(ListMember.user_id).where(
                ListMember.list_id == user_list.id, ListMember.user_id.in_(user_ids)
            )
        )
    )
    now = utcnow()
    rows = [
        {"list_id": user_list.id, "user_id": user_id, "added_at": now}
        for user_id in user_ids
        if user_id not in existing
    ]
    if rows:
        insert_ignore(session, ListMember, rows)
        user_list.updated_at = now
        session.flush()
        touch(session, environment_id=user_list.environment_id, user_ids=user_ids)


def add_users(
    session: Session, *, environment_id: int, id: int, refs: Sequence[UserRefIn]
) -> UserList:
    """Add every user `refs` names; all are found first, or nothing is applied."""
    user_list = get_list(session, environment_id=environment_id, id=id)
    _add(session, user_list, resolve_users(session, environment_id=environment_id, refs=refs))
    return user_list


def add_user(session: Session, *, environment_id: int, id: int, user_id: int) -> UserList:
    user = get_user(session, environment_id=environment_id, id=user_id)
    user_list = get_list(session, environment_id=environment_id, id=id)
    _add(session, user_list, [user.id])
    return user_list


def remove_user(session: Session, *, environment_id: int, id: int, user_id: int) -> UserList:
    """Take a user off a list; one who isn't on it is fine (idempotent), unknown ones 404."""
    user_list = get_list(session, environment_id=environment_id, id=id)
    user = get_user(session, environment_id=environment_id, id=user_id)
    removed = session.scalar(
        delete(ListMember)
        .where(ListMember.list_id == user_list.id, ListMember.user_id == user.id)
        .returning(ListMember.user_id)
    )
    if removed is not None:
        user_list.updated_at = utcnow()
        session.flush()
        touch(session, environment_id=environment_id, user_ids=[user.id])
    return user_list


def members(session: Session, *, environment_id: int, id: int, params: PageParams) -> Page:
    user_list = get_list(session, environment_id=environment_id, id=id)
    query = (
        live_users(environment_id)
        .join(ListMember, ListMember.user_id == User.id)
        .where(ListMember.list_id == user_list.id)
    )
    return paginate(session, query, order=Order("id", User.id, User.id), params=params)


def user_lists(session: Session, *, environment_id: int, user_id: int, params: PageParams) -> Page:
    """The lists one user is in, by name."""
    user = get_user(session, environment_id=environment_id, id=user_id)
    query = (
        select(UserList)
        .join(ListMember, ListMember.list_id == UserList.id)
        .where(UserList.environment_id == environment_id, ListMember.user_id == user.id)
    )
    return paginate(session, query, order=Order("name", UserList.name, UserList.id), params=params)
