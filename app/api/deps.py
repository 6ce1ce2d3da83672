"""FastAPI dependencies: process context, the request's transaction owner, operator auth."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.context import ProcessContext
from app.errors import Unauthorized
from app.sync.ingest import WebhookIntake


# Dependencies are ``async def`` even when they do not await: FastAPI runs plain ``def`` ones in a thread.
async def get_context(request: Request) -> ProcessContext:
    ctx: ProcessContext = request.app.state.ctx
    return ctx


ContextDep = Annotated[ProcessContext, Depends(get_context)]


async def get_session(ctx: ContextDep) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: commit when the endpoint returns, roll back if it raises.

    Declared with ``scope="function"`` so the commit happens before the response is sent: a webhook is
    acknowledged only once it is durable. Jobs queued with ``after_commit`` go to Redis after the commit.
    """
    async with ctx.db.session_scope() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_intake(request: Request) -> WebhookIntake:
    intake: WebhookIntake = request.app.state.intake
    return intake


IntakeDep = Annotated[WebhookIntake, Depends(get_intake)]


async def require_admin(request: Request, ctx: ContextDep) -> None:
    """Operator endpoints: ``Authorization: Bearer <ADMIN_TOKEN>``, compared in constant time."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    expected = ctx.settings.admin_token.get_secret_value()
    if scheme.lower() != "bearer" or not presented:
        hmac.compare_digest(b"x", b"y")
        raise Unauthorized("Missing bearer token: send Authorization: Bearer <admin token>.")
    if not hmac.compare_digest(presented.strip().encode(), expected.encode()):
        raise Unauthorized("Invalid admin token.")


AdminDep = Depends(require_admin)
