"""Who is signed in: the session cookie, CSRF on every state-changing request, and roles.

The cookie is HttpOnly and SameSite=Lax and holds a random token whose hash names the
`agent_sessions` row. Every POST carries the session's CSRF token (a hidden `csrf_token` field
or an `X-CSRF-Token` header); a missing or wrong one is a 403 before anything runs.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from audience.agents import service as agents
from audience.agents.models import Agent, AgentSession
from audience.db import request_session
from audience.environments.models import Environment
from audience.environments.service import list_environments
from audience.errors import AudienceError

SESSION_COOKIE = "audience_session"
LOGIN_CSRF_COOKIE = "audience_login_csrf"


class SignInRequired(Exception):
    """Raised by a page for a signed-out browser: the app answers with a redirect to /login."""


class Forbidden(AudienceError):
    def __init__(self, message: str) -> None:
        super().__init__("forbidden", message, status=403)


@dataclass
class Signed:
    """The signed-in agent, their session and the environment they are looking at."""

    agent: Agent
    session: AgentSession
    environment: Environment
    environments: list[Environment]

    def may(self, role: str) -> bool:
        return agents.may(self.agent, role)

    def require(self, role: str) -> None:
        if not self.may(role):
            raise Forbidden(f"your role ({self.agent.role}) may not do this: it needs {role}")


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


async def check_csrf(request: Request, expected: str) -> None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    given = request.headers.get("x-csrf-token")
    if given is None:
        form = await request.form()
        value = form.get("csrf_token")
        given = value if isinstance(value, str) else None
    if not csrf_matches(expected, given):
        raise Forbidden("missing or wrong CSRF token: reload the page and try again")


async def signed_in(
    request: Request, session: Annotated[Session, Depends(request_session)]
) -> Signed:
    token = request.cookies.get(SESSION_COOKIE)
    found = None if not token else agents.find_session(session, token)
    if found is None:
        raise SignInRequired()
    agent_session, agent = found
    await check_csrf(request, agent_session.csrf_token)
    environments = list_environments(session)
    by_id = {environment.id: environment for environment in environments}
    environment = by_id.get(agent_session.environment_id or 0) or environments[0]
    request.state.actor = f"agent:{agent.id}"
    return Signed(agent, agent_session, environment, environments)


SignedIn = Annotated[Signed, Depends(signed_in)]
