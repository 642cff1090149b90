"""Users: create, update, look up and list, with the attribute history of each change."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, insert, or_, select
from sqlalchemy.orm import Session

from audience.attributes.service import write_custom_attributes
from audience.db import escape_like, utcnow
from audience.environments.models import Environment
from audience.errors import AudienceError, Conflict, Invalid, NotFound
from audience.pagination import Order, Page, PageParams, paginate
from audience.schemas import unix
from audience.users import identity
from audience.users.models import AttributeChange, Identity, User
from audience.webhooks.payloads import user_event
from audience.webhooks.service import queue_event

# Standard attributes a listing can sort by (scalar columns; custom attributes come with search).
SORTABLE = (
    "id",
    "created_at",
    "updated_at",
    "signed_up_at",
    "first_seen_at",
    "last_seen_at",
    "last_request_at",
    "last_heard_from_at",
    "session_count",
    "page_views",
    "name",
    "first_name",
    "last_name",
    "email",
    "user_id",
    "phone",
    "gender",
    "status",
    "city",
    "region",
    "country",
    "postal_code",
    "timezone",
    "language",
    "browser",
    "os",
    "device",
    "owner_id",
    "referrer",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "unsubscribed_from_emails",
)
LOOKUP_KEYS = ("user_id", "email", "phone", "user_key", "anonymous_id")
_DEFAULTS: dict[str, Any] = {
    "gender": "unknown",
    "status": "visitor",
    "unsubscribed_from_emails": False,
}


@dataclass(frozen=True)
class ChangeSource:
    """Where a change came from, for the attribute history: api, ingest, agent or import."""

    kind: str
    ref: str | None = None


def live_users(environment_id: int) -> Select[User]:
    """Every query of users starts here: one environment, merged-away users hidden."""
    return select(User).where(User.environment_id == environment_id, User.merged_into_id.is_(None))


def get_user(session: Session, *, environment_id: int, id: int) -> User:
    user = session.scalar(live_users(environment_id).where(User.id == id))
    if user is None:
        raise NotFound("user", id)
    return user


def _history_value(value: Any) -> Any:
    return unix(value) if isinstance(value, datetime) else value


_HISTORY_LATER = "attribute_changes_later"


def record_changes(
    session: Session, user: User, changes: dict[str, tuple[Any, Any]], source: ChangeSource
) -> None:
    """Write one history row per change (R-ATTR-4), or keep them for `write_history`."""
    if not changes:
        return
    now = utcnow()
    rows = [
        {
            "environment_id": user.environment_id,
            "attribute": name,
            "old_value": _history_value(old),
            "new_value": _history_value(new),
            "source": source.kind,
            "source_ref": source.ref,
            "changed_at": now,
        }
        for name, (old, new) in changes.items()
    ]
    later: list[tuple[User, list[dict[str, Any]]]] | None = session.info.get(_HISTORY_LATER)
    if later is not None:
        later.append((user, rows))
        return
    if user.id is None:
        session.flush()
    session.execute(insert(AttributeChange), [{**row, "user_id": user.id} for row in rows])


def history_later(session: Session) -> list[tuple[User, list[dict[str, Any]]]]:
    """From now on keep `session`'s history rows until `write_history`: a batch that changes
    many users (some not inserted yet) writes them all in one statement. Returns the kept rows,
    so the caller can drop those of a change it rolled back to a savepoint."""
    later: list[tuple[User, list[dict[str, Any]]]] = session.info.setdefault(_HISTORY_LATER, [])
    return later


def write_history(session: Session) -> None:
    """Write the history rows kept since `history_later` (their users are flushed first)."""
    later: list[tuple[User, list[dict[str, Any]]]] = session.info.get(_HISTORY_LATER) or []
    if not later:
        return
    session.flush()
    rows = [{**row, "user_id": user.id} for user, rows in later for row in rows]
    later.clear()
    session.execute(insert(AttributeChange), rows)


def _check_user_id(
    session: Session,
    environment_id: int,
    value: str,
    user: User | None,
    *,
    check_owner: bool = True,
) -> None:
    """A usable user_id; with `check_owner`, also one no other user holds (409)."""
    if value != value.strip():
        raise Invalid("user_id must not have leading or trailing spaces", field="user_id")
    if identity.is_blocked(value):
        raise Invalid(f"{value!r} is a placeholder, not a user id", field="user_id")
    if not check_owner:
        return
    taken = session.scalar(
        select(User.id).where(User.environment_id == environment_id, User.user_id == value)
    )
    if taken is not None and (user is None or taken != user.id):
        raise Conflict(f"user {taken} already has user_id {value!r}", field="user_id")


def _standard_values(
    session: Session,
    environment: Environment,
    user: User | None,
    data: dict[str, Any],
    *,
    user_id_is_free: bool = False,
) -> dict[str, Any]:
    """Validate and normalise the standard fields of a write; returns column -> value."""
    values = dict(data)
    values.pop("custom_attributes", None)
    avatar = values.pop("avatar", None)
    if "avatar" in data:
        values["avatar_url"] = avatar.get("image_url") if avatar else None
    if values.get("user_id") is not None:
        _check_user_id(
            session, environment.id, values["user_id"], user, check_owner=not user_id_is_free
        )
    email = values.get("email")
    if email is not None and (email != email.strip() or not identity.is_email(email)):
        raise Invalid(f"{email!r} is not an email address", field="email")
    if "phone" in values:
        raw = values["phone"]
        region = environment.settings.get("phone_region")
        values["phone_original"] = raw
        values["phone"] = raw and (identity.normalize_phone(raw, region) or raw)
    for column, default in _DEFAULTS.items():
        if column in values and values[column] is None:
            values[column] = default
    return values


def _newer_only(user: User, data: dict[str, Any], moment: float) -> dict[str, Any]:
    """`data` without the attributes written by newer data already (R-ATTR-5); stamps the rest.

    Times are the data's own (a message's corrected timestamp; now for the REST API), so a
    message that arrives late never overwrites what a later one set.
    """
    times = dict(user.attribute_times or {})
    kept: dict[str, Any] = {}
    for key, value in data.items():
        if key == "custom_attributes" and isinstance(value, dict):
            fresh = {
                name: item
                for name, item in value.items()
                if times.get(f"custom_attributes.{name}", float("-inf")) <= moment
            }
            times.update(dict.fromkeys((f"custom_attributes.{name}" for name in fresh), moment))
            if fresh:
                kept[key] = fresh
        elif times.get(key, float("-inf")) <= moment:
            kept[key] = value
            times[key] = moment
    user.attribute_times = times
    return kept


def _derived_name(first: str | None, last: str | None) -> str | None:
    return " ".join(part for part in (first, last) if part) or None


def _apply(
    session: Session,
    environment: Environment,
    user: User,
    data: dict[str, Any],
    source: ChangeSource,
    *,
    created: bool,
    on_invalid: Callable[[Invalid], None] | None = None,
    as_of: datetime | None = None,
    user_id_is_free: bool = False,
) -> None:
    data = _newer_only(user, data, (as_of or utcnow()).timestamp())
    values = _standard_values(
        session, environment, None if created else user, data, user_id_is_free=user_id_is_free
    )
    was_identified = bool(user.user_id or user.email or user.phone)
    old_derived = _derived_name(user.first_name, user.last_name)
    changes: dict[str, tuple[Any, Any]] = {}
    for column, value in values.items():
        old = getattr(user, column)
        if old != value:
            setattr(user, column, value)
            changes[column] = (old, value)
    if "name" not in values and user.name in (None, old_derived):
        name = _derived_name(user.first_name, user.last_name)
        if name != user.name:
            changes["name"] = (user.name, name)
            user.name = name
    now_identified = bool(user.user_id or user.email or user.phone)
    if (
        now_identified
        and not was_identified
        and "status" not in values
        and user.status == "visitor"
    ):
        changes["status"] = ("visitor", "user")
        user.status = "user"
    if data.get("custom_attributes"):
        user.custom_attributes, custom = write_custom_attributes(
            session,
            environment_id=environment.id,
            model="user",
            current=user.custom_attributes or {},
            changes=data["custom_attributes"],
            on_invalid=on_invalid,
        )
        changes.update({f"custom_attributes.{name}": change for name, change in custom.items()})
    if changes or created:
        user.updated_at = utcnow()
        record_changes(session, user, changes, source)


def create_user(
    session: Session,
    *,
    environment: Environment,
    data: dict[str, Any],
    source: ChangeSource,
    flush: bool = True,
    user_id_is_free: bool = False,
    id: int | None = None,
    add: bool = True,
) -> User:
    """A new user from `data` (UserWrite's fields).

    Ingestion passes `flush=False` so that a batch's new users are inserted together when the
    batch flushes, and `user_id_is_free=True` when it has just looked the user_id up itself
    (the unique constraint still guards against a race). `id` is for a caller that allocates
    ids itself, and `add=False` for one that inserts the row itself (see ingest/processor.py).
    """
    now = utcnow()
    user = User(
        id=id,
        environment_id=environment.id,
        user_key=identity.new_user_key(),
        custom_attributes={},
        session_count=0,
        page_views=0,
        created_at=now,
        updated_at=now,
        attribute_times={},
        **_DEFAULTS,
    )
    if add:
        session.add(user)
    _apply(session, environment, user, data, source, created=True, user_id_is_free=user_id_is_free)
    if flush:
        session.flush()
    queue_event(
        session,
        environment_id=environment.id,
        topic="user.created",
        data=lambda: user_event(user),
        user=user,
    )
    return user


def update_user(
    session: Session,
    *,
    environment: Environment,
    user: User,
    data: dict[str, Any],
    source: ChangeSource,
    on_invalid: Callable[[Invalid], None] | None = None,
    as_of: datetime | None = None,
) -> User:
    """Apply `data` (UserWrite's fields); `on_invalid` skips bad custom attributes instead.

    `as_of` is the data's own time (a message's timestamp): attributes written by newer data
    are left alone (R-ATTR-5). Without it the data is as of now.
    """
    _apply(
        session,
        environment,
        user,
        data,
        source,
        created=False,
        on_invalid=on_invalid,
        as_of=as_of,
    )
    return user


def lookup_user(session: Session, *, environment: Environment, key: str, value: str) -> User:
    """The one user a key points to: 404 when none, 409 when several share an email or phone."""
    query = live_users(environment.id)
    if key == "user_id":
        query = query.where(User.user_id == value)
    elif key == "user_key":
        query = query.where(User.user_key == value)
    elif key == "email":
        query = query.where(func.lower(User.email) == func.lower(value))
    elif key == "phone":
        region = environment.settings.get("phone_region")
        query = query.where(User.phone == (identity.normalize_phone(value, region) or value))
    elif key == "anonymous_id":
        query = query.join(Identity, Identity.user_id == User.id).where(
            Identity.environment_id == environment.id,
            Identity.kind == "anonymous_id",
            Identity.value == value,
        )
    else:
        raise AudienceError("parameter_invalid", f"unknown lookup key {key!r}", field=key)
    users = list(session.scalars(query.limit(2)))
    if not users:
        raise NotFound("user with " + key, repr(value))
    if len(users) > 1:
        raise Conflict(f"several users have {key} {value!r}; look up by user_id or id", field=key)
    return users[0]


def list_users(
    session: Session,
    *,
    environment_id: int,
    q: str | None,
    sort: str,
    descending: bool,
    params: PageParams,
) -> Page:
    if sort not in SORTABLE:
        raise AudienceError(
            "parameter_invalid",
            f"can't sort by {sort!r}; use one of {', '.join(SORTABLE)}",
            field="sort",
        )
    query = live_users(environment_id)
    if q is not None and (match := text_match(q)) is not None:
        query = query.where(match)
    order = Order(sort, getattr(User, sort), User.id, descending)
    return paginate(session, query, order=order, params=params)


def text_match(q: str) -> ColumnElement[bool] | None:
    """Free-text search (R-SEG-4) over name, email, phone, user_id and user_key; None if blank."""
    term = q.strip()
    if not term:
        return None
    pattern = f"%{escape_like(term.lower())}%"
    return or_(
        func.lower(User.name).like(pattern, escape="\\"),
        func.lower(User.email).like(pattern, escape="\\"),
        User.phone.like(f"%{escape_like(term)}%", escape="\\"),
        User.user_id.like(f"%{escape_like(term)}%", escape="\\"),
        User.user_key == term,
    )


def history(session: Session, *, environment_id: int, user_id: int, params: PageParams) -> Page:
    get_user(session, environment_id=environment_id, id=user_id)
    query = select(AttributeChange).where(
        AttributeChange.environment_id == environment_id, AttributeChange.user_id == user_id
    )
    order = Order("id", AttributeChange.id, AttributeChange.id, descending=True)
    return paginate(session, query, order=order, params=params)


def relations(
    session: Session, *, user_ids: list[int]
) -> tuple[dict[int, list[Any]], dict[int, list[Any]]]:
    """Companies and tags of many users in two queries: {user id: [company], ...}, {...: [tag]}."""
    from audience.companies.models import Company, Membership
    from audience.tags.models import Tag, UserTag

    companies: dict[int, list[Any]] = {id: [] for id in user_ids}
    tags: dict[int, list[Any]] = {id: [] for id in user_ids}
    if not user_ids:
        return companies, tags
    member_rows = session.execute(
        select(Membership.user_id, Company)
        .join(Company, Company.id == Membership.company_id)
        .where(Membership.user_id.in_(user_ids))
        .order_by(Membership.member_since, Company.id)
    )
    for user_id, company in member_rows:
        companies[user_id].append(company)
    tag_rows = session.execute(
        select(UserTag.user_id, Tag)
        .join(Tag, Tag.id == UserTag.tag_id)
        .where(UserTag.user_id.in_(user_ids))
        .order_by(Tag.name)
    )
    for user_id, tag in tag_rows:
        tags[user_id].append(tag)
    return companies, tags


def kind_counts(session: Session, *, environment_id: int) -> dict[str, int]:
    """How many live users are anonymous, identified, and contacts (People's header)."""
    identified = or_(User.user_id.is_not(None), User.email.is_not(None), User.phone.is_not(None))
    contact = or_(
        identified,
        User.web_push_subscription.is_not(None),
        User.last_heard_from_at.is_not(None),
        User.fcm_key.is_not(None),
    )
    query = live_users(environment_id).with_only_columns(
        func.count(),
        func.count(case((identified, 1))),
        func.count(case((contact, 1))),
    )
    total, known, contacts = session.execute(query).one()
    return {"all": total, "anonymous": total - known, "identified": known, "contacts": contacts}
