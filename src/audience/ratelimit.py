"""Rate limits per key (R-SEC-5): over the limit, a 429 with `Retry-After`.

The counting is the `limits` library's moving window. Counts live in this process
(`memory://`): with several `audience serve` processes behind a balancer, each allows the
limit, or point `AUDIENCE_RATE_LIMIT_STORAGE` at a shared store that `limits` supports.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from audience.config import Settings
from audience.errors import AudienceError


class RateLimited(AudienceError):
    def __init__(self, what: str, limit: RateLimitItem, retry_after: int) -> None:
        super().__init__(
            "rate_limited",
            f"over the rate limit of {limit} for this {what}; retry after {retry_after} s",
            status=429,
        )
        self.headers["Retry-After"] = str(retry_after)


class RateLimits:
    """The limits of one app: per app token on ingestion, per API key on the REST API."""

    def __init__(self, settings: Settings) -> None:
        self.limiter = MovingWindowRateLimiter(storage_from_string(settings.rate_limit_storage))
        self.ingest = _parse(settings.ingest_rate_limit)
        self.api = _parse(settings.api_rate_limit)
        self.login = _parse(settings.login_rate_limit)

    def hit_ingest(self, environment_id: int) -> None:
        self._hit(self.ingest, "app token", f"environment:{environment_id}")

    def hit_api(self, key_id: int) -> None:
        self._hit(self.api, "API key", f"api_key:{key_id}")

    def allow_login(self, key: str) -> bool:
        """A sign-in attempt from one address for one email (R-SEC-2): False when over."""
        return self.login is None or self.limiter.hit(self.login, f"login:{key}")

    def _hit(self, limit: RateLimitItem | None, what: str, key: str) -> None:
        if limit is None or self.limiter.hit(limit, key):
            return
        reset_at = self.limiter.get_window_stats(limit, key).reset_time
        raise RateLimited(what, limit, max(1, math.ceil(reset_at - time.time())))


def _parse(text: str) -> RateLimitItem | None:
    """`1000/second`, `100 per minute`, …; empty or `off` for no limit."""
    if text.strip().lower() in ("", "off"):
        return None
    return parse(text)
