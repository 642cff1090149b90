"""References to users and companies in request bodies (tags, lists, company members).

A body names people as `{"id"}`, `{"user_id"}` or `{"email"}` and companies as `{"id"}` or
`{"company_id"}`. References are resolved in one query per kind, inside one environment, before
anything is written: an unknown one is a 404 naming it (and its index), and nothing is applied.
Also here: the case-insensitive name-prefix filter.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Self

from pydantic import Field, model_validator
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from audience.companies.models import Company
from audience.db import escape_like
from audience.errors import AudienceError, Conflict
from audience.schemas import Body
from audience.users.models import User
from audience.users.service import live_users

MAX_REFS = 1000


RefValue = Annotated[str, Field(min_length=1, max_length=255)]


class UserRefIn(Body):
    """One user, by exactly one of: `id` (ours), `user_id` (yours) or `email`."""

    id: RefValue | None = None
    user_id: RefValue | None = None
    email: RefValue | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if sum(value is not None for value in (self.id, self.user_id, self.email)) != 1:
            raise ValueError("give exactly one of id, user_id, email")
        return self


class CompanyRefIn(Body):
    """One company, by exactly one of: `id` (ours) or `company_id` (yours)."""

    id: RefValue | None = None
    company_id: RefValue | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        if (self.id is None) == (self.company_id is None):
            raise ValueError("give exactly one of id, company_id")
        return self


def _as_id(value: str) -> int | None:
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


def _key(kind: str, value: str) -> str:
    """The form a reference is matched in: ids as numbers ("007" is 7, like parse_id), emails
    case-insensitively, anything else as given."""
    if kind == "id":
        parsed = _as_id(value)
        return "" if parsed is None else str(parsed)
    return value.lower() if kind == "email" else value


Wanted = list[tuple[int, str, str]]  # (index in the request, kind, value as given)


def _resolved(
    wanted: Wanted, found: dict[tuple[str, str], int], what: str, field: str
) -> list[int]:
    """Row ids in request order without repeats, or a 404 for the first reference not found."""
    ids: dict[int, None] = {}
    for index, kind, value in wanted:
        row_id = found.get((kind, _key(kind, value)))
        if row_id is None:
            message = (
                f"{what} {value} not found"
                if kind == "id"
                else f"{what} with {kind} {value!r} not found"
            )
            raise AudienceError("not_found", message, status=404, field=f"{field}.{index}")
        ids[row_id] = None
    return list(ids)


def _values(wanted: Wanted, kind: str) -> set[str]:
    return {key for _, k, value in wanted if k == kind and (key := _key(k, value))}


def resolve_users(
    session: Session, *, environment_id: int, refs: Sequence[UserRefIn], field: str = "users"
) -> list[int]:
    """Internal ids of the live users `refs` name (request order, no repeats); one query per kind.

    An email shared by several users is a 409: it doesn't say which one is meant.
    """
    wanted: Wanted = []
    for index, ref in enumerate(refs):
        if ref.id is not None:
            wanted.append((index, "id", ref.id))
        elif ref.user_id is not None:
            wanted.append((index, "user_id", ref.user_id))
        elif ref.email is not None:
            wanted.append((index, "email", ref.email))
    live = live_users(environment_id)
    found: dict[tuple[str, str], int] = {}
    if ids := _values(wanted, "id"):
        rows = session.scalars(
            live.with_only_columns(User.id).where(User.id.in_([int(id) for id in ids]))
        )
        found.update((("id", str(row)), row) for row in rows)
    if user_ids := _values(wanted, "user_id"):
        pairs = session.execute(
            live.with_only_columns(User.id, User.user_id).where(User.user_id.in_(user_ids))
        )
        found.update((("user_id", str(user_id)), id) for id, user_id in pairs)
    if emails := _values(wanted, "email"):
        pairs = session.execute(
            live.with_only_columns(User.id, User.email).where(
                func.lower(User.email).in_([func.lower(email) for email in emails])
            )
        )
        for id, email in pairs:
            key = ("email", str(email).lower())
            if found.setdefault(key, id) != id:
                index = next(i for i, k, v in wanted if k == "email" and v.lower() == key[1])
                raise Conflict(
                    f"several users have email {email!r}; name them by id or user_id",
                    field=f"{field}.{index}",
                )
    return _resolved(wanted, found, "user", field)


def resolve_companies(
    session: Session, *, environment_id: int, refs: Sequence[CompanyRefIn], field: str = "companies"
) -> list[int]:
    """Internal ids of the companies `refs` name (request order, no repeats); one query per kind."""
    wanted: Wanted = []
    for index, ref in enumerate(refs):
        if ref.id is not None:
            wanted.append((index, "id", ref.id))
        elif ref.company_id is not None:
            wanted.append((index, "company_id", ref.company_id))
    scoped = select(Company.id).where(Company.environment_id == environment_id)
    found: dict[tuple[str, str], int] = {}
    if ids := _values(wanted, "id"):
        rows = session.scalars(scoped.where(Company.id.in_([int(id) for id in ids])))
        found.update((("id", str(row)), row) for row in rows)
    if company_ids := _values(wanted, "company_id"):
        pairs = session.execute(
            scoped.add_columns(Company.company_id).where(Company.company_id.in_(company_ids))
        )
        found.update((("company_id", company_id), id) for id, company_id in pairs)
    return _resolved(wanted, found, "company", field)


def name_prefix(column: InstrumentedAttribute[str], q: str) -> ColumnElement[bool]:
    """Case-insensitive "starts with" on a name column, with LIKE wildcards taken literally."""
    return func.lower(column).like(f"{escape_like(q.lower())}%", escape="\\")
