"""Sign-in, sign-out, the home redirect and the environment switcher."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response

from audience.agents import service as agents
from audience.auth import DbSession
from audience.db import TransactionRoute
from audience.errors import NotFound
from audience.web.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, SignedIn, csrf_matches
from audience.web.render import page

router = APIRouter(route_class=TransactionRoute, include_in_schema=False)


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


@router.get("/")
def home(signed: SignedIn) -> RedirectResponse:
    return RedirectResponse("/people", status_code=303)


@router.get("/login")
def login_form(request: Request) -> Response:
    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = page(request, "login.html", csrf_token=token, email="", error=None)
    _set_login_csrf(request, response, token)
    return response


def _set_login_csrf(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(request)
    )


@router.post("/login")
def login(
    request: Request,
    session: DbSession,
    email: Annotated[str, Form(max_length=255)] = "",
    password: Annotated[str, Form(max_length=1024)] = "",
    csrf_token: Annotated[str, Form(max_length=128)] = "",
) -> Response:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not expected or not csrf_matches(expected, csrf_token):
        return _login_error(request, email, "The form expired: please sign in again.", 403)
    client = request.client.host if request.client else "unknown"
    if not request.app.state.rate_limits.allow_login(f"{client}:{email.strip().lower()}"):
        return _login_error(request, email, "Too many attempts: wait a minute and try again.", 429)
    agent = agents.authenticate(session, email=email, password=password)
    if agent is None:
        return _login_error(request, email, "Wrong email or password.", 401)
    token, _ = agents.start_session(session, agent=agent, environment_id=None)
    response = RedirectResponse("/people", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=agents.SESSION_DAYS * 86400,
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE)
    return response


def _login_error(request: Request, email: str, message: str, status: int) -> Response:
    token = secrets.token_urlsafe(32)
    response = page(
        request, "login.html", status=status, csrf_token=token, email=email, error=message
    )
    _set_login_csrf(request, response, token)
    return response


@router.post("/logout")
def logout(request: Request, signed: SignedIn, session: DbSession) -> RedirectResponse:
    agents.end_session(session, request.cookies.get(SESSION_COOKIE, ""))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE)
    return response


@router.post("/environment")
def switch_environment(
    signed: SignedIn, slug: Annotated[str, Form(max_length=64)]
) -> RedirectResponse:
    chosen = next((e for e in signed.environments if e.slug == slug), None)
    if chosen is None:
        raise NotFound("environment", slug)
    signed.session.environment_id = chosen.id
    # To the list, not back: the page being left shows an object of the other environment.
    return RedirectResponse("/people", status_code=303)
