"""Secrets written through the ORM are ciphertext in the raw column."""

from __future__ import annotations

from sqlalchemy import select

from app.context import ProcessContext
from app.db.models import EspAccount, Integration
from tests.conftest import raw_sql


async def test_secret_columns_are_not_readable_in_clear(ctx: ProcessContext, clean_db: str) -> None:
    async with ctx.db.session_scope() as session:
        session.add(
            Integration(
                account_id=7,
                subdomain="acme",
                client_id="cid",
                client_secret="client-secret-XYZ",
                redirect_uri="https://x/cb",
                webhook_token_hash="0" * 64,
            )
        )
        await session.flush()
        session.add(EspAccount(account_id=7, api_key="unisender-key-ABC"))
    rows = await raw_sql(clean_db, "SELECT client_secret FROM integration")
    assert rows[0]["client_secret"] != "client-secret-XYZ"
    assert "client-secret-XYZ" not in rows[0]["client_secret"]
    key_rows = await raw_sql(clean_db, "SELECT api_key FROM esp_account")
    assert "unisender-key-ABC" not in key_rows[0]["api_key"]
    async with ctx.db.session_scope() as session:
        integ = (await session.execute(select(Integration))).scalar_one()
        assert integ.client_secret == "client-secret-XYZ"
