"""Companies joined by a batch's messages: group calls and `company` in traits (R-ING-3).

A message's company data is checked when the message is applied, before any of its effects is
written, so a company that can't be stored fails that message with nothing half-applied
(R-ING-4) and without a savepoint per message (a savepoint flushes every pending row). The joins
themselves are applied together when the batch flushes: its companies found or created in two
queries, their changes in one flush, the memberships in one insert.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from audience.companies import service as companies
from audience.environments.models import Environment
from audience.errors import Invalid
from audience.ingest.effects import Message
from audience.ingest.mapping import Profile, company_of
from audience.ingest.resolve import Failed
from audience.users.models import User


@dataclass(slots=True)
class Join:
    """`user` joins the company `data` describes (checked by `company_data`)."""

    user: User
    message: Message  # whose warnings a dropped field adds to
    data: dict[str, Any]


def companies_of_message(
    environment: Environment, message: Message, profile: Profile
) -> list[dict[str, Any]]:
    """The checked company data a message joins: its traits' `company`, then a group call's.

    Raises Failed for a group call whose company can't be stored at all."""
    payload, found = message.payload, []
    if profile.company is not None:
        group_id = profile.company.get("id")
        if isinstance(group_id, str | int) and str(group_id).strip():
            found.append(company_data(environment, message, str(group_id), profile.company))
        else:
            message.warn("invalid_trait", "company needs an id", "company")
    if payload["type"] == "group":
        traits = payload.get("traits") if isinstance(payload.get("traits"), dict) else {}
        found.append(company_data(environment, message, str(payload["groupId"]), traits or {}))
    return found


def company_data(
    environment: Environment, message: Message, group_id: str, traits: dict[str, Any]
) -> dict[str, Any]:
    """The company fields of `traits` (the environment's mapping applied); a field that can't
    be stored is dropped with a warning, a bad id raises Failed."""
    mapping = environment.settings.get("company_traits") or {}
    traits = {mapping.get(key, key): value for key, value in traits.items()}
    standard, custom = company_of(group_id, traits)
    data: dict[str, Any] = {**standard, "custom_attributes": custom} if custom else standard
    while True:
        try:
            companies.check_company(data)
            return data
        except Invalid as invalid:
            _skip(message, data, invalid)


def _skip(message: Message, data: dict[str, Any], invalid: Invalid) -> None:
    """Drop the field `invalid` names, with a warning; Failed when it is not one to drop."""
    field = invalid.field
    if field is None or not _droppable(data, invalid):
        raise Failed("invalid_company", invalid.message, "group") from None
    message.warn("invalid_trait", invalid.message, field)
    if field.startswith("custom_attributes."):
        data["custom_attributes"].pop(field.removeprefix("custom_attributes."), None)
    else:
        data.pop(field, None)


def _droppable(data: dict[str, Any], invalid: Invalid) -> bool:
    """Whether `invalid` names a field of `data` the company can do without (not its id)."""
    names = set(data) - {"company_id"}
    names.update(f"custom_attributes.{name}" for name in data.get("custom_attributes", {}))
    return invalid.field in names


def apply_joins(session: Session, environment: Environment, joins: list[Join]) -> None:
    """Save the companies of `joins` in order and make their users members (users flushed)."""
    if not joins:
        return
    found = companies.companies_by_company_id(
        session,
        environment_id=environment.id,
        company_ids={join.data["company_id"] for join in joins},
    )
    changed: set[int] = set()
    members = []
    for join in joins:
        company = found[join.data["company_id"]]
        while True:
            try:
                if companies.write_company(session, environment.id, company, join.data):
                    changed.add(company.id)
                break
            except Invalid as invalid:  # a custom attribute against its definition
                if not _droppable(join.data, invalid):
                    raise  # too late to fail just its message
                _skip(join.message, join.data, invalid)
        members.append((company, join.user))
    session.flush()
    companies.touch_members(session, environment.id, changed)
    companies.add_members(session, environment=environment, members=members)
