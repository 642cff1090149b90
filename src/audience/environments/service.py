"""Environments (tenants), their app tokens and API keys, and first-start bootstrap."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, cast

from sqlalchemy import CursorResult, or_, select, update
from sqlalchemy.orm import Session

from audience.db import get_scoped, utcnow
from audience.environments.models import ApiKey, Environment
from audience.errors import Conflict, Invalid, NotFound

APP_TOKEN_PREFIX = "pk_"  # noqa: S105 - a prefix, not a secret
API_KEY_PREFIX = "sk_"
DEFAULT_ENVIRONMENTS = (("Production", "production"), ("Staging", "staging"))
_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


def hash_key(key: str) -> str:
    # API keys are long random secrets, not passwords: a fast hash is enough and keeps auth cheap.
    return hashlib.sha256(key.encode()).hexdigest()


def new_app_token() -> str:
    return APP_TOKEN_PREFIX + secrets.token_urlsafe(18)


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(30)


def create_environment(
    session: Session, *, name: str, slug: str, app_token: str | None = None
) -> Environment:
    if not _SLUG.match(slug):
        raise Invalid(f"slug {slug!r} must be lowercase letters, digits and dashes", field="slug")
    if session.scalar(select(Environment.id).where(Environment.slug == slug)) is not None:
        raise Conflict(f"an environment with slug {slug!r} already exists", field="slug")
    environment = Environment(
        name=name, slug=slug, app_token=app_token or new_app_token(), settings={}
    )
    session.add(environment)
    session.flush()
    return environment


def list_environments(session: Session) -> list[Environment]:
    return list(session.scalars(select(Environment).order_by(Environment.id)))


def get_environment(session: Session, slug: str) -> Environment:
    environment = session.scalar(select(Environment).where(Environment.slug == slug))
    if environment is None:
        raise NotFound("environment", slug)
    return environment


def create_api_key(
    session: Session, *, environment_id: int, name: str = "default", key: str | None = None
) -> tuple[ApiKey, str]:
    """Returns the stored key and its plain text, which is never shown again."""
    plain = key or new_api_key()
    api_key = ApiKey(
        environment_id=environment_id, name=name, prefix=plain[:10], key_hash=hash_key(plain)
    )
    session.add(api_key)
    session.flush()
    return api_key, plain


def list_api_keys(session: Session, *, environment_id: int) -> list[ApiKey]:
    query = select(ApiKey).where(ApiKey.environment_id == environment_id).order_by(ApiKey.id)
    return list(session.scalars(query))


def revoke_api_key(session: Session, *, environment_id: int, key_id: int) -> ApiKey:
    api_key = get_scoped(session, ApiKey, environment_id=environment_id, id=key_id, what="api key")
    api_key.revoked_at = api_key.revoked_at or utcnow()
    return api_key


class KeyMatch(NamedTuple):
    """What a live API key opens: its environment, its id (the actor in histories) and when it
    was last recorded as used."""

    environment: Environment
    key_id: int
    last_used_at: datetime | None


# How stale `api_keys.last_used_at` may get. A "last used" shown to a person needs minutes, not
# milliseconds; writing it on every request would turn every authenticated read into a write (on
# SQLite: the one write lock, queued behind ingestion; on PostgreSQL: a new row version and WAL
# per request on one hot row). So a busy key is written about once a minute.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def environment_for_api_key(session: Session, key: str) -> KeyMatch | None:
    """The environment a live API key opens, with the key's id and last use."""
    query = (
        select(Environment, ApiKey.id, ApiKey.last_used_at)
        .join(ApiKey, ApiKey.environment_id == Environment.id)
        .where(ApiKey.key_hash == hash_key(key), ApiKey.revoked_at.is_(None))
    )
    row = session.execute(query).first()
    return None if row is None else KeyMatch(row[0], row[1], row[2])


def last_use_is_stale(last_used_at: datetime | None, *, now: datetime | None = None) -> bool:
    """Whether a key used `now` should have its `last_used_at` written (LAST_USED_RESOLUTION)."""
    return last_used_at is None or (now or utcnow()) - last_used_at >= LAST_USED_RESOLUTION


def record_api_key_use(session: Session, *, key_id: int, now: datetime | None = None) -> bool:
    """Write `last_used_at` = now unless another request wrote it within the resolution (so
    concurrent requests that all saw a stale value write it once). True if a row changed."""
    now = now or utcnow()
    statement = (
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(
                ApiKey.last_used_at.is_(None),
                ApiKey.last_used_at <= now - LAST_USED_RESOLUTION,
            ),
        )
        .values(last_used_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult[Any], session.execute(statement)).rowcount)


def environment_for_app_token(session: Session, token: str) -> Environment | None:
    return session.scalar(select(Environment).where(Environment.app_token == token))


@dataclass
class Bootstrapped:
    """What first start created; the plain keys are printed once and never stored."""

    environments: list[Environment]
    api_keys: dict[str, str]
    admin_email: str
    admin_password: str | None


def is_empty(session: Session) -> bool:
    return session.scalar(select(Environment.id).limit(1)) is None


def bootstrap(
    session: Session,
    *,
    app_token: str | None = None,
    api_key: str | None = None,
    admin_email: str | None = None,
    admin_password: str | None = None,
) -> Bootstrapped | None:
    """On an empty database create production and staging, their keys and the owner agent.

    The fixed token, key and owner (AUDIENCE_BOOTSTRAP_*) apply to production. Returns None when
    the database already holds an environment.
    """
    from audience.agents.service import create_agent

    if not is_empty(session):
        return None
    environments, keys = [], {}
    for name, slug in DEFAULT_ENVIRONMENTS:
        production = slug == "production"
        environment = create_environment(
            session, name=name, slug=slug, app_token=app_token if production else None
        )
        _, keys[slug] = create_api_key(
            session, environment_id=environment.id, key=api_key if production else None
        )
        environments.append(environment)
    email = admin_email or "owner@localhost"
    generated = None if admin_password else secrets.token_urlsafe(12)
    create_agent(
        session, email=email, name="Owner", password=admin_password or str(generated), role="owner"
    )
    return Bootstrapped(environments, keys, email, generated)
