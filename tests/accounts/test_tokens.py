"""Token lifecycle and the functions the sync engine imports: single-flight refresh across processes,
revoked refresh tokens, client builders, webhook-token checks, webhook re-registration and the token cron."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import text

from app.accounts.errors import AccountNotReady
from app.accounts.kommo import kommo_client_for, refresh_expiring_tokens, refresh_kommo_token
from app.accounts.unisender import unisender_client_for
from app.accounts.webhook_auth import WebhookAuth
from app.accounts.webhooks import ensure_kommo_webhooks
from app.connectors.kommo import KommoClient
from app.context import ProcessContext, build_context
from app.errors import Unauthorized
from tests.accounts.conftest import Installed, account_reads, connect, kommo_stats
from tests.conftest import Stack, raw_sql


@asynccontextmanager
async def worker_context(stack: Stack) -> AsyncIterator[ProcessContext]:
    """A separate process context (its own engine and pool), as a worker process would have."""
    pc = await build_context(stack.settings)
    try:
        yield pc
    finally:
        await pc.close()


async def _expire_locally(stack: Stack, account_id: int) -> None:
    """Our side of the clock: the stored access token is past its expiry."""
    await raw_sql(
        stack.settings.database_url or "",
        "UPDATE kommo_token SET expires_at = now() - interval '1 minute' WHERE account_id = $1",
        account_id,
    )


async def _advance_kommo(stack: Stack, seconds: int) -> None:
    r = await stack.kommo.post("/_sandbox/clock/advance", json={"seconds": seconds})
    assert r.status_code == 200


async def _stored_tokens(stack: Stack, account_id: int) -> tuple[str, str]:
    rows = await raw_sql(
        stack.settings.database_url or "",
        "SELECT access_token, refresh_token FROM kommo_token WHERE account_id = $1",
        account_id,
    )
    return rows[0]["access_token"], rows[0]["refresh_token"]


async def test_single_flight_refresh_across_two_processes(stack: Stack) -> None:
    inst = await connect(stack)
    await _advance_kommo(stack, 86_400 + 60)  # Kommo: the access token is now expired
    await _expire_locally(stack, inst.account_id)
    before = await kommo_stats(stack)
    stored_before = await _stored_tokens(stack, inst.account_id)

    async with worker_context(stack) as pc1, worker_context(stack) as pc2:
        calls = [refresh_kommo_token(pc, inst.account_id) for pc in (pc1, pc2) for _ in range(10)]
        results = await asyncio.wait_for(asyncio.gather(*calls), timeout=30)
        assert sorted(results) == [False] * 19 + [True]

        after = await kommo_stats(stack)
        assert after["refresh_count"] == before["refresh_count"] + 1
        assert after["token_errors"] == before["token_errors"]
        assert await _stored_tokens(stack, inst.account_id) != stored_before

        # The new access token works at Kommo (the old one expired there).
        client = await kommo_client_for(pc1, inst.account_id)
        account = await client.get_account()
        assert account.id == inst.account_id
        assert (await kommo_stats(stack))["refresh_count"] == before["refresh_count"] + 1


async def test_kommo_client_for_refreshes_an_expiring_token(stack: Stack) -> None:
    inst = await connect(stack)
    await _advance_kommo(stack, 86_400 + 60)
    await _expire_locally(stack, inst.account_id)
    before = (await kommo_stats(stack))["refresh_count"]
    async with worker_context(stack) as pc:
        with account_reads(pc.db) as reads:
            client = await kommo_client_for(pc, inst.account_id)
        # The rows are read once, under the refresh lock, and the refresh decided on that read (a read before
        # the lock and another under it used to cost four queries here).
        assert len(reads) == 1, reads
        assert (await client.get_account()).id == inst.account_id
        # Still fresh: a second call does not refresh again.
        with account_reads(pc.db) as reads:
            await kommo_client_for(pc, inst.account_id)
        assert len(reads) == 1, reads
        assert await refresh_kommo_token(pc, inst.account_id) is False
    assert (await kommo_stats(stack))["refresh_count"] == before + 1


async def test_fifty_concurrent_callers_one_refresh_no_pool_timeout(stack: Stack) -> None:
    """50 callers in one process need Kommo as the token expires: one refresh, all succeed, the pool
    (10 + 10 overflow) is never exhausted. Before the in-process queue each caller held its own session's
    connection and a second one waiting on the advisory lock: 25 such callers ran the pool dry (timeout)."""
    inst = await connect(stack)
    await _advance_kommo(stack, 86_400 + 60)
    await _expire_locally(stack, inst.account_id)
    # A slow token endpoint: every caller arrives while the one refresh is still in flight.
    r = await stack.kommo.post("/_sandbox/faults", json={"latency_ms": 300})
    assert r.status_code == 200, r.text
    before = await kommo_stats(stack)
    stored_before = await _stored_tokens(stack, inst.account_id)

    async with worker_context(stack) as pc:

        async def caller(i: int) -> KommoClient:
            async with pc.db.session_scope() as session:
                if i % 5 == 0:
                    # Some callers are mid-transaction already (they hold a connection, as a job does).
                    await raw_session_work(session)
                return await kommo_client_for(pc, inst.account_id)

        started = asyncio.get_running_loop().time()
        results = await asyncio.wait_for(
            asyncio.gather(*(caller(i) for i in range(50)), return_exceptions=True), timeout=60
        )
        took = asyncio.get_running_loop().time() - started
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures[:3]
        after = await kommo_stats(stack)
        assert after["refresh_count"] == before["refresh_count"] + 1
        assert after["token_errors"] == before["token_errors"]
        assert await _stored_tokens(stack, inst.account_id) != stored_before
        assert took < 9, took  # under the pool timeout (10 s): nobody queued for a connection that long
        # Kommo's clock is past the old token's expiry: a client works only with the refreshed token (the first
        # caller, one that was mid-transaction, and the last).
        for i in (0, 5, 49):
            client = results[i]
            assert isinstance(client, KommoClient)
            assert (await client.get_account()).id == inst.account_id


async def raw_session_work(session: Any) -> None:
    await session.execute(text("SELECT 1"))


async def test_revoked_refresh_token_means_needs_reauth(stack: Stack) -> None:
    inst = await connect(stack)
    sandbox = stack.kommo_app.state.kommo
    for tok in sandbox.oauth.refresh.values():
        tok.revoked = True
    await _expire_locally(stack, inst.account_id)
    url = stack.settings.database_url or ""
    async with worker_context(stack) as pc:
        with pytest.raises(AccountNotReady) as caught:
            await refresh_kommo_token(pc, inst.account_id)
        assert caught.value.error_code == "needs_reauth"
        assert caught.value.status_code == 409
        rows = await raw_sql(
            url, "SELECT status, last_error FROM integration WHERE account_id = $1", inst.account_id
        )
        assert rows[0]["status"] == "needs_reauth"
        assert rows[0]["last_error"]
        assert "def50200" not in rows[0]["last_error"]
        # Every later use says the same without calling Kommo again.
        calls = (await kommo_stats(stack))["grants"], (await kommo_stats(stack))["token_errors"]
        with pytest.raises(AccountNotReady) as caught:
            await kommo_client_for(pc, inst.account_id)
        assert caught.value.error_code == "needs_reauth"
        assert ((await kommo_stats(stack))["grants"], (await kommo_stats(stack))["token_errors"]) == calls
    view = (await stack.api.get(f"/accounts/{inst.account_id}", headers=stack.admin_headers)).json()
    assert view["status"] == "needs_reauth"
    assert view["kommo"]["needs_reauth"] is True
    assert view["last_error"]
    assert view["last_error_at"]

    # Re-authorising fixes it.
    from tests.accounts.conftest import consent, follow, start_auth

    state = await start_auth(stack, inst)
    assert (await follow(stack, await consent(stack, inst, state))).status_code == 200
    rows = await raw_sql(
        url, "SELECT status, last_error FROM integration WHERE account_id = $1", inst.account_id
    )
    assert rows[0]["status"] == "connected"


async def test_not_ready_codes(stack: Stack) -> None:
    from tests.accounts.conftest import install

    inst = await install(stack)
    async with worker_context(stack) as pc, pc.db.session_scope() as session:
        with pytest.raises(AccountNotReady) as caught:
            await kommo_client_for(pc, inst.account_id)
        assert caught.value.error_code == "kommo_not_connected"
        with pytest.raises(AccountNotReady) as caught:
            await unisender_client_for(session, pc, inst.account_id)
        assert caught.value.error_code == "unisender_not_connected"


async def test_unisender_client_for(stack: Stack) -> None:
    inst = await connect(stack)
    key = (await stack.unisender.post("/_sandbox/accounts", json={})).json()["api_key"]
    r = await stack.api.post(
        f"/integration/{inst.account_id}/unisender", json={"api_key": key}, headers=stack.admin_headers
    )
    assert r.status_code == 200
    async with worker_context(stack) as pc, pc.db.session_scope() as session:
        client, esp = await unisender_client_for(session, pc, inst.account_id)
        assert esp.list_id == r.json()["list_id"]
        lists = await client.get_lists()
        assert esp.list_id in [lst.id for lst in lists]
        assert key not in repr(client)


async def test_verify_webhook_token(stack: Stack) -> None:
    inst = await connect(stack)
    async with worker_context(stack) as pc:
        auth = WebhookAuth()
        identity = await auth.verify(pc.db, inst.account_id, inst.webhook_token)
        assert (identity.subdomain, identity.host) == (inst.subdomain, f"{inst.subdomain}.kommo.com")
        for account_id, token in (
            (inst.account_id, None),
            (inst.account_id, ""),
            (inst.account_id, inst.webhook_token + "x"),
            (inst.account_id + 1, inst.webhook_token),
        ):
            with pytest.raises(Unauthorized) as caught:
                await auth.verify(pc.db, account_id, token)
            assert caught.value.error_code == "invalid_token"


async def _hooks(stack: Stack, inst: Installed) -> list[dict[str, object]]:
    r = await stack.kommo.get(f"/_sandbox/accounts/{inst.subdomain}/webhooks")
    data = r.json()
    hooks: list[dict[str, object]] = data.get("webhooks", data) if isinstance(data, dict) else data
    return hooks


async def test_failed_webhook_registration_is_recorded_and_ensure_repairs_it(stack: Stack) -> None:
    from tests.accounts.conftest import consent, follow, install, start_auth

    inst = await install(stack)
    state = await start_auth(stack, inst)
    redirect = await consent(stack, inst, state)
    # One API call per second for this integration: the account check passes, the webhook POST gets a 429.
    assert (await stack.kommo.patch("/_sandbox/config", json={"rate_limit_rps": 1})).status_code == 200
    try:
        r = await follow(stack, redirect)
    finally:
        await stack.kommo.patch("/_sandbox/config", json={"rate_limit_rps": 7})
    assert r.status_code == 200, r.text
    assert "retried" in r.text
    view = (await stack.api.get(f"/accounts/{inst.account_id}", headers=stack.admin_headers)).json()
    assert view["status"] == "connected"
    assert view["kommo"]["connected"] is True
    assert view["kommo"]["webhooks_registered"] is False
    assert view["last_error"]
    assert await _hooks(stack, inst) == []

    await asyncio.sleep(1.1)  # the sandbox's 1-s rate window
    await stack.kommo.delete("/_sandbox/faults")
    async with worker_context(stack) as pc:
        await ensure_kommo_webhooks(pc, inst.account_id)
        hooks = await _hooks(stack, inst)
        assert [h["destination"] for h in hooks] == [inst.webhook_url]
        # Idempotent: a second run finds the webhook and registers nothing new.
        before = (await kommo_stats(stack))["calls"].get("POST /api/v4/webhooks", 0)
        await ensure_kommo_webhooks(pc, inst.account_id)
        assert (await kommo_stats(stack))["calls"].get("POST /api/v4/webhooks", 0) == before
    view = (await stack.api.get(f"/accounts/{inst.account_id}", headers=stack.admin_headers)).json()
    assert view["kommo"]["webhooks_registered"] is True
    assert view["last_error"] is None


async def test_refresh_expiring_tokens_cron(stack: Stack) -> None:
    a = await connect(stack, account_id=101, subdomain="one")
    b = await connect(stack, account_id=202, subdomain="two")
    c = await connect(stack, account_id=303, subdomain="three")
    url = stack.settings.database_url or ""
    await raw_sql(
        url,
        "UPDATE kommo_token SET expires_at = now() + interval '10 minutes' WHERE account_id = $1",
        a.account_id,
    )
    await raw_sql(
        url,
        "UPDATE kommo_token SET refreshed_at = now() - interval '40 days' WHERE account_id = $1",
        b.account_id,
    )
    before = (await kommo_stats(stack))["refresh_count"]
    async with worker_context(stack) as pc:
        assert await refresh_expiring_tokens(pc) == 2
        assert await refresh_expiring_tokens(pc) == 0
    assert (await kommo_stats(stack))["refresh_count"] == before + 2
    rows = await raw_sql(
        url, "SELECT account_id, refreshed_at > now() - interval '1 minute' AS fresh FROM kommo_token"
    )
    fresh = {r["account_id"]: r["fresh"] for r in rows}
    assert fresh[a.account_id]
    assert fresh[b.account_id]
    assert c.account_id in fresh
