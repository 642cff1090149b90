"""How far ahead an event's time may be (R-ING-6): one rule for the REST API and ingestion.

The REST API refuses an event more than 24 hours ahead of the server's clock. Ingestion keeps
such a message, flagged (`future_timestamp`), but its time moves no "last seen" field: a clock
set to 2099 must not leave a user seen in 2099 for good.
"""

from __future__ import annotations

from datetime import datetime, timedelta

MAX_FUTURE = timedelta(hours=24)


def too_far_ahead(moment: datetime, now: datetime) -> bool:
    """Whether `moment` is more than MAX_FUTURE after `now`."""
    return moment - now > MAX_FUTURE
