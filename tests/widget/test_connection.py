"""``GET /widget/connection``: what the widget's settings modal shows, for the account of Kommo's widget token
only, with CORS for Kommo account origins (errors included) like ``POST /widget/key``."""

from __future__ import annotations

from typing import Any

from tests.accounts.conftest import Installed, install
from tests.conftest import Stack

ORIGIN = "https://acme.kommo.com"


async def _token(stack: Stack, inst: Installed, **options: Any) -> str:
    body = {"client_id": inst.client_id, "subdomain": inst.subdomain, **options}
    r = await stack.kommo.post("/_sandbox/widget_token", json=body)
    assert r.status_code == 200, r.text
    token: str = r.json()["token"]
    return token


async def _connection(
    stack: Stack, token: str, origin: str = ORIGIN
) -> tuple[int, dict[str, Any], str | None]:
    r = await stack.api.get("/widget/connection", headers={"X-Auth-Token": token, "Origin": origin})
    return r.status_code, r.json(), r.headers.get("access-control-allow-origin")


async def test_connection_shows_the_state_and_lists_of_the_tokens_account(stack: Stack) -> None:
    inst = await install(stack)
    status, body, cors = await _connection(stack, await _token(stack, inst))
    assert (status, cors) == (200, ORIGIN)
    assert body["connected"] is False
    assert body["lists"] == []
    assert body["list_id"] is None

    key = (await stack.unisender.post("/_sandbox/accounts", json={})).json()["api_key"]
    r = await stack.api.post(
        "/widget/key", json={"api_key": key}, headers={"X-Auth-Token": await _token(stack, inst)}
    )
    assert r.status_code == 200, r.text
    status, body, _ = await _connection(stack, await _token(stack, inst))
    assert status == 200
    assert body["connected"] is True
    assert body["account_id"] == inst.account_id
    assert body["lists"] == [{"id": r.json()["list_id"], "title": "contactsync"}]
    assert body["list_id"] == r.json()["list_id"]
    assert body["lists_error"] is None
    assert key not in str(body)

    # Unisender refusing the stored key: the lists are empty and Unisender's reason says why.
    r = await stack.unisender.post(f"/_sandbox/accounts/{key}/access", json={"denied": True})
    assert r.status_code == 200, r.text
    status, body, _ = await _connection(stack, await _token(stack, inst))
    assert status == 200
    assert body["connected"] is True
    assert body["lists"] == []
    assert "access_denied" in body["lists_error"]


async def test_connection_needs_an_admins_widget_token_and_answers_cors_to_kommo_only(stack: Stack) -> None:
    inst = await install(stack)
    preflight = await stack.api.options(
        "/widget/connection",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-auth-token",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "GET" in preflight.headers["access-control-allow-methods"]
    assert "x-auth-token" in preflight.headers["access-control-allow-headers"].lower()

    for token, status, error in (
        ("not.a.jwt", 401, "invalid_token"),
        (await _token(stack, inst, secret="not-the-client-secret"), 401, "invalid_token"),
        (await _token(stack, inst, is_admin=False), 403, "not_account_admin"),
    ):
        got, body, cors = await _connection(stack, token)
        assert (got, body["error"], cors) == (status, error, ORIGIN)
    r = await stack.api.get("/widget/connection")
    assert r.status_code == 401
    # Another origin: answered, but the browser is not allowed to read it.
    status, _, cors = await _connection(stack, await _token(stack, inst), origin="https://evil.example")
    assert (status, cors) == (200, None)
