"""Inbound webhooks: verify the per-account token, store the raw body, answer 200 within milliseconds."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from app.api.deps import ContextDep, IntakeDep, SessionDep
from app.sync import ingest

router = APIRouter(prefix="/webhooks", tags=["webhooks"])


class WebhookAck(BaseModel):
    status: Literal["accepted", "duplicate"]


# Pre-encoded answers: the webhook path is the hottest in the service and the body never varies.
_ACK = {
    True: Response(b'{"status":"accepted"}', media_type="application/json"),
    False: Response(b'{"status":"duplicate"}', media_type="application/json"),
}


def _ack(accepted: bool) -> Response:
    template = _ACK[accepted]
    return Response(template.body, media_type="application/json")


@router.post(
    "/kommo/{account_id}",
    summary="Kommo contact webhooks (form-encoded)",
    responses={200: {"model": WebhookAck}},
)
async def kommo_webhook(
    account_id: int, request: Request, intake: IntakeDep, token: str | None = Query(None)
) -> Response:
    return _ack(await intake.accept_kommo(account_id, token, await request.body()))


@router.post(
    "/unisender/{account_id}",
    summary="Unisender event hook (unsubscribes)",
    responses={200: {"model": WebhookAck}},
)
async def unisender_webhook(
    account_id: int,
    request: Request,
    ctx: ContextDep,
    intake: IntakeDep,
    session: SessionDep,
    token: str | None = Query(None),
) -> Response:
    await intake.auth.verify(ctx.db, account_id, token)
    return _ack(await ingest.accept_unisender_hook(session, ctx, account_id, await request.body()))
