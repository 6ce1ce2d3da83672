"""The operator console in a real browser (Chromium) against the real service on PostgreSQL and Redis, with
the Kommo and Unisender sandboxes behind it and a real worker: sign in, find the account, run a full sync and
watch its progress to the end (the page's own script polls), edit the mapping through its preview and save
it; sign out; without a session, and for a form stripped of its CSRF token, the service refuses."""

from __future__ import annotations

import os
from pathlib import Path

from playwright.async_api import BrowserContext, Page, expect

from tests.conftest import Stack, raw_sql, running_worker
from tests.support.e2e import Account, connect_account, unisender_contacts, wait_for


async def _shot(page: Page, name: str) -> None:
    """scripts/screenshots: with CONTACTSYNC_SCREENSHOTS naming a directory, the page as a laptop and a phone
    show it (PNG); otherwise nothing."""
    folder = os.environ.get("CONTACTSYNC_SCREENSHOTS")
    if not folder:
        return
    await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)
    size = page.viewport_size
    await page.set_viewport_size({"width": 390, "height": 844})
    await page.screenshot(path=str(Path(folder) / f"{name}-phone.png"), full_page=True)
    if size is not None:
        await page.set_viewport_size(size)


async def _sign_in(page: Page, stack: Stack) -> None:
    await page.goto(f"{stack.api.base_url}/console/accounts")
    await expect(page).to_have_url(f"{stack.api.base_url}/console/sign-in?next=/console/accounts")
    await _shot(page, "sign-in")
    await page.get_by_label("Operator token").fill(stack.settings.admin_token.get_secret_value())
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name="Accounts")).to_be_visible()


async def _open_account(page: Page, account: Account) -> None:
    await page.get_by_role("link", name=account.subdomain, exact=True).click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(account.subdomain)


async def test_full_sync_and_mapping_from_the_console(stack: Stack, page: Page) -> None:
    account = await connect_account(stack, subdomain="acme", contacts=40, custom_fields=True)
    await _sign_in(page, stack)
    row = page.locator(f'tr[data-account="{account.account_id}"]')
    await expect(row.locator(".badge")).to_have_text("ok")
    await _shot(page, "accounts")
    await _open_account(page, account)

    # Started before any worker runs, so the page shows it waiting; then the worker takes it.
    await page.get_by_role("button", name="Start full sync").click()
    await expect(page.get_by_role("status")).to_have_text("Full sync started.")
    run = page.locator("tr.run").first
    await expect(run.locator('[data-field="status"]')).to_have_text("pending")
    await page.evaluate("window.consoleTestMark = 1")  # a reload would lose it
    async with running_worker(stack.settings):
        # No reload: the page's script redraws the row from the JSON endpoint until the run is done.
        await expect(run.locator('[data-field="status"]')).to_have_text("done", timeout=30_000)
        await expect(run.locator('[data-field="fetched"]')).to_have_text("40")
        assert await page.evaluate("window.consoleTestMark") == 1
        held = await unisender_contacts(stack, account)
        assert held

        # A row whose attempts ran out (made so in the database) is a dead letter: find it, replay it, and
        # it goes (re-derived, and found already held by Unisender).
        url = stack.settings.database_url
        assert url
        (dead,) = await raw_sql(
            url,
            "UPDATE outbox SET status = 'dead', last_error = 'attempts exhausted' WHERE id ="
            " (SELECT min(id) FROM outbox WHERE status = 'done') RETURNING id, email",
        )
        await page.reload()
        letter = page.locator(f'tr[data-dead-letter="outbox:{dead["id"]}"]')
        await expect(letter).to_contain_text(dead["email"])
        await expect(letter).to_contain_text("attempts exhausted")
        await _shot(page, "account")
        await letter.get_by_role("button", name=f"Replay outbox:{dead['id']}").click()
        await expect(page.get_by_role("status")).to_have_text("Dead letter sent again.")
        await expect(page.locator("tr[data-dead-letter]")).to_have_count(0)

        async def settled() -> bool:
            rows = await raw_sql(url, "SELECT status FROM outbox WHERE id = $1", dead["id"])
            return bool(rows[0]["status"] == "done")

        await wait_for(settled, what="the replayed row done again")

        await page.get_by_role("link", name="Edit mapping").click()
        await expect(page.get_by_role("heading", level=1)).to_contain_text("Mapping")
        await page.get_by_label("Kommo source 2").select_option("custom_field:PHONE")
        await page.locator("#field-1-target").select_option("phone")
        await page.get_by_label("or a new list").last.fill("VIP")
        await page.locator("#list-1-segment").select_option("tag")
        await page.locator("#list-1-tags").fill("vip")
        await page.get_by_role("button", name="Preview").click()
        summary = page.locator("#preview-summary")
        await expect(summary).to_contain_text("A save would push")
        await expect(page.locator("#preview")).to_contain_text("New Unisender lists: VIP")
        await _shot(page, "mapping-preview")
        await page.get_by_role("button", name="Save this mapping").click()
        await expect(page.get_by_role("status")).to_contain_text("Mapping saved")
        remap = page.locator("tr.run").first
        await expect(remap.locator("td").nth(1)).to_have_text("remap")
        await expect(remap.locator('[data-field="status"]')).to_have_text("done", timeout=30_000)

        async def vip_list_made() -> bool:
            lists = (
                await stack.api.get(
                    "/unisender/lists", params={"id": account.account_id}, headers=stack.admin_headers
                )
            ).json()
            return any(lst["title"] == "VIP" for lst in lists)

        await wait_for(vip_list_made, what="the VIP list created in Unisender")


async def test_sign_out_and_refusals(stack: Stack, page: Page, context: BrowserContext) -> None:
    account = await connect_account(stack, subdomain="acme")
    base = str(stack.api.base_url)
    await _sign_in(page, stack)
    await _open_account(page, account)

    # A form posted without its CSRF token is refused with a page saying so, and nothing starts.
    await page.locator('form[action$="/sync"] input[name="csrf_token"]').evaluate("e => e.remove()")
    await page.get_by_role("button", name="Start full sync").click()
    await expect(page.get_by_role("heading", name="Form refused")).to_be_visible()
    await expect(page.locator("#error-code")).to_have_text("csrf_invalid")
    runs = (
        await stack.api.get(
            "/sync/runs", params={"account_id": account.account_id}, headers=stack.admin_headers
        )
    ).json()
    assert runs["runs"] == []

    await page.get_by_role("link", name="Back to the accounts").click()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    # Without the session: pages go to the sign-in form, actions are refused.
    await page.goto(f"{base}/console/accounts/{account.account_id}")
    await expect(page).to_have_url(f"{base}/console/sign-in?next=/console/accounts/{account.account_id}")
    answer = await context.request.post(
        f"{base}/console/accounts/{account.account_id}/sync", form={"csrf_token": "x"}
    )
    assert answer.status == 401
    progress = await context.request.get(f"{base}/console/runs/any.json")
    assert progress.status == 401
