"""Browser tests: the system Chromium (Playwright) against a real `audience serve` process.

They run on the test's database like the rest of the suite (SQLite file or the private
PostgreSQL database); `.ci/run` runs them as `pytest tests/browser`, the plain `pytest` skips
this folder (pyproject's norecursedirs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from audience.config import Settings
from audience.db import Database
from tests.serve import running_serve

CHROMIUM = os.environ.get("AUDIENCE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OWNER_EMAIL = "owner@example.com"
OWNER_PASSWORD = "owner-password-1"
API_KEY = "sk_browser_tests_" + "k" * 24


@dataclass
class Server:
    url: str

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"{self.url}/api/v1", headers={"Authorization": f"Bearer {API_KEY}"}
        )


@pytest.fixture
def server(settings: Settings, database: Database, tmp_path: Path) -> Iterator[Server]:
    with running_serve(
        settings,
        tmp_path,
        AUDIENCE_BOOTSTRAP_API_KEY=API_KEY,
        AUDIENCE_BOOTSTRAP_ADMIN_EMAIL=OWNER_EMAIL,
        AUDIENCE_BOOTSTRAP_ADMIN_PASSWORD=OWNER_PASSWORD,
    ) as url:
        yield Server(url)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    opened = context.new_page()
    dialogs: list[str] = []
    opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    opened.dialogs = dialogs  # type: ignore[attr-defined]
    yield opened
    context.close()


def sign_in(
    page: Page, server: Server, email: str = OWNER_EMAIL, password: str = OWNER_PASSWORD
) -> None:
    page.goto(f"{server.url}/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server.url}/people")
