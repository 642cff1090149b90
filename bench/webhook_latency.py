"""Membership change -> webhook latency: identify over HTTP until `segment.entered` arrives.

    .venv/bin/python bench/webhook_latency.py [--database sqlite,postgresql] [--runs 30]
        [--users 10000]

Per database: a real `audience serve` (processor, webhook sender and all, as deployed) on a
fresh database (bench/ingest.py's helpers), `--users` people identified first so the segment
and the tables aren't empty, a saved segment `plan eq pro`, and a webhook subscribed to
`segment.entered`/`segment.exited` pointing at a local HTTP receiver. Then, `--runs` times and
one at a time: POST /v1/identify setting a person's plan to pro (or back to free) and time until
the receiver gets that person's `segment.entered` (or `segment.exited`). Reports p50/p95/max of
send -> delivery. The target (issue #4) is <= 1 s.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import ingest
from ingest import API_KEY, APP_TOKEN, HOST, free_port, fresh_database, query, serve

_server_env = ingest.server_env
# The receiver listens on 127.0.0.1, which the SSRF guard refuses unless allowed.
ingest.server_env = lambda target: _server_env(target) | {"AUDIENCE_WEBHOOK_ALLOW_PRIVATE": "true"}


class Receiver:
    """A local webhook endpoint: remembers when each (topic, user id) first arrived."""

    def __init__(self) -> None:
        self.arrived: dict[tuple[str, str], float] = {}
        self.changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                self.send_response(204)
                self.end_headers()
                data = body.get("data") or {}
                user = data.get("user") or {}
                with receiver.changed:
                    key = (str(body.get("topic")), str(user.get("user_id")))
                    receiver.arrived.setdefault(key, time.monotonic())
                    receiver.changed.notify_all()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Handler)
        self.url = f"http://{HOST}:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, key: tuple[str, str], timeout: float = 30.0) -> float:
        with self.changed:
            if not self.changed.wait_for(lambda: key in self.arrived, timeout):
                raise SystemExit(f"no {key} webhook within {timeout} s")
            return self.arrived[key]


def identify(client: httpx.Client, user_id: str, plan: str) -> None:
    body = {"userId": user_id, "traits": {"plan": plan}}
    response = client.post("/v1/identify", json=body, auth=(APP_TOKEN, ""))
    response.raise_for_status()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run_one(kind: str, args: argparse.Namespace, root: Path) -> str:
    receiver = Receiver()
    with fresh_database(kind, root, kind, args.postgres_url) as target:
        port = free_port()
        with serve(target, port, root / f"{kind}.log"):
            api = httpx.Client(
                base_url=f"http://{HOST}:{port}",
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=30,
            )
            batch = [
                {"type": "identify", "userId": f"u{index}", "traits": {"plan": "free"}}
                for index in range(args.users)
            ]
            for start in range(0, len(batch), 500):
                body = {"batch": batch[start : start + 500]}
                api.post("/v1/batch", json=body, auth=(APP_TOKEN, "")).raise_for_status()
            while api.get("/healthz").json()["ingestion"]["waiting"]:
                time.sleep(0.2)
            filter = {"field": "custom_attributes.plan", "op": "eq", "value": "pro"}
            api.post("/api/v1/segments", json={"name": "Pro", "filter": filter}).raise_for_status()
            topics = ["segment.entered", "segment.exited"]
            hook = {"url": receiver.url, "topics": topics}
            api.post("/api/v1/webhooks", json=hook).raise_for_status()
            latencies, sent_at = [], []
            for run in range(args.runs):
                user_id, entering = f"u{run // 2}", run % 2 == 0
                sent_at.append(time.time())
                sent = time.monotonic()
                identify(api, user_id, "pro" if entering else "free")
                topic = topics[0] if entering else topics[1]
                latencies.append(receiver.wait((topic, user_id)) - sent)
            # Where the time goes: send -> queued by the processor -> delivered by the sender.
            sql = "SELECT created_at, delivered_at FROM webhook_deliveries ORDER BY id"
            stamps = query(target, sql)
    receiver.server.shutdown()
    ms = [1000 * value for value in latencies]
    pairs = zip(stamps, sent_at, strict=True)
    queued = [1000 * (_epoch(created) - sent) for (created, _), sent in pairs]
    # The last outcome may not be recorded yet: the receiver answered before the sender wrote it.
    delivered = [1000 * (_epoch(done) - _epoch(created)) for created, done in stamps if done]
    return (
        f"{kind:<10} identify -> webhook, {len(ms)} runs: p50 {percentile(ms, 0.5):.0f} ms, "
        f"p95 {percentile(ms, 0.95):.0f} ms, max {max(ms):.0f} ms "
        f"(send -> queued p50 {percentile(queued, 0.5):.0f} ms, "
        f"queued -> delivered p50 {percentile(delivered, 0.5):.0f} ms)"
    )


def _epoch(moment: Any) -> float:
    if isinstance(moment, str):  # SQLite
        moment = datetime.fromisoformat(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return float(moment.timestamp())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", default="sqlite,postgresql")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    lines = []
    with tempfile.TemporaryDirectory() as directory:
        for kind in args.database.split(","):
            lines.append(run_one(kind, args, Path(directory)))
            print(lines[-1], flush=True)


if __name__ == "__main__":
    main()
