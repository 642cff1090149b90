"""Helpers for tests that start the real `audience serve` process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from audience.config import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_healthy(process: subprocess.Popen[bytes], base: str, log: Path) -> None:
    """Return once `/healthz` answers 200; fail the test with the server's log otherwise."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"audience serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"audience serve was not healthy within 30s:\n{log.read_text()}")


@contextmanager
def running_serve(settings: Settings, tmp_path: Path, **env: str) -> Iterator[str]:
    """`audience serve` on a free port over the test's database, with `env` (AUDIENCE_…
    settings) on top of a clean environment; yields its base URL, stops it after."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AUDIENCE_")}
    environment.update(AUDIENCE_DATA_DIR=str(settings.data_dir), AUDIENCE_LOG_LEVEL="warning")
    if settings.database_url:
        environment["AUDIENCE_DATABASE_URL"] = settings.database_url
    environment.update(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = [sys.executable, "-m", "audience", "serve", "--host", "127.0.0.1", "--port"]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, str(port)], env=environment, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        wait_until_healthy(process, base, log)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
