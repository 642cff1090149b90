"""R-ATTR-2's limits on both ways in: the REST API refuses the request, /v1 rejects the message.

One table, every limit, both paths. On /v1 the message over a limit is rejected in the reply by
its messageId, naming the limit, and the rest of its batch is stored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from audience.db import Database
from tests.conftest import Tenant
from tests.factories import create_user
from tests.ingest.helpers import batch, stored, track


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(levels - 1):
        value = {"level": value}
    return value


@dataclass(frozen=True)
class Limit:
    """One R-ATTR-2 limit: what breaks it, and the text the refusal names it by."""

    named: str  # in the error message
    properties: dict[str, Any] | None = None  # an event's properties that break it
    attributes: dict[str, Any] | None = None  # a user's custom attributes (traits) that do
    v1_code: str = "limit_exceeded"
    within: dict[str, Any] = field(default_factory=dict)  # the same just within the limit


LIMITS = {
    "event properties over 10 KB serialised": Limit(
        "10 KB", properties={"blob": "x" * 11_000}, within={"blob": "x" * 10_000}
    ),
    "event properties nested deeper than 10 levels": Limit(
        "10 levels", properties=_nested(11), within=_nested(10)
    ),
    "attribute name over 255 characters": Limit(
        "255", attributes={"n" * 256: 1}, within={"n" * 255: 1}
    ),
    # A 65,536-character value makes the message larger than R-ING-5's 32 KB too: /v1 rejects
    # it as too large, and its message names the value's limit as well.
    "string value over 65,535 characters": Limit(
        "65535",
        attributes={"bio": "x" * 65_536},
        v1_code="message_too_large",
        within={"bio": "x" * 1_000},
    ),
    "more than 500 custom attributes": Limit(
        "500",
        attributes={f"a{n}": n for n in range(501)},
        within={f"a{n}": n for n in range(500)},
    ),
}


def _rest(api: TestClient, limit: Limit, value: dict[str, Any]) -> Any:
    user = create_user(api)
    if limit.properties is not None:
        body = {"name": "Signed Up", "properties": value}
        return api.post(f"/api/v1/users/{user['id']}/events", json=body)
    return api.patch(f"/api/v1/users/{user['id']}", json={"custom_attributes": value})


def _v1(limit: Limit, value: dict[str, Any]) -> dict[str, Any]:
    if limit.properties is not None:
        return track(properties=value)
    message = track(type="identify", traits=value)
    del message["event"], message["properties"]
    return message


@pytest.mark.parametrize("path", ["rest", "v1"])
@pytest.mark.parametrize("limit", list(LIMITS.values()), ids=list(LIMITS))
def test_every_attribute_limit_is_refused_on_both_paths_naming_it(
    app: TestClient, database: Database, tenant: Tenant, limit: Limit, path: str
) -> None:
    over = limit.properties if limit.properties is not None else limit.attributes
    assert over is not None
    if path == "rest":
        response = _rest(tenant.client, limit, over)
        assert response.status_code == 422, response.text
        [error] = response.json()["errors"]
        assert error["code"] == "limit_exceeded"
        assert limit.named in error["message"]
        assert _rest(tenant.client, limit, limit.within).status_code == 200
        return
    bad, good, fine = _v1(limit, over), track(), _v1(limit, limit.within)
    response = batch(app, [good, bad, fine], token=tenant.app_token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    [rejected] = body["rejected"]
    assert (rejected["index"], rejected["messageId"]) == (1, bad["messageId"])
    assert rejected["code"] == limit.v1_code
    assert limit.named in rejected["message"]
    assert set(stored(database)) == {good["messageId"], fine["messageId"]}


@pytest.mark.parametrize(
    "message",
    [
        # context.traits set attributes on every kind
        track(context={"traits": {"n" * 256: 1}}),
        # a group's traits are the company's attributes
        track(type="group", groupId="acme", traits={"n" * 256: 1}, event=None),
        track(type="group", groupId="acme", traits={f"a{n}": n for n in range(501)}, event=None),
        # so is `company` in identify's traits
        track(type="identify", traits={"company": {"id": "acme", "n" * 256: 1}}, event=None),
        # an operation sets an attribute like a value does
        track(type="identify", traits={f"a{n}": {"$add": 1} for n in range(501)}, event=None),
        # page and screen carry event properties too
        track(type="page", properties={"blob": "x" * 11_000}, event=None),
    ],
    ids=["context traits", "group name", "group count", "identify company", "operations", "page"],
)
def test_limits_apply_to_every_part_of_a_message_that_sets_attributes_or_properties(
    app: TestClient, database: Database, tenant: Tenant, message: dict[str, Any]
) -> None:
    message = {key: value for key, value in message.items() if value is not None}
    good = track()
    body = batch(app, [message, good], token=tenant.app_token).json()
    assert body["accepted"] == 1
    [rejected] = body["rejected"]
    assert (rejected["index"], rejected["messageId"], rejected["code"]) == (
        0,
        message["messageId"],
        "limit_exceeded",
    )
    assert set(stored(database)) == {good["messageId"]}
