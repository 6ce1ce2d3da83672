"""Inbound webhooks: verify the per-account token, store the raw body, answer 200 within milliseconds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.deps import IntakeDep
from app.api.errors import BodyRefused, render_exception
from app.api.routing import AppRoute
from app.sync import ingest
from app.sync.ingest import WebhookIntake

router = APIRouter(prefix="/webhooks", tags=["webhooks"], route_class=AppRoute)


class WebhookAck(BaseModel):
    status: Literal["accepted", "duplicate"]


# Pre-encoded answers: the webhook path is the hottest in the service and the body never varies.
_ACK = {True: b'{"status":"accepted"}', False: b'{"status":"duplicate"}'}


def _ack(accepted: bool) -> Response:
    return Response(_ACK[accepted], media_type="application/json")


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
    """Documents the operation. Requests reach ``KommoWebhookFastPath`` first, which runs the same intake."""
    intake: WebhookIntake = request.app.state.intake
    account_id: int = request.path_params["account_id"]
    token = request.query_params.get("token")
    return _answer(await intake.accept_kommo(account_id, token, _body_reader(request)))


def _body_reader(request: Request) -> ingest.ReadBody:
    async def read() -> bytes | None:
        try:
            return await request.body()
        except ClientDisconnect:
            return None

    return read


def _answer(accepted: bool | None) -> Response:
    # None: the client went away before its body arrived; whatever is sent is not read (metrics count 499).
    return _ack(bool(accepted))


_KOMMO_PREFIX = "/webhooks/kommo/"


@dataclass(frozen=True)
class _RouteLabel:
    path: str  # what MetricsMiddleware labels requests with


_KOMMO_ROUTE = _RouteLabel("/webhooks/kommo/{account_id:int}")


class KommoWebhookFastPath:
    """Serves ``POST /webhooks/kommo/{account_id}`` before the router: the busiest endpoint by far, and
    routing, dependency solving and the per-request exit stacks cost more CPU than the intake itself.

    It sits inside the request-id, metrics and body-limit middlewares, and renders errors exactly as the app's
    exception handlers do; any other request goes on to the app unchanged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        tail = path[len(_KOMMO_PREFIX) :]
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not path.startswith(_KOMMO_PREFIX)
            or not (tail.isascii() and tail.isdigit())
        ):
            await self.app(scope, receive, send)
            return
        scope["route"] = _KOMMO_ROUTE
        intake: WebhookIntake = scope["app"].state.intake
        token = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [None])[-1]

        async def read_body() -> bytes | None:
            chunks: list[bytes] = []
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    return b"".join(chunks)

        try:
            accepted = await intake.accept_kommo(int(tail), token, read_body)
            if accepted is None:
                return  # the client went away: nobody to answer, nothing stored
            response = _ack(accepted)
        except BodyRefused:
            raise  # BodyGuardMiddleware answers 413 / 408
        except Exception as exc:
            response = render_exception(exc)
        await response(scope, receive, send)


@router.post(
    "/unisender/{account_id}",
    summary="Unisender event hook (every layout; unsubscribes take effect, other events are kept)",
    responses={200: {"model": WebhookAck}},
)
async def unisender_webhook(
    account_id: int, request: Request, intake: IntakeDep, token: str | None = Query(None)
) -> Response:
    # Owns its transaction (not SessionDep): the whole of its database work is under the intake deadline.
    return _answer(await intake.accept_unisender(account_id, token, _body_reader(request)))
