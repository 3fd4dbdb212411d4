"""Headless Chromium for the dashboard tests: Debian's ``chromium`` driven by Playwright's
Python package through ``executable_path`` (Playwright's own browser download is never used).

Without a chromium executable the browser tests skip, saying what to install; with
``SCHEDULER_REQUIRE_BROWSER=1`` (CI) they fail instead.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    ConsoleMessage,
    Error,
    Page,
    ViewportSize,
    async_playwright,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO_ROOT / "test-output" / "ui"
REQUIRE_ENV = "SCHEDULER_REQUIRE_BROWSER"
DESKTOP = ViewportSize(width=1280, height=800)
PHONE = ViewportSize(width=375, height=800)

# The machine may have no network: without the background-networking flags chromium keeps
# trying to reach its update, sync and safe-browsing services.
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _unavailable(reason: str) -> None:
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(f"{reason} ({REQUIRE_ENV}=1 makes this a failure)", pytrace=False)
    pytest.skip(reason)


def chromium_executable() -> str:
    """Debian's chromium, or skip (fail under SCHEDULER_REQUIRE_BROWSER=1)."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        _unavailable(
            "the dashboard tests need a Chromium browser: install Debian's chromium "
            "(apt-get install chromium)"
        )
        raise AssertionError("unreachable")
    return found


@dataclass
class PageErrors:
    """Uncaught script errors and Content-Security-Policy violations seen by a page."""

    messages: list[str] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            self.messages.append(f"CSP: {message.text}")

    def on_page_error(self, error: Error) -> None:
        self.messages.append(f"uncaught: {error.message}\n{error.stack or ''}")


@contextlib.asynccontextmanager
async def launch() -> AsyncIterator[Browser]:
    """A headless chromium for the length of the block."""
    executable = chromium_executable()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=executable, args=LAUNCH_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser, errors: PageErrors) -> Page:
    """A page in a fresh context (its own session storage) at 1280x800, in the Oslo zone:
    the dashboard shows times in the browser's zone, which is not the daemon's (UTC)."""
    context = await browser.new_context(
        viewport=DESKTOP,
        locale="en-GB",
        timezone_id="Europe/Oslo",
    )
    page = await context.new_page()
    page.on("console", errors.on_console)
    page.on("pageerror", errors.on_page_error)
    return page


async def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as test-output/ui/<name>.png (without the passing status toast,
    which would hide what is under it)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    # (Through the page's own class: the Content-Security-Policy forbids injected styles.)
    await page.evaluate("() => document.getElementById('status')?.classList.remove('visible')")
    await page.screenshot(path=str(path), full_page=True, animations="disabled")
    return path


# axe-core's rules for WCAG 2.1 A and AA (contrast, names, labels, landmarks, ...).
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
_AXE_RUN = """async (tags) => {
  const result = await axe.run(document, { runOnly: { type: "tag", values: tags } });
  return result.violations.map((v) => {
    const where = v.nodes.slice(0, 5).map((n) => n.target.join(" ")).join(", ");
    return `${v.id} (${v.impact}): ${v.help}: ${where}`;
  });
}"""


async def accessibility_violations(page: Page) -> list[str]:
    """What axe-core (the copy the axe-playwright-python package ships) finds wrong with the
    page as it is now, against WCAG 2.1 A and AA. Evaluated through the DevTools protocol, so
    the page's Content-Security-Policy stays as it is."""
    source = (resources.files("axe_playwright_python") / "axe.min.js").read_text()
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.evaluate(source)
    violations = await page.evaluate(_AXE_RUN, AXE_TAGS)
    assert isinstance(violations, list)
    return [str(v) for v in violations]


async def horizontal_overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the viewport (0: it fits)."""
    overflow = await page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert isinstance(overflow, int | float)
    return int(overflow)
