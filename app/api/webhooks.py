"""Inbound webhooks: verify the per-account token, store the raw body, answer 200 within milliseconds."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from app.api.deps import ContextDep, IntakeDep, SessionDep
from app.sync import ingest
from app.sync.ingest import WebhookIntake

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


_KOMMO_PARAMETERS = [
    {"name": "account_id", "in": "path", "required": True, "schema": {"type": "integer"}},
    {"name": "token", "in": "query", "required": False, "schema": {"type": "string"}},
]


@router.post(
    "/kommo/{account_id:int}",
    summary="Kommo contact webhooks (form-encoded)",
    responses={200: {"model": WebhookAck}},
    # The endpoint reads its parameters itself (the hottest path skips FastAPI's dependency solving), so
    # they are declared here for the OpenAPI document.
    openapi_extra={
        "parameters": _KOMMO_PARAMETERS,
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
        },
    },
)
async def kommo_webhook(request: Request) -> Response:
    intake: WebhookIntake = request.app.state.intake
    account_id: int = request.path_params["account_id"]
    token = request.query_params.get("token")
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
