"""Tags: create, rename, delete, list, and attach to or detach from users and companies."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from audience.companies.models import Company
from audience.db import get_scoped, insert_ignore, utcnow
from audience.errors import Conflict
from audience.pagination import Order, Page, PageParams, paginate
from audience.refs import (
    CompanyRefIn,
    UserRefIn,
    name_prefix,
    resolve_companies,
    resolve_users,
)
from audience.segments.touched import touch
from audience.tags.models import CompanyTag, Tag, UserTag
from audience.users.models import User
from audience.users.service import get_user, live_users


def get_tag(session: Session, *, environment_id: int, id: int) -> Tag:
    return get_scoped(session, Tag, environment_id=environment_id, id=id, what="tag")


def _named(session: Session, environment_id: int, name: str) -> Tag | None:
    return session.scalar(select(Tag).where(Tag.environment_id == environment_id, Tag.name == name))


def _taken(name: str) -> Conflict:
    return Conflict(f"a tag named {name!r} already exists", field="name")


def _save(session: Session, tag: Tag, name: str) -> None:
    """Flush a new or renamed tag; a name taken meanwhile by another request is a 409."""
    try:
        with session.begin_nested():
            session.add(tag)
            session.flush()
    except IntegrityError:
        raise _taken(name) from None


def create_tag(session: Session, *, environment_id: int, name: str) -> Tag:
    """A new tag; a name already in use is a 409 (rename or attach the existing one instead)."""
    if _named(session, environment_id, name) is not None:
        raise _taken(name)
    tag = Tag(environment_id=environment_id, name=name, created_at=utcnow())
    _save(session, tag, name)
    return tag


def rename_tag(session: Session, *, environment_id: int, id: int, name: str) -> Tag:
    tag = get_tag(session, environment_id=environment_id, id=id)
    if name == tag.name:
        return tag
    if _named(session, environment_id, name) is not None:
        raise _taken(name)
    tag.name = name
    _save(session, tag, name)
    _touch_tagged(session, environment_id, tag.id)
    return tag


def _touch_tagged(session: Session, environment_id: int, tag_id: int) -> None:
    """Segments naming the tag change for the users who have it (segments.touched)."""
    tagged = session.scalars(select(UserTag.user_id).where(UserTag.tag_id == tag_id))
    touch(session, environment_id=environment_id, user_ids=tagged)


def delete_tag(session: Session, *, environment_id: int, id: int) -> None:
    """Delete a tag; the database cascades to its user and company links."""
    tag = get_tag(session, environment_id=environment_id, id=id)
    _touch_tagged(session, environment_id, tag.id)
    session.delete(tag)
    session.flush()


def list_tags(session: Session, *, environment_id: int, q: str | None, params: PageParams) -> Page:
    """Tags by name; `q` keeps those whose name starts with it (case-insensitive)."""
    query = select(Tag).where(Tag.environment_id == environment_id)
    if q and q.strip():
        query = query.where(name_prefix(Tag.name, q.strip()))
    return paginate(session, query, order=Order("name", Tag.name, Tag.id), params=params)


def counts(session: Session, *, tag_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
    """{tag id: (live users, companies)} for many tags in two queries."""
    result = {id: (0, 0) for id in tag_ids}
    if not tag_ids:
        return result
    users = session.execute(
        select(UserTag.tag_id, func.count())
        .join(User, User.id == UserTag.user_id)
        .where(UserTag.tag_id.in_(tag_ids), User.merged_into_id.is_(None))
        .group_by(UserTag.tag_id)
    )
    for tag_id, count in users:
        result[tag_id] = (count, 0)
    companies = session.execute(
        select(CompanyTag.tag_id, func.count())
        .where(CompanyTag.tag_id.in_(tag_ids))
        .group_by(CompanyTag.tag_id)
    )
    for tag_id, count in companies:
        result[tag_id] = (result[tag_id][0], count)
    return result


def tag_users(session: Session, *, environment_id: int, id: int, refs: Sequence[UserRefIn]) -> Tag:
    """Attach a tag to every user `refs` names; all are found first, or nothing is applied."""
    tag = get_tag(session, environment_id=environment_id, id=id)
    user_ids = resolve_users(session, environment_id=environment_id, refs=refs)
    now = utcnow()
    rows = [{"tag_id": tag.id, "user_id": user_id, "tagged_at": now} for user_id in user_ids]
    insert_ignore(session, UserTag, rows)
    touch(session, environment_id=environment_id, user_ids=user_ids)
    return tag


def tag_user(
    session: Session, *, environment_id: int, user_id: int, tag_id: int | None, name: str | None
) -> Tag:
    """Tag one user with a tag given by id, or by name (the tag is created when missing)."""
    user = get_user(session, environment_id=environment_id, id=user_id)
    if tag_id is not None:
        tag = get_tag(session, environment_id=environment_id, id=tag_id)
    else:
        tag = _tag_named(session, environment_id, name or "")
    insert_ignore(session, UserTag, [{"tag_id": tag.id, "user_id": user.id, "tagged_at": utcnow()}])
    touch(session, environment_id=environment_id, user_ids=[user.id])
    return tag


def _tag_named(session: Session, environment_id: int, name: str) -> Tag:
    """The tag called `name`, created when missing (also when another request races us)."""
    tag = _named(session, environment_id, name)
    if tag is not None:
        return tag
    try:
        with session.begin_nested():
            tag = Tag(environment_id=environment_id, name=name, created_at=utcnow())
            session.add(tag)
            session.flush()
    except IntegrityError:
        tag = _named(session, environment_id, name)
        if tag is None:  # the conflicting row is gone again: let the client retry
            raise Conflict(f"tag {name!r} was changed concurrently; retry", field="name") from None
    return tag


def untag_user(session: Session, *, environment_id: int, id: int, user_id: int) -> Tag:
    """Detach a tag from a user; a user without the tag is fine (idempotent), unknown ones 404."""
    tag = get_tag(session, environment_id=environment_id, id=id)
    user = get_user(session, environment_id=environment_id, id=user_id)
    session.execute(delete(UserTag).where(UserTag.tag_id == tag.id, UserTag.user_id == user.id))
    touch(session, environment_id=environment_id, user_ids=[user.id])
    return tag


def tagged_users(session: Session, *, environment_id: int, id: int, params: PageParams) -> Page:
    tag = get_tag(session, environment_id=environment_id, id=id)
    query = (
        live_users(environment_id)
        .join(UserTag, UserTag.user_id == User.id)
        .where(UserTag.tag_id == tag.id)
    )
    return paginate(session, query, order=Order("id", User.id, User.id), params=params)


def user_tags(session: Session, *, environment_id: int, user_id: int, params: PageParams) -> Page:
    """The tags of one user, by name."""
    user = get_user(session, environment_id=environment_id, id=user_id)
    query = (
        select(Tag)
        .join(UserTag, UserTag.tag_id == Tag.id)
        .where(Tag.environment_id == environment_id, UserTag.user_id == user.id)
    )
    return paginate(session, query, order=Order("name", Tag.name, Tag.id), params=params)


def tag_companies(
    session: Session, *, environment_id: int, id: int, refs: Sequence[CompanyRefIn]
) -> Tag:
    """Attach a tag to every company `refs` names; all are found first, or nothing is applied."""
    tag = get_tag(session, environment_id=environment_id, id=id)
    company_ids = resolve_companies(session, environment_id=environment_id, refs=refs)
    now = utcnow()
    rows = [{"tag_id": tag.id, "company_id": cid, "tagged_at": now} for cid in company_ids]
    insert_ignore(session, CompanyTag, rows)
    return tag


def untag_company(session: Session, *, environment_id: int, id: int, company_id: int) -> Tag:
    tag = get_tag(session, environment_id=environment_id, id=id)
    company = get_scoped(
        session, Company, environment_id=environment_id, id=company_id, what="company"
    )
    session.execute(
        delete(CompanyTag).where(CompanyTag.tag_id == tag.id, CompanyTag.company_id == company.id)
    )
    return tag


def tagged_companies(session: Session, *, environment_id: int, id: int, params: PageParams) -> Page:
    tag = get_tag(session, environment_id=environment_id, id=id)
    query = (
        select(Company)
        .join(CompanyTag, CompanyTag.company_id == Company.id)
        .where(Company.environment_id == environment_id, CompanyTag.tag_id == tag.id)
    )
    return paginate(session, query, order=Order("id", Company.id, Company.id), params=params)
