"""The widget's script in a real browser, inside a stand-in for Kommo's widget host (``kommo_host/``) served at
an account's https origin: a key sent without consent goes nowhere, a wrong key shows Unisender's reason and
connects nothing, a good key connects the account, and a list picked from the Unisender account is stored.

How the page reaches the service: the host page, the widget's files and Kommo's token endpoint are fulfilled
by ``page.route`` at ``https://acme.kommo.com`` (the only kind of origin the service answers CORS for), while
the widget's own calls go, unrouted, to the real service on ``http://127.0.0.1``, so the CORS preflight and
answers are the service's own. Two browser rules stand in the way, and neither needs a launch flag:
mixed content does not apply (Chromium counts loopback as potentially trustworthy, so an https page may call
``http://127.0.0.1``), and Local Network Access (a public page calling the loopback address space is refused
with "Permission was denied for this request to access the `loopback` address space" unless the user allowed
it) is granted to the Kommo origin in the test's context, as a user would at the prompt. A real deployment
has a public https URL, which neither rule touches.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.async_api import BrowserContext, Page, Route, expect

from app.widget.build import widget_files
from tests.accounts.conftest import Installed, install
from tests.conftest import Stack

HOST_DIR = Path(__file__).parent / "kommo_host"
ORIGIN = "https://acme.kommo.com"
WIDGET_PATH = "/upl/contactsync/widget/"
_TYPES = {".js": "text/javascript", ".json": "application/json", ".css": "text/css", ".png": "image/png"}


async def _serve_kommo(context: BrowserContext, page: Page, stack: Stack, inst: Installed) -> None:
    await context.grant_permissions(["local-network-access"], origin=ORIGIN)
    files = widget_files(str(stack.api.base_url))

    async def handle(route: Route) -> None:
        path = urlsplit(route.request.url).path
        if path == "/settings/widgets/":
            await route.fulfill(body=(HOST_DIR / "index.html").read_text(), content_type="text/html")
        elif path == "/host/host.js":
            await route.fulfill(body=(HOST_DIR / "host.js").read_text(), content_type="text/javascript")
        elif path.startswith(WIDGET_PATH) and path.removeprefix(WIDGET_PATH) in files:
            name = path.removeprefix(WIDGET_PATH)
            await route.fulfill(body=files[name], content_type=_TYPES[Path(name).suffix])
        elif path == "/ajax/v1/widget_token" and route.request.method == "POST":
            # Kommo issues a fresh one-time token per call, for the signed-in administrator.
            r = await stack.kommo.post(
                "/_sandbox/widget_token", json={"client_id": inst.client_id, "subdomain": inst.subdomain}
            )
            assert r.status_code == 200, r.text
            await route.fulfill(json={"token": r.json()["token"]})
        else:
            await route.fulfill(status=404, body="not found")

    await page.route(f"{ORIGIN}/**", handle)


async def _open_settings(page: Page) -> None:
    await page.goto(f"{ORIGIN}/settings/widgets/")
    await expect(page.locator("#host-status")).to_have_attribute("data-ready", "yes")


async def _save(page: Page, key: str, *, consent: bool) -> str:
    await page.locator('#widget-fields input[name="api_key"]').fill(key)
    await page.locator(".contactsync-widget__consent-box").set_checked(consent)
    result = page.locator("#host-save-result")
    await page.locator("#widget-save").click()
    await expect(result).not_to_have_attribute("data-result", "pending")
    await expect(result).not_to_have_attribute("data-result", "")
    return await result.get_attribute("data-result") or ""


async def _account(stack: Stack, account_id: int) -> dict[str, Any]:
    r = await stack.api.get(f"/accounts/{account_id}", headers=stack.admin_headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def _unisender_call(stack: Stack, method: str, key: str, **params: Any) -> Any:
    r = await stack.unisender.post(f"/en/api/{method}", params={"format": "json", "api_key": key, **params})
    assert r.status_code == 200, r.text
    return r.json()["result"]


async def test_widget_settings_connect_unisender_from_a_kommo_page(
    stack: Stack, context: BrowserContext, page: Page
) -> None:
    inst = await install(stack)
    await _serve_kommo(context, page, stack, inst)
    await _open_settings(page)
    state = page.locator(".contactsync-widget__state")
    message = page.locator(".contactsync-widget__message")
    await expect(state).to_have_attribute("data-state", "disconnected")
    await expect(page.locator(".contactsync-widget__consent")).to_contain_text(
        urlsplit(str(stack.api.base_url)).netloc
    )

    # Without the user's consent the key is not sent anywhere (Kommo's moderation rule).
    assert await _save(page, "wrong-key", consent=False) == "refused"
    await expect(message).to_contain_text("Please confirm")
    calls = await page.evaluate("window.__hostCalls")
    assert calls == [f"GET {str(stack.api.base_url).rstrip('/')}/widget/connection"], calls

    # A wrong key: the service asks Unisender, which refuses it; the reason reaches the page.
    assert await _save(page, "wrong-key", consent=True) == "refused"
    await expect(message).to_contain_text("Unisender refused the API key")
    await expect(message).to_contain_text("invalid_api_key")
    assert (await _account(stack, inst.account_id))["unisender"]["connected"] is False

    # A good key connects the account, to the list the service picks by default.
    r = await stack.unisender.post("/_sandbox/accounts", json={})
    key = r.json()["api_key"]
    assert await _save(page, key, consent=True) == "saved"
    await expect(message).to_contain_text("Unisender accepted the key")
    await expect(state).to_have_attribute("data-state", "connected")
    await expect(state).to_contain_text("contactsync")
    unisender = (await _account(stack, inst.account_id))["unisender"]
    assert unisender["connected"] is True
    default_list = unisender["list_id"]

    # Reopened, the settings offer the Unisender account's lists; the one picked is stored.
    picked = (await _unisender_call(stack, "createList", key, title="Newsletter"))["id"]
    await _open_settings(page)
    await expect(state).to_have_attribute("data-state", "connected")
    options = page.locator(".contactsync-widget__list option")
    await expect(options).to_have_count(3)  # the default choice plus both lists
    await page.locator(".contactsync-widget__list").select_option(str(picked))
    assert await _save(page, key, consent=True) == "saved"
    await expect(state).to_contain_text("Newsletter")
    unisender = (await _account(stack, inst.account_id))["unisender"]
    assert unisender["list_id"] == picked != default_list
    assert json.dumps(await page.evaluate("window.__hostNetworkErrors || []")) == "[]"
