"""A request that fails logs its traceback without a secret, in the console format too (the dev default)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Request
from sqlalchemy import select

from app.context import ProcessContext
from app.db.models import EspAccount, Integration
from app.logging import configure_logging
from tests.conftest import raw_sql


def _fragments(secret: str) -> list[str]:
    """Pieces of a secret that a wrapped or truncated rendering would still show."""
    return [secret[i : i + 12] for i in range(0, len(secret) - 12, 6)]


async def _store_account(ctx: ProcessContext, api_key: str) -> None:
    async with ctx.db.session_scope() as session:
        session.add(
            Integration(
                account_id=7,
                subdomain="acme",
                client_id="cid",
                client_secret="client-secret-for-logs",
                redirect_uri="https://x/cb",
                webhook_token_hash="0" * 64,
            )
        )
        await session.flush()
        session.add(EspAccount(account_id=7, api_key=api_key))


async def _failing_endpoint(request: Request) -> None:
    # Like any handler that holds a credential: the request (its Authorization header), the decrypted key and
    # the stored ciphertext are locals of frames in the traceback, and the message quotes the key.
    ctx: ProcessContext = request.app.state.ctx
    async with ctx.db.session_scope() as session:
        esp = (await session.execute(select(EspAccount))).scalar_one()
        api_key = esp.api_key
    stored = await raw_sql(ctx.settings.require_database_url(), "SELECT api_key FROM esp_account")
    ciphertext = stored[0]["api_key"]
    raise RuntimeError(f"Unisender refused key {api_key} (stored as {ciphertext})")


@pytest.mark.parametrize("fmt", ["console", "json"])
async def test_failing_request_logs_no_secret(
    fmt: str,
    api: httpx.AsyncClient,
    ctx: ProcessContext,
    admin_headers: dict[str, str],
    admin_token: str,
    clean_db: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    unisender_key = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
    await _store_account(ctx, unisender_key)
    ciphertext = (await raw_sql(clean_db, "SELECT api_key FROM esp_account"))[0]["api_key"]
    app: FastAPI = api.app  # type: ignore[attr-defined]
    app.add_api_route("/_test/fail", _failing_endpoint, methods=["GET"])
    capsys.readouterr()
    configure_logging(fmt=fmt, level="INFO", force=True)
    try:
        r = await api.get("/_test/fail", headers=admin_headers)
    finally:
        configure_logging(fmt="json", level="INFO", force=True)
    assert r.status_code == 500
    assert r.json()["error"] == "internal_error"
    err = capsys.readouterr().err
    assert "request.unhandled_error" in err, err
    assert "_failing_endpoint" in err, err  # the traceback is there
    for name, secret in {"admin token": admin_token, "unisender key": unisender_key}.items():
        shown = [f for f in _fragments(secret) if f in err]
        assert not shown, f"{name} shown in {fmt} log: {shown}\n{err}"
    # A ciphertext's first bytes are a version and a timestamp: look at its random part.
    shown = [f for f in _fragments(ciphertext[16:]) if f in err]
    assert not shown, f"ciphertext shown in {fmt} log: {shown}\n{err}"
