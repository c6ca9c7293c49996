"""Fixtures for the admin UI: a real uvicorn server and Debian's Chromium via Playwright.

The browser is the system package (``/usr/bin/chromium``); Playwright never
downloads one. Browser tests are skipped, with the reason, only when it is missing.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN_PASSWORD, make_settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


def form_login(client: TestClient, username: str = "admin", password: str = ADMIN_PASSWORD) -> str:
    """Sign in through the login form (session cookie); returns the page's CSRF token."""
    r = client.post(
        "/admin/login",
        data={"username": username, "password": password},
        follow_redirects=False,
    )
    assert r.status_code == 302, r.text
    assert r.headers["location"] == "/admin/dashboard"
    page = client.get("/admin/account")
    assert page.status_code == 200
    return csrf_from(page.text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    app: Any
    settings: Any

    @property
    def ctx(self) -> Any:
        return self.app.state.ctx


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """RefServer under uvicorn on 127.0.0.1 (real HTTP, real workers) in a thread."""
    import uvicorn

    from refserver.api.app import create_app

    settings = make_settings(tmp_path_factory.mktemp("web") / "data", workers=1)
    app = create_app(settings)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn-web-tests", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", app, settings)
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class ConsoleLog:
    """Console errors and uncaught page errors seen by the browser."""

    errors: list[str] = field(default_factory=list)

    def take(self) -> list[str]:
        out, self.errors = self.errors, []
        return out


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(
            "browser tests need Debian's chromium at /usr/bin/chromium "
            "(`apt-get install chromium`; `make test` installs it)"
        )
    from playwright.sync_api import sync_playwright

    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
            accept_downloads=True,
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def console() -> ConsoleLog:
    return ConsoleLog()


@pytest.fixture(scope="module")
def page(browser_context: Any, console: ConsoleLog) -> Any:
    """One tab for the whole browser session (tests build on each other's state)."""
    tab = browser_context.pages[0] if browser_context.pages else browser_context.new_page()
    tab.on(
        "console",
        lambda msg: (
            console.errors.append(f"console: {msg.text} @ {msg.location}")
            if msg.type == "error"
            else None
        ),
    )
    tab.on("pageerror", lambda exc: console.errors.append(f"pageerror: {exc}"))
    tab.set_default_timeout(15_000)
    return tab


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """docs/screenshots when REFSERVER_UPDATE_SCREENSHOTS=1, else a temporary folder."""
    if os.environ.get("REFSERVER_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")


A11Y_SCRIPT = (Path(__file__).resolve().parent / "a11y.js").read_text()


def accessibility_problems(page: Any) -> list[str]:
    """Labels, names, alt text, one h1, unique ids and AA contrast on the current page."""
    return list(page.evaluate(A11Y_SCRIPT))


def save_screenshot(page: Any, directory: Path, name: str) -> Path:
    path = directory / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"screenshot {name} looks empty"
    return path
