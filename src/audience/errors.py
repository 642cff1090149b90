"""AudienceError and the handlers that turn every failure into the R-API-7 error shape."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("audience")


class AudienceError(Exception):
    """A failure the caller can act on: stable `code`, message, HTTP status and field."""

    def __init__(
        self, code: str, message: str, *, status: int = 400, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.field = field
        self.headers: dict[str, str] = {}


class NotFound(AudienceError):
    def __init__(self, what: str, key: object) -> None:
        super().__init__("not_found", f"{what} {key} not found", status=404)


class Conflict(AudienceError):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__("conflict", message, status=409, field=field)


class Invalid(AudienceError):
    """A value that passed the schema but breaks a rule (type, limit): 422 naming the field."""

    def __init__(self, message: str, *, field: str, code: str = "invalid_value") -> None:
        super().__init__(code, message, status=422, field=field)


def error_body(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "error.list", "errors": errors}


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return JSONResponse(error_body([error]), status_code=status, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    # ("body", "custom_attributes", "plan") -> "custom_attributes.plan"; query/path keep the name.
    parts = (
        [str(p) for p in loc[1:]]
        if loc and loc[0] in ("body", "query", "path")
        else list(map(str, loc))
    )
    return ".".join(parts) or str(loc[0] if loc else "body")


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


_UNIQUE_COLUMNS = (
    re.compile(r"UNIQUE constraint failed: ([\w., ]+)"),  # SQLite: "users.environment_id, ..."
    re.compile(r"Key \(([^)]*)\)="),  # PostgreSQL detail: "Key (environment_id, user_id)=(...)"
)


def conflict_from_integrity_error(exc: IntegrityError) -> Conflict:
    """A unique value taken by a concurrent request: 409 naming the field, never a 500."""
    text = str(exc.orig)
    for pattern in _UNIQUE_COLUMNS:
        match = pattern.search(text)
        if match:
            columns = [c.strip().rpartition(".")[2] for c in match.group(1).split(",")]
            named = [c for c in columns if c != "environment_id"] or columns
            return Conflict(f"{named[-1]} is already taken", field=named[-1])
    return Conflict("the change conflicts with a concurrent change; retry")


def install(app: FastAPI) -> None:
    @app.exception_handler(AudienceError)
    async def audience_error(_: Request, exc: AudienceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.field, exc.headers)

    @app.exception_handler(IntegrityError)
    async def integrity_error(_: Request, exc: IntegrityError) -> JSONResponse:
        conflict = conflict_from_integrity_error(exc)
        return error_response(conflict.status, conflict.code, conflict.message, conflict.field)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            if err.get("type") == "json_invalid":
                return error_response(400, "invalid_json", "The request body is not valid JSON")
            where = _location(loc)
            kind = err.get("type", "invalid")
            message = f"{where}: {err.get('msg', 'invalid')}"
            if kind == "extra_forbidden":
                message = f"{where}: unknown field (not writable)"
            errors.append(
                {
                    "code": "parameter_invalid" if loc[:1] != ("body",) else "invalid_field",
                    "message": message,
                    "field": where,
                }
            )
        # R-API-7: 422 only for body validation; a bad query or path parameter is a 400.
        in_body = any(tuple(e.get("loc", ()))[:1] == ("body",) for e in exc.errors())
        return JSONResponse(error_body(errors), status_code=422 if in_body else 400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "error")
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return error_response(500, "server_error", "Internal server error")
