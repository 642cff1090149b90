"""create_app(settings) -> the ASGI app: routers, error handlers, health."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import func, select
from starlette.types import ASGIApp, Receive, Scope, Send

from audience import __version__, errors
from audience.auth import RecordKeyUse
from audience.config import Settings
from audience.db import Database, utcnow
from audience.ingest.models import InboxMessage
from audience.ratelimit import RateLimits
from audience.segments.indexes import IndexKeeper

log = logging.getLogger("audience")

API_PREFIX = "/api/v1"
DOCS_URL = f"{API_PREFIX}/docs"
DOCS_STATIC = Path(__file__).parent / "static_docs"


def _api_routers() -> list[APIRouter]:
    from audience.attributes.api import router as attributes
    from audience.companies.api import router as companies
    from audience.events.api import router as events
    from audience.failed.api import router as failed_messages
    from audience.jobs.api import router as jobs
    from audience.lists.api import router as lists
    from audience.mappings.api import router as mappings
    from audience.messages.api import router as messages
    from audience.segments.api import router as search
    from audience.tags.api import router as tags
    from audience.users.api import router as users
    from audience.users.merge_api import router as merges
    from audience.webhooks.api import router as webhooks

    return [
        users,
        companies,
        events,
        tags,
        lists,
        attributes,
        merges,
        failed_messages,
        messages,
        mappings,
        webhooks,
        search,
        jobs,
    ]


class RefuseNul:
    """Answer 400 to a path or query parameter holding NUL, which PostgreSQL can't compare."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            field = _nul_field(scope)
            if field is not None:
                response = errors.error_response(
                    400, "parameter_invalid", f"{field}: NUL characters are not allowed", field
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _nul_field(scope: Scope) -> str | None:
    if "\x00" in scope.get("path", ""):
        return "path"
    query = scope.get("query_string", b"").decode("latin-1")
    if "%00" not in query and "\x00" not in query:
        return None
    for key, value in parse_qsl(query, keep_blank_values=True):
        if "\x00" in key or "\x00" in value:
            return key.replace("\x00", "") or "query"
    return None


def _install_docs(app: FastAPI) -> None:
    """Swagger UI at /api/v1/docs from the assets in static_docs/ (FastAPI's own page loads them
    from a CDN, which leaves it blank on a server without internet)."""
    static = f"{DOCS_URL}/static"
    app.mount(static, StaticFiles(directory=DOCS_STATIC), name="docs-static")

    @app.get(DOCS_URL, include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=str(app.openapi_url),
            title=f"{app.title} API",
            swagger_js_url=f"{static}/swagger-ui-bundle.js",
            swagger_css_url=f"{static}/swagger-ui.css",
            swagger_favicon_url=f"{static}/favicon-32x32.png",
            # No online validator badge: it would send the spec to a third party.
            swagger_ui_parameters={"validatorUrl": None},
        )


def _lifespan(settings: Settings, database: Database) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        threads = []
        if settings.segment_indexes:
            keeper = app.state.index_keeper
            threads.append(
                threading.Thread(
                    target=keeper.run_forever, args=(stop,), name="segment-indexes", daemon=True
                )
            )
        if settings.processor:
            from audience.ingest.processor import Processor

            processor = Processor(database)
            threads.append(
                threading.Thread(
                    target=processor.run_forever, args=(stop,), name="processor", daemon=True
                )
            )
        if settings.webhook_sender:
            from audience.webhooks.deliver import Deliverer

            sender = Deliverer(database, allow_private=settings.webhook_allow_private)
            threads.append(
                threading.Thread(
                    target=sender.run_forever, args=(stop,), name="webhook-sender", daemon=True
                )
            )
        if settings.jobs:
            from audience.jobs.runner import JobRunner

            runner = JobRunner(database)
            threads.append(
                threading.Thread(target=runner.run_forever, args=(stop,), name="jobs", daemon=True)
            )
        for thread in threads:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=30)

    return lifespan


def create_app(settings: Settings | None = None, *, database: Database | None = None) -> FastAPI:
    settings = settings or Settings()
    database = database or Database(settings)
    app = FastAPI(
        lifespan=_lifespan(settings, database),
        title="audience",
        version=__version__,
        summary="Self-hosted customer data platform",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=None,  # served by _install_docs from the package, not a CDN
        redoc_url=None,
    )
    _install_docs(app)
    app.state.settings = settings
    app.state.database = database
    app.state.rate_limits = RateLimits(settings)
    app.state.index_keeper = IndexKeeper(database)
    errors.install(app)
    app.add_middleware(RefuseNul)
    app.add_middleware(RecordKeyUse)
    for router in _api_routers():
        app.include_router(router, prefix=API_PREFIX)
    from audience.ingest.api import router as ingest  # the tracking API at /v1, no API prefix

    app.include_router(ingest)
    from audience import web

    web.install(app)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> JSONResponse:
        try:
            with database.engine.connect() as connection:
                waiting, oldest = connection.execute(
                    select(func.count(), func.min(InboxMessage.received_at))
                ).one()
        except Exception as exc:  # any driver error means "not healthy", never a crash
            log.warning("health check failed: %s", type(exc).__name__)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
        if isinstance(oldest, str):  # SQLite hands back the aggregate as text
            oldest = datetime.fromisoformat(oldest)
        lag = 0.0 if oldest is None else max(0.0, (utcnow() - _aware(oldest)).total_seconds())
        return JSONResponse(
            {
                "status": "ok",
                "database": "ok",
                "version": __version__,
                "ingestion": {"waiting": waiting, "lag_seconds": round(lag, 3)},
            }
        )

    return app
