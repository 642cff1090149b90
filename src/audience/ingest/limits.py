"""R-ATTR-2's limits on the accept path: a message over one is rejected in the /v1 reply.

The rules are the REST API's own (`events.service.check_properties`, `attributes.values`); this
module only finds what in a tracking message they apply to: the event's `properties`, and the
custom attributes its traits would set on the user (`mapping.profile_of`) and on a company (a
group call's traits, or `company` in the traits, through `mapping.company_of`). What needs the
stored profile (the count with the attributes a user already has, types) is judged when the
message is applied.
"""

from __future__ import annotations

from typing import Any

from audience.attributes.values import check_limits
from audience.events.service import check_properties
from audience.ingest.mapping import company_of, profile_of, traits_of

EVENT_KINDS = frozenset({"track", "page", "screen"})


def check_message(message: dict[str, Any]) -> None:
    """Raise Invalid (code limit_exceeded, naming the limit) for the first R-ATTR-2 limit
    `message` is over; its `type` is known, its traits and properties may be anything."""
    kind = message["type"]
    properties = message.get("properties")
    if kind in EVENT_KINDS and isinstance(properties, dict) and properties:
        check_properties(properties)
    traits = traits_of(message)
    if traits:
        profile = profile_of(traits)
        check_limits(profile.custom, model="user", field="traits")
        if profile.company is not None:
            _check_company(profile.company, field="traits.company")
    if kind == "group":
        own = message.get("traits")
        if isinstance(own, dict):
            _check_company(own, field="traits")


def _check_company(traits: dict[str, Any], *, field: str) -> None:
    _, custom = company_of("", traits)
    check_limits(custom, model="company", field=field)
