"""Inbound webhooks: verify the per-account token, store the raw body, answer 200 within milliseconds."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request

from app.accounts.service import verify_webhook_token
from app.api.deps import ContextDep, SessionDep
from app.sync import ingest

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


@router.post("/kommo/{account_id}", summary="Kommo contact webhooks (form-encoded)")
async def kommo_webhook(
    account_id: int, request: Request, ctx: ContextDep, session: SessionDep, token: str | None = Query(None)
) -> dict[str, object]:
    await verify_webhook_token(session, account_id, token)
    accepted = await ingest.accept_kommo_webhook(session, ctx, account_id, await request.body())
    return {"status": "accepted" if accepted else "duplicate"}


@router.post("/unisender/{account_id}", summary="Unisender event hook (unsubscribes)")
async def unisender_webhook(
    account_id: int, request: Request, ctx: ContextDep, session: SessionDep, token: str | None = Query(None)
) -> dict[str, object]:
    await verify_webhook_token(session, account_id, token)
    accepted = await ingest.accept_unisender_hook(session, ctx, account_id, await request.body())
    return {"status": "accepted" if accepted else "duplicate"}
