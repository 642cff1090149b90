"""The SSRF guard: non-public addresses are refused on write and again at delivery time."""

from __future__ import annotations

import ipaddress

import httpx
import pytest
from fastapi.testclient import TestClient

from audience.db import Database
from audience.webhooks.deliver import Deliverer
from audience.webhooks.ssrf import IPAddress, Resolver, blocked
from tests.conftest import Tenant
from tests.webhooks.helpers import FakeClock, Receiver, create_webhook, delivery, error_of

PRIVATE_URLS = [
    "http://127.0.0.1/hook",
    "http://127.1.2.3:8080/hook",
    "http://10.0.0.5/hook",
    "http://172.16.0.1/hook",
    "http://192.168.1.1/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/hook",
    "http://0.0.0.0/hook",
    "http://224.0.0.1/hook",
    "http://[::1]/hook",
    "http://[::]/hook",
    "http://[fe80::1]/hook",
    "http://[fc00::1]/hook",
    "http://[::ffff:127.0.0.1]/hook",
    "http://localhost:8000/hook",
    "https://LOCALHOST/hook",
    "http://2130706433/hook",  # 127.0.0.1 as one number
]


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_non_public_address_is_refused_on_create(api: TestClient, url: str) -> None:
    response = api.post("/api/v1/webhooks", json={"url": url, "topics": ["user.created"]})
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["code"] == "invalid_url" and error["field"] == "url"
    assert "AUDIENCE_WEBHOOK_ALLOW_PRIVATE" in error["message"]
    assert api.get("/api/v1/webhooks").json()["total_count"] == 0


def test_refusal_names_the_address_and_why(api: TestClient) -> None:
    body = {"url": "http://localhost/hook", "topics": ["user.created"]}
    message = error_of(api.post("/api/v1/webhooks", json=body))["message"]
    assert "127.0.0.1" in message and "loopback" in message


def test_host_that_does_not_resolve_is_refused(api: TestClient) -> None:
    body = {"url": "https://hooks.nowhere.invalid/x", "topics": ["user.created"]}
    response = api.post("/api/v1/webhooks", json=body)
    assert response.status_code == 400
    assert "does not resolve" in error_of(response)["message"]


@pytest.mark.parametrize("url", ["http://10.0.0.5/hook", "http://localhost/hook"])
def test_non_public_address_is_refused_on_update(api: TestClient, url: str) -> None:
    webhook = create_webhook(api)
    response = api.patch(f"/api/v1/webhooks/{webhook['id']}", json={"url": url})
    assert response.status_code == 400
    assert error_of(response)["field"] == "url"
    assert api.get(f"/api/v1/webhooks/{webhook['id']}").json()["url"] == webhook["url"]


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]/"]
)
def test_allow_private_setting_accepts_private_addresses(private_api: TestClient, url: str) -> None:
    assert create_webhook(private_api, url=url)["url"] == url


def test_allow_private_setting_still_refuses_other_schemes(private_api: TestClient) -> None:
    body = {"url": "file:///etc/passwd", "topics": ["user.created"]}
    assert private_api.post("/api/v1/webhooks", json=body).status_code == 400


def _ping(api: TestClient, url: str) -> str:
    webhook = create_webhook(api, url=url)
    return str(api.post(f"/api/v1/webhooks/{webhook['id']}/ping").json()["id"])


def test_private_address_is_refused_again_at_delivery_time(
    private_api: TestClient, database: Database, receiver: Receiver, clock: FakeClock
) -> None:
    # Written while the operator allowed it (or while DNS said otherwise); refused when sent.
    ping = _ping(private_api, receiver.url)
    sender = Deliverer(database, allow_private=False, clock=clock)
    assert sender.run_once() == 1
    sender.close()
    assert receiver.requests == []
    row = delivery(database, ping)
    assert row.status == "pending" and row.attempts == 1
    assert row.last_error is not None and row.last_error.startswith("refused:")
    assert "loopback" in row.last_error


def _resolver(*addresses: str) -> Resolver:
    def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(address) for address in addresses]

    return resolve


@pytest.mark.parametrize(
    "addresses", [("10.1.2.3",), ("93.184.215.14", "192.168.0.7"), ("fd00::1",)]
)
def test_host_that_resolves_to_a_private_address_at_delivery_is_refused(
    private_api: TestClient,
    database: Database,
    receiver: Receiver,
    clock: FakeClock,
    addresses: tuple[str, ...],
) -> None:
    ping = _ping(private_api, f"http://hooks.example.test:{receiver.port}/hook")
    sender = Deliverer(database, allow_private=False, clock=clock, resolve=_resolver(*addresses))
    sender.run_once()
    sender.close()
    assert receiver.requests == []
    error = delivery(database, ping).last_error or ""
    assert error.startswith("refused:") and "hooks.example.test" in error


def test_sender_connects_to_the_address_it_checked_with_the_urls_host(
    private_api: TestClient, database: Database, receiver: Receiver, clock: FakeClock
) -> None:
    # The lookup is done once and the connection pinned to its answer (no DNS rebinding).
    ping = _ping(private_api, f"http://hooks.example.test:{receiver.port}/hook?x=1")
    sender = Deliverer(
        database,
        allow_private=True,
        clock=clock,
        resolve=_resolver("127.0.0.1"),
        timeout=httpx.Timeout(2.0),
    )
    sender.run_once()
    sender.close()
    assert delivery(database, ping).status == "succeeded"
    (request,) = receiver.requests
    assert request.headers["host"] == f"hooks.example.test:{receiver.port}"
    assert request.path == "/hook?x=1"


def test_sender_tries_the_next_address_when_one_refuses_connections(
    private_api: TestClient, database: Database, receiver: Receiver, clock: FakeClock
) -> None:
    # The receiver listens on 127.0.0.1 only: 127.0.0.2 (loopback too) refuses the connection.
    ping = _ping(private_api, f"http://hooks.example.test:{receiver.port}/hook")
    resolve = _resolver("127.0.0.2", "127.0.0.1")
    sender = Deliverer(database, allow_private=True, clock=clock, resolve=resolve)
    sender.run_once()
    sender.close()
    assert delivery(database, ping).status == "succeeded"
    assert len(receiver.requests) == 1


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.9.8.7", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("239.1.1.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "private"),
        ("100.64.0.1", "non-public"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("2001:0:4136:e378:8000:63bf:80ff:fffe", "private"),  # Teredo (of 127.0.0.1)
    ],
)
def test_blocked_addresses(address: str, reason: str) -> None:
    assert blocked(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert blocked(ipaddress.ip_address(address)) is None


def test_other_environment_does_not_matter_to_the_guard(
    other_tenant: Tenant, private_api: TestClient
) -> None:
    # The setting is the operator's, for every environment: the plain app still refuses.
    body = {"url": "http://127.0.0.1/hook", "topics": ["user.created"]}
    assert other_tenant.client.post("/api/v1/webhooks", json=body).status_code == 400
