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
