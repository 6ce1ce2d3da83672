"""The widget's credential: Kommo's disposable widget JWT (minted by the Kommo sandbox) sets the Unisender key of
its own account only; the webhook token, which sits in URLs stored at Kommo and Unisender, no longer does."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.accounts.conftest import Installed, install
from tests.conftest import Stack, raw_sql


async def _unisender_key(stack: Stack) -> str:
    r = await stack.unisender.post("/_sandbox/accounts", json={})
    assert r.status_code == 200, r.text
    key: str = r.json()["api_key"]
    return key


async def _esp_accounts(stack: Stack) -> list[int]:
    rows = await raw_sql(stack.settings.database_url or "", "SELECT account_id FROM esp_account ORDER BY 1")
    return [r["account_id"] for r in rows]


async def _token(stack: Stack, inst: Installed, subdomain: str | None = None, **options: Any) -> str:
    body = {"client_id": inst.client_id, "subdomain": subdomain or inst.subdomain, **options}
    r = await stack.kommo.post("/_sandbox/widget_token", json=body)
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


async def test_webhook_token_no_longer_sets_the_unisender_key(stack: Stack) -> None:
    inst = await install(stack)
    key = await _unisender_key(stack)
    path = f"/integration/{inst.account_id}/unisender"
    for kwargs in (
        {"params": {"token": inst.webhook_token}},
        {"headers": {"X-Widget-Token": inst.webhook_token}},
        {"headers": {"X-Auth-Token": inst.webhook_token}},
        {"headers": {"Authorization": f"Bearer {inst.webhook_token}"}},
    ):
        r = await stack.api.post(path, json={"api_key": key}, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 401, (kwargs, r.text)
    assert await _esp_accounts(stack) == []


async def test_widget_token_sets_the_key_of_its_own_account_only(stack: Stack) -> None:
    inst = await install(stack)
    # Another account with its own integration, and one that installed the same (public) integration.
    other = await install(stack, account_id=555, subdomain="other")
    await stack.kommo.post("/_sandbox/accounts", json={"subdomain": "beta", "id": 777})
    r = await stack.api.post(
        "/integration",
        headers=stack.admin_headers,
        json={
            "account_id": 777,
            "subdomain": "beta",
            "client_id": inst.client_id,
            "client_secret": inst.client_secret,
            "redirect_uri": inst.redirect_uri,
        },
    )
    assert r.status_code == 201, r.text
    key = await _unisender_key(stack)
    path = f"/integration/{inst.account_id}/unisender"
    now = int(time.time())

    refused = {
        "garbage": ("not.a.jwt", 401),
        "other integration's account": (await _token(stack, other), 401),
        "same integration, other account": (await _token(stack, inst, "beta"), 403),
        "expired": (
            await _token(stack, inst, claims={"iat": now - 1900, "nbf": now - 1900, "exp": now - 100}),
            401,
        ),
        "not yet valid": (await _token(stack, inst, claims={"iat": now + 600, "nbf": now + 600}), 401),
        "wrong audience": (await _token(stack, inst, claims={"aud": "https://evil.example"}), 401),
        "wrong client_uuid": (await _token(stack, inst, claims={"client_uuid": "someone-else"}), 401),
        "wrong key": (await _token(stack, inst, secret="not-the-client-secret"), 401),
        "alg none": (await _token(stack, inst, alg="none"), 401),
        "alg HS512": (await _token(stack, inst, alg="HS512"), 401),
        "id claim as a string": (await _token(stack, inst, claims={"account_id": str(inst.account_id)}), 401),
        "not an admin": (await _token(stack, inst, is_admin=False), 403),
    }
    for name, (token, status) in refused.items():
        r = await stack.api.post(path, json={"api_key": key}, headers={"X-Auth-Token": token})
        assert r.status_code == status, (name, r.text)
        assert r.json()["error"] in ("invalid_token", "wrong_account", "not_account_admin"), name
        if "account" not in name:  # a good token of another account is good at /widget/key (for that one)
            r = await stack.api.post("/widget/key", json={"api_key": key}, headers={"X-Auth-Token": token})
            assert r.status_code == status, (name, r.text)
    # The token is checked before the body: no 422 that describes the body to someone without credentials.
    r = await stack.api.post(path, json={"nope": 1}, headers={"X-Auth-Token": "x.y.z"})
    assert r.status_code == 401
    assert await _esp_accounts(stack) == []

    good = await _token(stack, inst)
    r = await stack.api.post(path, json={"api_key": key}, headers={"X-Auth-Token": good})
    assert r.status_code == 200, r.text
    assert await _esp_accounts(stack) == [inst.account_id]
    # The widget's own endpoint: the account comes from the token only.
    other_key = await _unisender_key(stack)
    r = await stack.api.post(
        "/widget/key",
        json={"api_key": other_key},
        headers={"X-Auth-Token": await _token(stack, inst, "beta")},
    )
    assert r.status_code == 200, r.text
    assert r.json()["account_id"] == 777
    assert await _esp_accounts(stack) == sorted([inst.account_id, 777])


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://acme.kommo.com", True),
        ("https://etesttask.amocrm.ru", True),
        ("https://evil.example", False),
        ("http://acme.kommo.com", False),
        ("https://acme.kommo.com.evil.example", False),
        ("null", False),
    ],
)
async def test_widget_key_answers_cors_for_kommo_account_origins_only(
    stack: Stack, origin: str, allowed: bool
) -> None:
    inst = await install(stack)
    key = await _unisender_key(stack)
    preflight = await stack.api.options(
        "/widget/key",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-auth-token",
        },
    )
    assert preflight.status_code == 204
    allow = preflight.headers.get("access-control-allow-origin")
    assert allow == (origin if allowed else None)
    if allowed:
        assert "x-auth-token" in preflight.headers["access-control-allow-headers"].lower()
        assert "POST" in preflight.headers["access-control-allow-methods"]
    # The answer itself, an error included (the widget must be able to read why it was refused).
    for token, status in (("bad", 401), (await _token(stack, inst), 200)):
        r = await stack.api.post(
            "/widget/key", json={"api_key": key}, headers={"Origin": origin, "X-Auth-Token": token}
        )
        assert r.status_code == status, r.text
        assert r.headers.get("access-control-allow-origin") == (origin if allowed else None)
    # Only that path: the operator endpoints answer no CORS.
    r = await stack.api.post(
        f"/integration/{inst.account_id}/unisender",
        json={"api_key": key},
        headers={"Origin": origin, "X-Auth-Token": await _token(stack, inst)},
    )
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
