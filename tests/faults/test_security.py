"""Secrets stay secret during a whole e2e run (service, worker subprocess, token refresh, webhooks, full sync):
no token, client secret or api key appears in any log line or API response; operator endpoints refuse missing
or wrong tokens; webhook and admin tokens are compared with hmac.compare_digest."""

from __future__ import annotations

import hmac
import random
from pathlib import Path

import httpx
import pytest

from app.security import tokens
from tests.conftest import Stack, raw_sql
from tests.faults.support import (
    WorkerProcess,
    edit_stream,
    wait_worker_ready,
    worker_env,
)
from tests.support.e2e import assert_mirror_exact, connect_account, wait_quiet


async def test_no_secret_in_logs_or_responses(
    stack: Stack, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    responses: list[str] = []

    async def record(response: httpx.Response) -> None:
        await response.aread()
        responses.append(response.text + "\n" + "\n".join(f"{k}: {v}" for k, v in response.headers.items()))

    stack.api.event_hooks["response"].append(record)
    account = await connect_account(stack, contacts=300, seed=18)
    url = stack.settings.database_url
    assert url
    worker = WorkerProcess(worker_env(stack.settings), tmp_path, "w")
    worker.start()
    try:
        await wait_worker_ready(worker)
        r = await stack.api.post(
            "/sync/contacts", headers=stack.admin_headers, json={"id": account.account_id}
        )
        assert r.status_code == 202, r.text
        await wait_quiet(stack, account, within=60)
        # A token refresh mid-stream: new access and refresh tokens pass through the worker too.
        await raw_sql(url, "UPDATE kommo_token SET expires_at = now() - interval '1 second'")
        await edit_stream(stack, account, 40, random.Random(18))
        await wait_quiet(stack, account, within=60)
        await assert_mirror_exact(stack, account)
        for path in ("/accounts", f"/accounts/{account.account_id}", "/sync/runs"):
            assert (await stack.api.get(path, headers=stack.admin_headers)).status_code == 200
    finally:
        worker.stop()

    oauth = stack.kommo_app.state.kommo.oauth
    secrets = {
        "admin token": stack.settings.admin_token.get_secret_value(),
        "kommo client secret": oauth.integrations[account.client_id].client_secret,
        "unisender api key": account.api_key,
    }
    for i, t in enumerate(oauth.access):
        secrets[f"kommo access token {i}"] = t
    for i, t in enumerate(oauth.refresh):
        secrets[f"kommo refresh token {i}"] = t
    assert len(oauth.refresh) >= 2, "the refresh did not happen"
    for key in stack.settings.secret_keys.get_secret_value().split(","):  # type: ignore[union-attr]
        secrets["fernet key"] = key
    log_text = capfd.readouterr().err + "\n" + "\n".join(worker.log_lines())
    assert len(log_text) > 5_000  # the logs of a whole sync and stream were captured (~9,000 characters)
    assert "outbox.pushed" in log_text
    leaks = [name for name, value in secrets.items() if value and value in log_text]
    assert not leaks, f"secrets in logs: {leaks}"
    # The webhook token is part of the webhook URL the operator must give Kommo, so it appears in that one
    # response; it must not appear in logs.
    assert account.webhook_token not in log_text
    body_leaks = [name for name, value in secrets.items() for text in responses if value in text]
    assert not body_leaks, f"secrets in API responses: {sorted(set(body_leaks))}"


async def test_operator_endpoints_refuse_missing_or_wrong_tokens(stack: Stack) -> None:
    admin = stack.settings.admin_token.get_secret_value()
    bad = [{}, {"Authorization": ""}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong"},
           {"Authorization": f"Basic {admin}"}, {"Authorization": f"Bearer {admin[:-1]}"},
           {"Authorization": f"Bearer {admin}x"}, {"X-Admin-Token": admin}]  # fmt: skip
    calls = [("GET", "/accounts", None), ("GET", "/accounts/1", None), ("GET", "/sync/runs", None),
             ("POST", "/sync/contacts", {"id": 1}), ("GET", "/sync/runs/x", None),
             ("POST", "/integration", {}), ("GET", "/kommo/contacts?id=1", None)]  # fmt: skip
    for method, path, body in calls:
        for headers in bad:
            r = await stack.api.request(method, path, headers=headers, json=body)
            assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
            assert {"error", "detail"} <= set(r.json())
            assert admin not in r.text


async def test_tokens_compared_in_constant_time(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every webhook and admin token check goes through hmac.compare_digest (patched here to count calls)."""
    account = await connect_account(stack)
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def counting(a: object, b: object) -> bool:
        calls.append((a, b))
        return real(a, b)  # type: ignore[arg-type]

    monkeypatch.setattr(hmac, "compare_digest", counting)
    url = f"/webhooks/kommo/{account.account_id}"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for token in ("wrong", None, account.webhook_token):
        before = len(calls)
        params = {"token": token} if token is not None else {}
        r = await stack.api.post(url, params=params, content=b"account[id]=1", headers=form)
        assert len(calls) > before, f"no constant-time comparison for token={token!r}"
        assert r.status_code in (200, 400, 401), r.text
    before = len(calls)
    r = await stack.api.get("/accounts", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401
    assert len(calls) > before, "admin token not compared with compare_digest"
    assert tokens.token_matches(account.webhook_token, tokens.hash_token(account.webhook_token))
