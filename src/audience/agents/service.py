"""Agents: the people who use the web app."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from audience.agents.models import ROLES, Agent, AgentSession
from audience.db import utcnow
from audience.errors import Conflict, Invalid

_hasher = PasswordHasher()


def create_agent(session: Session, *, email: str, name: str, password: str, role: str) -> Agent:
    if role not in ROLES:
        raise Invalid(f"role must be one of {', '.join(ROLES)}", field="role")
    if len(password) < 8:
        raise Invalid("password must be at least 8 characters", field="password")
    taken = select(Agent.id).where(func.lower(Agent.email) == email.lower())
    if session.scalar(taken) is not None:
        raise Conflict(f"an agent with email {email} already exists", field="email")
    agent = Agent(email=email, name=name, password_hash=_hasher.hash(password), role=role)
    session.add(agent)
    session.flush()
    return agent


def list_agents(session: Session) -> list[Agent]:
    return list(session.scalars(select(Agent).order_by(Agent.id)))


def verify_password(agent: Agent, password: str) -> bool:
    return verify_password_hash(agent.password_hash, password)


def verify_password_hash(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


SESSION_DAYS = 14
# A role may do everything the roles after it may do.
_RANK = {role: rank for rank, role in enumerate(reversed(ROLES))}


def may(agent: Agent, role: str) -> bool:
    """Whether `agent` has `role` or a higher one (owner > admin > member > read-only)."""
    return _RANK[agent.role] >= _RANK[role]


def authenticate(session: Session, *, email: str, password: str) -> Agent | None:
    agent = session.scalar(select(Agent).where(func.lower(Agent.email) == email.strip().lower()))
    if agent is None:
        verify_password_hash(_DUMMY_HASH, password)  # an unknown email takes as long as a known one
        return None
    return agent if verify_password(agent, password) else None


def start_session(
    session: Session, *, agent: Agent, environment_id: int | None
) -> tuple[str, AgentSession]:
    """A new signed-in browser: returns the cookie's token (only its hash is stored).
    Sessions that expired are cleared here, so the table never outgrows its live sessions."""
    session.execute(delete(AgentSession).where(AgentSession.expires_at <= utcnow()))
    token = secrets.token_urlsafe(32)
    row = AgentSession(
        token_hash=_digest(token),
        agent_id=agent.id,
        csrf_token=secrets.token_urlsafe(32),
        environment_id=environment_id,
        expires_at=utcnow() + timedelta(days=SESSION_DAYS),
    )
    session.add(row)
    session.flush()
    return token, row


def find_session(session: Session, token: str) -> tuple[AgentSession, Agent] | None:
    found = session.execute(
        select(AgentSession, Agent)
        .join(Agent, Agent.id == AgentSession.agent_id)
        .where(AgentSession.token_hash == _digest(token), AgentSession.expires_at > utcnow())
    ).first()
    return None if found is None else (found[0], found[1])


def end_session(session: Session, token: str) -> None:
    session.execute(delete(AgentSession).where(AgentSession.token_hash == _digest(token)))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


_DUMMY_HASH = _hasher.hash("not a real password")
