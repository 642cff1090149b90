"""The web app: server-rendered pages over the same services as the REST API."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from audience.errors import AudienceError, error_response
from audience.web.auth import SignInRequired
from audience.web.render import HERE, page

_MACHINE_PREFIXES = ("/api/", "/v1/")


def install(app: FastAPI) -> None:
    from audience.web.pages import router as pages
    from audience.web.people import router as people

    app.include_router(pages)
    app.include_router(people)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, _: SignInRequired) -> Response:
        if request.method in ("GET", "HEAD"):
            return RedirectResponse("/login", status_code=303)
        return page(request, "error.html", 401, title="Signed out", message="Sign in again.")

    async def audience_error(request: Request, exc: Exception) -> Response:
        """Pages answer errors as pages; the APIs keep the R-API-7 JSON shape."""
        assert isinstance(exc, AudienceError)
        if request.url.path.startswith(_MACHINE_PREFIXES):
            return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)
        title = {403: "Not allowed", 404: "Not found"}.get(exc.status, "Something was wrong")
        return page(request, "error.html", exc.status, title=title, message=exc.message)

    app.add_exception_handler(AudienceError, audience_error)
