"""The one Settings object. Every field is an `AUDIENCE_<NAME>` environment variable.

Documented in docs/configuration.md; keep the two in step.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIENCE_", extra="ignore")

    data_dir: Path = Field(Path("./audience-data"), description="Where the SQLite file lives.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/audience.db."
    )
    host: str = Field("127.0.0.1", description="Address `audience serve` binds to.")
    port: int = Field(8000, description="Port `audience serve` listens on.")
    sqlite_synchronous: str = Field(
        "FULL", description="SQLite `synchronous` pragma: FULL (durable) or NORMAL (opt-out)."
    )
    processor: bool = Field(
        True,
        description="Run the ingestion processor inside `audience serve` (false when "
        "`audience worker` processes instead).",
    )
    webhook_sender: bool = Field(
        True,
        description="Send queued webhooks from a background thread of `audience serve` "
        "(`audience worker` always sends too; several senders are safe).",
    )
    jobs: bool = Field(
        True,
        description="Run bulk operation and export jobs in a background thread of `audience "
        "serve` (`audience worker` always runs them too; several runners are safe).",
    )
    segment_indexes: bool = Field(
        True,
        description="Build and drop indexes for the custom attributes saved segments filter on, "
        "from a background thread of `audience serve`.",
    )
    export_days: int = Field(
        7,
        ge=0,
        description="Days an export file stays downloadable after its job succeeded; then the "
        "job runner deletes it (0: kept until removed by hand).",
    )
    webhook_log_days: int = Field(
        30,
        ge=0,
        description="Days the webhook delivery log keeps succeeded and failed deliveries after "
        "their last attempt (0: forever).",
    )
    webhook_allow_private: bool = Field(
        False,
        description="Let webhooks reach loopback, private, link-local and other non-public "
        "addresses (the SSRF guard off: for development or an internal receiver).",
    )
    ingest_rate_limit: str = Field(
        "1000/second",
        description="Requests each app token may make to the tracking API (`/v1`), as "
        "`N/second|minute|hour`; `off` for none. Over it: 429 with Retry-After.",
    )
    api_rate_limit: str = Field(
        "10000/minute",
        description="Requests each API key may make to the REST API, in the same notation.",
    )
    login_rate_limit: str = Field(
        "10/minute",
        description="Sign-in attempts to the web app per client address and email, in the "
        "same notation; over it the form says to wait.",
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="Where rate-limit counts live: `memory://` (per process) or a shared "
        "store the `limits` library supports, such as `redis://host:6379` (needs redis-py).",
    )
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    bootstrap_app_token: str | None = Field(
        None, description="Fix production's app token at first start."
    )
    bootstrap_api_key: str | None = Field(
        None, description="Fix production's first API key at first start."
    )
    bootstrap_admin_email: str | None = Field(None, description="Owner agent's email.")
    bootstrap_admin_password: str | None = Field(None, description="Owner agent's password.")

    @property
    def url(self) -> str:
        """The database URL with the driver audience uses (psycopg 3 on PostgreSQL)."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'audience.db'}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url.removeprefix(prefix)
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")
