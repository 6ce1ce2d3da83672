"""A real browser for the console and widget tests: Playwright's driver steering Debian's ``chromium`` package
(``CONTACTSYNC_TEST_CHROMIUM`` names another binary). No browser build is downloaded; without the binary these
tests fail with the command that installs it, rather than being skipped unseen."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright


def chromium_path() -> str:
    wanted = os.environ.get("CONTACTSYNC_TEST_CHROMIUM", "chromium")
    found = shutil.which(wanted)
    if found is None:
        pytest.fail(f"no {wanted!r} binary: install Debian's package (apt-get install chromium)")
    return found


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        # --no-sandbox: CI runs as root, where Chromium's own sandbox refuses to start.
        launched = await pw.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh profile per test: no cookie or storage carries over."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(15_000)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> Page:
    return await context.new_page()
