"""The portal's end-to-end fixtures: a real `llamafoundry serve` over a data directory with a known admin key, and
headless Chromium (Debian's `chromium`, driven by Playwright's Python package) with a fresh profile.

Chromium is launched with `--disable-background-networking` and friends: without them it opens connections of its
own, which this machine's closed network refuses. Screenshots go under the test run's temporary folder; with
`LLAMAFOUNDRY_PORTAL_SCREENSHOTS=DIR` they are also written to DIR (docs/portal/ keeps the current ones).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.api.deployment_fixtures import Gateway, cli_json, start_gateway

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
SCREENSHOTS_ENV = "LLAMAFOUNDRY_PORTAL_SCREENSHOTS"


@dataclass
class PortalServer:
    gateway: Gateway
    admin_key: str

    @property
    def url(self) -> str:
        return self.gateway.url


@pytest.fixture(scope="module")
def portal_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Iterator[PortalServer]:
    home = tmp_path_factory.mktemp("portal-home")
    admin_key = cli_json(home, "deploy", "admin-key", "--regenerate")["admin_key"]
    gateway = start_gateway(home, tiny_model_path)
    try:
        yield PortalServer(gateway, admin_key)
    finally:
        gateway.stop()


def require_browser() -> Any:
    """Playwright's sync API, or a skip (under CI=true a failure) saying what is missing."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "the `playwright` Python package (a test extra: make install-test)"
    if missing is None and not CHROMIUM.is_file():
        missing = f"{CHROMIUM} (Debian's chromium: scripts/install-browser.sh, run by make install-test)"
    if missing is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"the portal's browser tests need {missing}; CI must run them")
        pytest.skip(f"the portal's browser tests need {missing}")
    return sync_playwright


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Chromium context with a fresh profile that may use the clipboard."""
    sync_playwright = require_browser()
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1360, "height": 900}, permissions=["clipboard-read", "clipboard-write"],
        )  # fmt: skip
        context.set_default_timeout(30_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`shoot(page, name)`: a full-page PNG under the run's temporary folder (and $LLAMAFOUNDRY_PORTAL_SCREENSHOTS)."""
    folder = tmp_path_factory.mktemp("portal-screenshots")
    extra = os.environ.get(SCREENSHOTS_ENV)

    def shoot(page: Any, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path

    shoot.folder = folder  # type: ignore[attr-defined]
    return shoot


# In-page check that every control has an accessible name: a label, aria-label(ledby), title, or its own text.
UNNAMED_CONTROLS_JS = """() => Array.from(document.querySelectorAll(
    'a[href], button, input:not([type=hidden]), select, textarea, [role=tab], canvas, summary, [tabindex="0"]'))
  .filter(el => !(el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || el.title
                  || (el.labels && el.labels.length) || (el.textContent || '').trim()))
  .map(el => el.outerHTML.slice(0, 120))"""
