"""Agents: the people who use the web app."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from audience.agents.models import ROLES, Agent
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
    try:
        return _hasher.verify(agent.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
