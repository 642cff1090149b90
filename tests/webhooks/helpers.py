"""A real HTTP receiver on 127.0.0.1, a fake clock, and shortcuts for the webhooks API."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.db import Database, utcnow
from audience.webhooks.models import WebhookDelivery


@dataclass
class Received:
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering (a receiver too slow for the timeout)


class Receiver:
    """A ThreadingHTTPServer that records every request and answers with scripted replies."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.replies: list[Reply] = []  # taken in order; then `default`
        self.default = Reply()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver.lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    reply = receiver.replies.pop(0) if receiver.replies else receiver.default
                time.sleep(reply.delay)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:  # the sender gave up waiting and closed the connection
                    pass

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.handle_error = lambda *_: None  # type: ignore[method-assign]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


class FakeClock:
    """The deliverer's clock: starts a minute ahead (so what was queued just now is due)."""

    def __init__(self) -> None:
        self.now = utcnow() + timedelta(minutes=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error.list", body
    return dict(body["errors"][0])


def create_webhook(
    api: TestClient, url: str = "https://93.184.215.14/hook", **fields: Any
) -> dict[str, Any]:
    body = {"url": url, "topics": ["user.created"], **fields}
    response = api.post("/api/v1/webhooks", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def deliveries(database: Database) -> list[WebhookDelivery]:
    with database.transaction() as session:
        return list(session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id)))


def delivery(database: Database, id: int | str) -> WebhookDelivery:
    with database.transaction() as session:
        row = session.get(WebhookDelivery, int(id))
        assert row is not None
        return row


def verify(secret: str, header: str, body: bytes) -> bool:
    """What docs/webhooks.md tells a receiver to do (written out here, not our signing code)."""
    parts = dict(part.split("=", 1) for part in header.split(",") if not part.startswith("v1="))
    signatures = [part[3:] for part in header.split(",") if part.startswith("v1=")]
    signed = parts["t"].encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)
