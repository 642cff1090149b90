"""Companies: create-or-update by company_id, look up, list, delete, and their members."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import Select, delete, func, or_, select
from sqlalchemy.orm import Session

from audience.attributes.service import write_custom_attributes
from audience.companies.models import Company, Membership
from audience.db import escape_like, get_scoped, insert_ignore, one_of, utcnow
from audience.environments.models import Environment
from audience.errors import AudienceError, Conflict, Invalid, NotFound
from audience.pagination import Order, Page, PageParams, paginate
from audience.schemas import parse_id
from audience.segments.touched import touch
from audience.tags.models import CompanyTag, Tag
from audience.users import identity
from audience.users import service as users
from audience.users.models import User

# Standard attributes a listing can sort by (scalar columns).
SORTABLE = (
    "id",
    "created_at",
    "updated_at",
    "remote_created_at",
    "name",
    "company_id",
    "email",
    "size",
    "plan",
    "industry",
    "city",
    "region",
    "country",
    "postal_code",
    "website",
)
MEMBERSHIP_MODES = ("multiple", "single")


def _no_nul(value: str, field: str) -> None:
    # PostgreSQL can't store NUL in text or jsonb: refuse it as bad input, not a server error.
    if "\x00" in value:
        raise Invalid("text must not contain NUL characters", field=field)


def _check_parameter(value: str, field: str) -> None:
    if "\x00" in value:
        raise AudienceError(
            "parameter_invalid", "text must not contain NUL characters", field=field
        )


def companies_of(environment_id: int) -> Select[Company]:
    """Every query of companies starts here: one environment."""
    return select(Company).where(Company.environment_id == environment_id)


def get_company(session: Session, *, environment_id: int, id: int) -> Company:
    return get_scoped(session, Company, environment_id=environment_id, id=id, what="company")


def lookup_company(session: Session, *, environment_id: int, company_id: str) -> Company:
    _check_parameter(company_id, "company_id")
    company = session.scalar(companies_of(environment_id).where(Company.company_id == company_id))
    if company is None:
        raise NotFound("company with company_id", repr(company_id))
    return company


def _check_company_id(value: Any) -> str:
    if value is None:
        raise Invalid("company_id can't be removed", field="company_id")
    if not isinstance(value, str) or not value.strip():
        raise Invalid("company_id must be a non-empty string", field="company_id")
    if value != value.strip():
        raise Invalid("company_id must not have leading or trailing spaces", field="company_id")
    if len(value) > 255:
        raise Invalid("company_id is over the limit of 255 characters", field="company_id")
    _no_nul(value, "company_id")
    return value


def _check_custom(changes: dict[str, Any]) -> None:
    """NUL anywhere in a name or (operand) value; shapes are checked by the attribute rules."""
    for name, raw in changes.items():
        field = f"custom_attributes.{name}"
        _no_nul(name, field)
        operands = list(raw.items()) if isinstance(raw, dict) else [("", raw)]
        for operation, operand in operands:
            _no_nul(operation, field)
            for item in operand if isinstance(operand, list) else [operand]:
                if isinstance(item, str):
                    _no_nul(item, field)


def check_company(data: dict[str, Any]) -> dict[str, Any]:
    """Validate the standard fields of a write (no database needed); returns column -> value."""
    values = {column: value for column, value in data.items() if column != "custom_attributes"}
    if "company_id" in values:
        _check_company_id(values["company_id"])
    for column, value in values.items():
        if isinstance(value, str):
            _no_nul(value, column)
    email = values.get("email")
    if email is not None and (email != email.strip() or not identity.is_email(email)):
        raise Invalid(f"{email!r} is not an email address", field="email")
    for index, number in enumerate(values.get("phone_numbers") or []):
        _no_nul(number, f"phone_numbers.{index}")
        if not number.strip():
            raise Invalid("a phone number must not be blank", field=f"phone_numbers.{index}")
    if data.get("custom_attributes"):
        _check_custom(data["custom_attributes"])
    return values


def write_company(
    session: Session, environment_id: int, company: Company, data: dict[str, Any]
) -> bool:
    """Set `data` on `company` (nothing set when it raises Invalid); whether anything changed.

    Unflushed, and the members' segments are not touched: see `_apply`, `ingest.joins`."""
    values = check_company(data)
    new_id = values.get("company_id", company.company_id)
    if new_id != company.company_id:
        taken = session.scalar(
            select(Company.id).where(
                Company.environment_id == environment_id, Company.company_id == new_id
            )
        )
        if taken is not None:
            raise Conflict(f"company {taken} already has company_id {new_id!r}", field="company_id")
    custom: dict[str, Any] = {}
    if data.get("custom_attributes"):
        attributes, custom = write_custom_attributes(
            session,
            environment_id=environment_id,
            model="company",
            current=company.custom_attributes or {},
            changes=data["custom_attributes"],
        )
        if custom:
            company.custom_attributes = attributes
    changed = bool(custom)
    for column, value in values.items():
        if getattr(company, column) != value:
            setattr(company, column, value)
            changed = True
    if changed:
        company.updated_at = utcnow()
    return changed


def _apply(session: Session, environment_id: int, company: Company, data: dict[str, Any]) -> None:
    if write_company(session, environment_id, company, data):
        touch_members(session, environment_id, [company.id])
    session.flush()


def touch_members(session: Session, environment_id: int, company_ids: Collection[int]) -> None:
    """Segments with company conditions change for the companies' users (segments.touched)."""
    if not company_ids:
        return
    members = session.scalars(
        select(Membership.user_id).where(Membership.company_id.in_(company_ids))
    )
    touch(session, environment_id=environment_id, user_ids=members)


def companies_by_company_id(
    session: Session, *, environment_id: int, company_ids: Collection[str]
) -> dict[str, Company]:
    """The companies with these `company_id`s, created (with no attributes yet) where missing."""
    wanted = companies_of(environment_id).where(one_of(session, Company.company_id, company_ids))
    found = {company.company_id: company for company in session.scalars(wanted)}
    missing = sorted(set(company_ids) - found.keys())
    if missing:
        now = utcnow()
        # A concurrent create of the same company_id waits for the other transaction, then
        # inserts nothing: both writers end up updating the one row, neither fails.
        insert_ignore(
            session,
            Company,
            [
                {
                    "environment_id": environment_id,
                    "company_id": company_id,
                    "custom_attributes": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for company_id in missing
            ],
        )
        created = companies_of(environment_id).where(one_of(session, Company.company_id, missing))
        found.update((company.company_id, company) for company in session.scalars(created))
    return found


def save_company(session: Session, *, environment: Environment, data: dict[str, Any]) -> Company:
    """Create the company, or update it when its `company_id` exists (Intercom's semantics)."""
    if data.get("company_id") is None:
        raise Invalid("company_id is required", field="company_id")
    check_company(data)  # reject bad input before anything is written
    company_id: str = data["company_id"]
    company = companies_by_company_id(
        session, environment_id=environment.id, company_ids=[company_id]
    )[company_id]
    _apply(session, environment.id, company, data)
    return company


def update_company(
    session: Session, *, environment: Environment, company: Company, data: dict[str, Any]
) -> Company:
    _apply(session, environment.id, company, data)
    return company


def delete_company(session: Session, *, environment_id: int, id: int) -> None:
    # Memberships and tags go with it (FK cascades); events keep their rows with company unset.
    company = get_company(session, environment_id=environment_id, id=id)
    touch_members(session, environment_id, [company.id])
    session.delete(company)
    session.flush()


def _order(sortable: tuple[str, ...], sort: str, model: type[Any], descending: bool) -> Order:
    if sort not in sortable:
        raise AudienceError(
            "parameter_invalid",
            f"can't sort by {sort!r}; use one of {', '.join(sortable)}",
            field="sort",
        )
    return Order(sort, getattr(model, sort), model.id, descending)


def list_companies(
    session: Session,
    *,
    environment_id: int,
    q: str | None,
    sort: str,
    descending: bool,
    params: PageParams,
) -> Page:
    order = _order(SORTABLE, sort, Company, descending)
    query = companies_of(environment_id)
    if q and q.strip():
        _check_parameter(q, "q")
        pattern = f"%{escape_like(q.strip().lower())}%"
        query = query.where(
            or_(
                func.lower(Company.name).like(pattern, escape="\\"),
                func.lower(Company.company_id).like(pattern, escape="\\"),
            )
        )
    return paginate(session, query, order=order, params=params)


def relations(
    session: Session, *, environment_id: int, company_ids: list[int]
) -> tuple[dict[int, int], dict[int, list[Tag]]]:
    """User counts and tags of many companies in two queries: {id: count}, {id: [tag]}."""
    counts = dict.fromkeys(company_ids, 0)
    tags: dict[int, list[Tag]] = {id: [] for id in company_ids}
    if not company_ids:
        return counts, tags
    count_rows = session.execute(
        select(Membership.company_id, func.count())
        .join(User, User.id == Membership.user_id)
        .where(
            Membership.company_id.in_(company_ids),
            User.environment_id == environment_id,
            User.merged_into_id.is_(None),
        )
        .group_by(Membership.company_id)
    )
    for company_id, count in count_rows:
        counts[company_id] = count
    tag_rows = session.execute(
        select(CompanyTag.company_id, Tag)
        .join(Tag, Tag.id == CompanyTag.tag_id)
        .where(CompanyTag.company_id.in_(company_ids), Tag.environment_id == environment_id)
        .order_by(Tag.name, Tag.id)
    )
    for company_id, tag in tag_rows:
        tags[company_id].append(tag)
    return counts, tags


def list_members(
    session: Session,
    *,
    environment_id: int,
    company_id: int,
    sort: str,
    descending: bool,
    params: PageParams,
) -> Page:
    """The users of one company, as a page of the users listing."""
    order = _order(users.SORTABLE, sort, User, descending)
    get_company(session, environment_id=environment_id, id=company_id)
    query = (
        users.live_users(environment_id)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.company_id == company_id)
    )
    return paginate(session, query, order=order, params=params)


def list_user_companies(
    session: Session, *, environment_id: int, user_id: int, params: PageParams
) -> Page:
    """The companies of one user, by id."""
    users.get_user(session, environment_id=environment_id, id=user_id)
    query = (
        companies_of(environment_id)
        .join(Membership, Membership.company_id == Company.id)
        .where(Membership.user_id == user_id)
    )
    order = Order("id", Company.id, Company.id, descending=False)
    return paginate(session, query, order=order, params=params)


def find_user(
    session: Session,
    *,
    environment: Environment,
    id: str | None = None,
    user_id: str | None = None,
    email: str | None = None,
) -> User:
    """A user named by exactly one of our `id`, the customer's `user_id` or an `email`."""
    given = {"id": id, "user_id": user_id, "email": email}
    named = [(key, value) for key, value in given.items() if value is not None]
    if len(named) != 1:
        raise Invalid("give exactly one of id, user_id, email", field="id")
    ((key, value),) = named
    if key == "id":
        return users.get_user(session, environment_id=environment.id, id=parse_id(value, "user"))
    _no_nul(value, key)
    return users.lookup_user(session, environment=environment, key=key, value=value)


def find_company(
    session: Session, *, environment_id: int, id: str | None, company_id: str | None
) -> Company:
    """A company named by our `id` or the customer's `company_id`: exactly one must be given."""
    if (id is None) == (company_id is None):
        raise Invalid("give exactly one of id or company_id", field="id")
    if id is not None:
        return get_company(session, environment_id=environment_id, id=parse_id(id, "company"))
    assert company_id is not None
    _no_nul(company_id, "company_id")
    return lookup_company(session, environment_id=environment_id, company_id=company_id)


def membership_mode(environment: Environment) -> str:
    mode = (environment.settings or {}).get("company_membership", "multiple")
    return mode if mode in MEMBERSHIP_MODES else "multiple"


def add_member(session: Session, *, environment: Environment, company: Company, user: User) -> None:
    """Make `user` a member of `company` (idempotent: `member_since` is kept).

    With `company_membership = "single"` the user leaves every other company (seed 004).
    """
    if membership_mode(environment) == "single":
        # Lock the user so that two concurrent moves can't leave them in two companies.
        session.execute(select(User.id).where(User.id == user.id).with_for_update())
        others = select(Company.id).where(
            Company.environment_id == environment.id, Company.id != company.id
        )
        session.execute(
            delete(Membership).where(
                Membership.user_id == user.id, Membership.company_id.in_(others)
            ),
            execution_options={"synchronize_session": False},
        )
    member = {"company_id": company.id, "user_id": user.id, "member_since": utcnow()}
    insert_ignore(session, Membership, [member])
    touch(session, environment_id=environment.id, user_ids=[user.id])


def add_members(
    session: Session, *, environment: Environment, members: list[tuple[Company, User]]
) -> None:
    """`add_member` for each (company, user) in order: one insert when users may belong to
    several companies (the order matters only for "single" membership)."""
    if membership_mode(environment) == "single":
        for company, user in members:
            add_member(session, environment=environment, company=company, user=user)
        return
    now = utcnow()
    pairs = dict.fromkeys((company.id, user.id) for company, user in members)
    rows = [{"company_id": c, "user_id": u, "member_since": now} for c, u in pairs]
    insert_ignore(session, Membership, rows)
    touch(session, environment_id=environment.id, user_ids=[user_id for _, user_id in pairs])


def remove_member(session: Session, *, environment_id: int, company: Company, user: User) -> None:
    of_environment = select(Company.id).where(
        Company.environment_id == environment_id, Company.id == company.id
    )
    removed = session.execute(
        delete(Membership).where(
            Membership.company_id.in_(of_environment), Membership.user_id == user.id
        ),
        execution_options={"synchronize_session": False},
    )
    if not getattr(removed, "rowcount", 0):
        raise NotFound(f"user {user.id} in company", company.id)
    touch(session, environment_id=environment_id, user_ids=[user.id])
