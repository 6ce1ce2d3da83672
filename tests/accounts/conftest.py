"""Helpers for the accounts tests: set up an integration and walk the OAuth dance against the Kommo sandbox."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from sqlalchemy import event

from app.db.models import Integration
from app.db.session import Database
from app.db.states import IntegrationStatus
from tests.conftest import Stack


@dataclass
class Installed:
    account_id: int
    subdomain: str
    client_id: str
    client_secret: str
    webhook_url: str
    auth_url: str
    redirect_uri: str

    @property
    def webhook_token(self) -> str:
        return parse_qs(urlsplit(self.webhook_url).query)["token"][0]


def integration_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account_id": 32720107,
        "subdomain": "acme",
        "client_id": "client-" + secrets.token_hex(4),
        "client_secret": "secret-" + secrets.token_hex(16),
        "redirect_uri": "https://contactsync.example/auth/callback",
    }
    body.update(overrides)
    return body


async def install(
    stack: Stack, *, account_id: int = 32720107, subdomain: str = "acme", create_account: bool = True
) -> Installed:
    """Create the account (unless ``create_account`` is False: the test made it) and integration in the Kommo
    sandbox and the integration in the service."""
    api_url = str(stack.api.base_url).rstrip("/")
    if create_account:
        r = await stack.kommo.post("/_sandbox/accounts", json={"subdomain": subdomain, "id": account_id})
        assert r.status_code == 201, r.text
    else:
        account_id = stack.kommo_app.state.kommo.accounts[subdomain].id
    r = await stack.kommo.post(
        "/_sandbox/integrations",
        json={"redirect_uri": f"{api_url}/auth/callback", "disable_hook_url": f"{api_url}/kommo/disable"},
    )
    assert r.status_code == 201, r.text
    integ = r.json()
    r = await stack.api.post(
        "/integration",
        json={
            "account_id": account_id,
            "subdomain": subdomain,
            "client_id": integ["client_id"],
            "client_secret": integ["client_secret"],
            "redirect_uri": integ["redirect_uri"],
        },
        headers=stack.admin_headers,
    )
    assert r.status_code == 201, r.text
    out = r.json()
    return Installed(
        account_id=account_id,
        subdomain=subdomain,
        client_id=integ["client_id"],
        client_secret=integ["client_secret"],
        webhook_url=out["webhook_url"],
        auth_url=out["auth_url"],
        redirect_uri=integ["redirect_uri"],
    )


async def start_auth(stack: Stack, inst: Installed) -> str:
    """Follow the signed connect link (GET /auth?id=&sig=) and return the state from Kommo's consent URL."""
    r = await stack.api.get(inst.auth_url.removeprefix(stack.settings.public_url))
    assert r.status_code == 302, r.text
    location = r.headers["location"]
    assert location.startswith(stack.settings.kommo_auth_url)
    return parse_qs(urlsplit(location).query)["state"][0]


async def consent(stack: Stack, inst: Installed, state: str | None, *, deny: bool = False) -> str:
    """The sandbox's Allow/Deny button: the redirect URL Kommo would send the browser to."""
    body: dict[str, Any] = {"client_id": inst.client_id, "subdomain": inst.subdomain, "deny": deny}
    if state is not None:
        body["state"] = state
    r = await stack.kommo.post("/_sandbox/authorize", json=body)
    assert r.status_code == 200, r.text
    url: str = r.json()["redirect_url"]
    return url


async def follow(stack: Stack, redirect_url: str) -> httpx.Response:
    """The browser landing on our callback."""
    parts = urlsplit(redirect_url)
    return await stack.api.get(f"{parts.path}?{parts.query}")


async def connect(stack: Stack, **kwargs: Any) -> Installed:
    """install() then the whole OAuth dance; asserts the callback said connected."""
    inst = await install(stack, **kwargs)
    state = await start_auth(stack, inst)
    r = await follow(stack, await consent(stack, inst, state))
    assert r.status_code == 200, r.text
    return inst


async def kommo_stats(stack: Stack) -> dict[str, Any]:
    r = await stack.kommo.get("/_sandbox/stats")
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


@contextmanager
def account_reads(db: Database) -> Iterator[list[str]]:
    """Collect the SELECTs that ``db``'s engine sends to the ``integration`` or ``kommo_token`` table."""
    seen: list[str] = []

    def on_execute(*args: Any) -> None:
        statement = str(args[2]).lower()
        if statement.lstrip().startswith("select") and (
            "from integration" in statement or "kommo_token" in statement
        ):
            seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", on_execute)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", on_execute)


def integration_row(account_id: int, status: IntegrationStatus = IntegrationStatus.CONNECTED) -> Integration:
    """An integration row as a connected account has it (for tests that write rows directly).

    Its secrets are random: decrypted values join the process's log-redaction list, and a common word there
    would mask that word in every later test's logs."""
    return Integration(
        account_id=account_id,
        subdomain=f"acc{account_id}",
        kommo_host=f"acc{account_id}.kommo.com",
        client_id=f"client-{account_id}",
        client_secret="secret-" + secrets.token_hex(16),
        redirect_uri="https://contactsync.example/auth/callback",
        webhook_token_hash="0" * 64,
        webhook_token="wh-" + secrets.token_hex(16),
        status=status,
    )
