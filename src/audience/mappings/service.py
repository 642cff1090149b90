"""Per-environment field mappings (R-ING-2), kept in the environment's settings.

The processor reads `settings["traits" | "event_names" | "event_properties" |
"company_traits"]` when it applies a batch (ingest/effects.py, ingest/mapping.py), so a change
applies to every message processed after the commit, including messages already waiting.
The checks here make sure a mapping means what it says once the processor applies it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from audience.attributes.values import check_name
from audience.environments.models import Environment
from audience.errors import Invalid
from audience.ingest.mapping import USER_TRAITS
from audience.mappings.schemas import MAX_ENTRIES
from audience.users.models import User
from audience.users.schemas import UserObject

SECTIONS = ("traits", "event_names", "event_properties", "company_traits")
SYSTEM_USER_FIELDS = frozenset(
    {
        "id",
        "created_at",
        "updated_at",
        "user_key",
        "environment_id",
        "merged_into_id",
        "session_count",
        "page_views",
        "first_seen_at",
        "last_seen_at",
    }
)
# Names of the user object and row that a trait can't write: the processor would store a custom
# attribute of that name instead (e.g. `user_id` comes from userId/traits.userId only).
_OTHER_USER_FIELDS = (
    frozenset(UserObject.model_fields) | frozenset(User.__table__.columns.keys())
) - frozenset(USER_TRAITS)
# Trait spellings of standard attributes ("firstName"): as a target they'd make a custom attribute.
_TRAIT_SPELLINGS = {
    name: attribute
    for attribute, names in USER_TRAITS.items()
    for name in names
    if name not in USER_TRAITS
}
# Group traits that name the company, or company fields a group trait can't write.
_COMPANY_RESERVED = {
    "id": "identifies the company (the groupId)",
    "groupId": "identifies the company",
    "company_id": "identifies the company (the groupId)",
    "environment_id": "is a system field",
    "updated_at": "is a system field",
    "user_count": "is a system field",
    "custom_attributes": "is a system field",
    "type": "is a system field",
    "tags": "is not a company attribute",
    "phone_numbers": "is written from the `phone` trait: map to `phone`",
    "remote_created_at": "is written from the `createdAt` trait: map to `createdAt`",
}


def get_mappings(environment: Environment) -> dict[str, dict[str, str]]:
    settings = environment.settings or {}
    return {section: dict(settings.get(section) or {}) for section in SECTIONS}


def _check_trait_target(source: str, target: str) -> None:
    field = f"traits.{source}"
    if target in USER_TRAITS:
        return
    if target in SYSTEM_USER_FIELDS:
        raise Invalid(f"{target!r} is a system field and can't be written", field=field)
    if target in _TRAIT_SPELLINGS:
        raise Invalid(
            f"map to the attribute name {_TRAIT_SPELLINGS[target]!r}, not the trait {target!r}",
            field=field,
        )
    if target in _OTHER_USER_FIELDS:
        raise Invalid(
            f"traits can't write {target!r}: map to a custom attribute name or to one of "
            + ", ".join(sorted(USER_TRAITS)),
            field=field,
        )
    check_name(target, field=field)


def _check_company_target(source: str, target: str) -> None:
    field = f"company_traits.{source}"
    if target in _COMPANY_RESERVED:
        raise Invalid(f"{target!r} {_COMPANY_RESERVED[target]}", field=field)
    check_name(target, field=field)


def _check_one_to_one(properties: dict[str, str]) -> None:
    """Seed 001: a property maps to only one property and vice versa."""
    sources: dict[str, str] = {}
    for source, target in properties.items():
        if target in sources:
            raise Invalid(
                f"{sources[target]!r} and {source!r} both map to {target!r}: a property maps "
                "to only one property and vice versa",
                field=f"event_properties.{source}",
                code="duplicate_target",
            )
        sources[target] = source


def check(mappings: dict[str, dict[str, str]]) -> None:
    """422 naming the first entry that can't work as written."""
    for section, entries in mappings.items():
        if len(entries) > MAX_ENTRIES:
            raise Invalid(
                f"{section} has {len(entries)} entries; the limit is {MAX_ENTRIES}",
                field=section,
                code="limit_exceeded",
            )
    for source, target in mappings["traits"].items():
        _check_trait_target(source, target)
    for source, target in mappings["event_names"].items():
        if not target.strip():
            raise Invalid("an event name must not be blank", field=f"event_names.{source}")
    _check_one_to_one(mappings["event_properties"])
    for source, target in mappings["company_traits"].items():
        _check_company_target(source, target)


def _save(
    session: Session, environment: Environment, mappings: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    check(mappings)
    # A new dict, so SQLAlchemy sees the change (a JSON column isn't mutation-tracked); other
    # settings are kept as they are now, read under the row lock taken by the caller.
    environment.settings = {**(environment.settings or {}), **mappings}
    session.flush()
    return mappings


def _lock(session: Session, environment: Environment) -> None:
    """Re-read the settings under a row lock (PostgreSQL) so a concurrent edit isn't lost.

    SQLite write transactions (BEGIN IMMEDIATE) are serialised already.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.refresh(environment, ["settings"], with_for_update=True)


def replace_mappings(
    session: Session, *, environment: Environment, mappings: dict[str, dict[str, str]]
) -> dict[str, dict[str, str]]:
    _lock(session, environment)
    return _save(session, environment, {section: dict(mappings[section]) for section in SECTIONS})


def update_mappings(
    session: Session,
    *,
    environment: Environment,
    changes: dict[str, dict[str, str | None] | None],
) -> dict[str, dict[str, str]]:
    """Merge `changes` key by key: a `None` value removes the key, a `None` section empties it."""
    _lock(session, environment)
    mappings = get_mappings(environment)
    for section, entries in changes.items():
        if entries is None:
            mappings[section] = {}
            continue
        merged: dict[str, Any] = {**mappings[section], **entries}
        mappings[section] = {key: value for key, value in merged.items() if value is not None}
    return _save(session, environment, mappings)
