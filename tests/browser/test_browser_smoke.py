"""The browser fixture itself: a page served by the service over loopback renders and runs its script."""

from __future__ import annotations

import httpx
from playwright.async_api import Page


async def test_the_browser_reaches_the_service(api: httpx.AsyncClient, page: Page) -> None:
    response = await page.goto(f"{api.base_url}/healthz")
    assert response is not None
    assert response.status == 200
    assert '"status"' in (await page.content())
