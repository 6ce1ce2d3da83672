"""``ValidAccount`` (``id`` query) and ``ValidAccountPath`` (``{account_id}`` path): the account a request names,
resolved once through the request's session, or the one 404 ``unknown_account``."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from app.api.deps import SessionDep, ValidAccount, ValidAccountPath
from app.api.errors import install_error_handlers
from app.context import ProcessContext
from app.db.models import Integration
from tests.accounts.conftest import integration_row


def _app(ctx: ProcessContext) -> FastAPI:
    app = FastAPI()
    app.state.ctx = ctx
    install_error_handlers(app)

    @app.get("/by-query")
    async def by_query(integration: ValidAccount, session: SessionDep) -> dict[str, object]:
        # The endpoint's session is the dependency's: the row is the one already in it.
        same = await session.get(Integration, integration.account_id) is integration
        return {"account_id": integration.account_id, "same_session": same}

    @app.get("/by-path/{account_id}")
    async def by_path(integration: ValidAccountPath) -> dict[str, object]:
        return {"account_id": integration.account_id, "status": integration.status}

    return app


async def test_valid_account_resolves_or_answers_one_404(ctx: ProcessContext) -> None:
    async with ctx.db.session_scope() as session:
        session.add(integration_row(5))
    transport = httpx.ASGITransport(app=_app(ctx))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        r = await client.get("/by-query", params={"id": 5})
        assert (r.status_code, r.json()) == (200, {"account_id": 5, "same_session": True})
        r = await client.get("/by-path/5")
        assert (r.status_code, r.json()) == (200, {"account_id": 5, "status": "connected"})
        for r in (await client.get("/by-query", params={"id": 6}), await client.get("/by-path/6")):
            assert r.status_code == 404
            assert r.json() == {"error": "unknown_account", "detail": "Account 6 is not registered."}
        # Not an account id at all (zero, beyond PostgreSQL's bigint, not a number): 422, nothing looked up.
        for bad in ("0", str(2**63), "x"):
            for r in (await client.get("/by-query", params={"id": bad}), await client.get(f"/by-path/{bad}")):
                assert r.status_code == 422, (bad, r.text)
                assert r.json()["error"] == "validation_error"
        r = await client.get("/by-query")
        assert r.status_code == 422
