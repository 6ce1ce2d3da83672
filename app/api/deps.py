"""FastAPI dependencies: process context, the request's transaction owner, operator auth, the account a
request names."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.errors import MAX_ACCOUNT_ID
from app.accounts.integrations import require_account
from app.context import ProcessContext
from app.db.models import Integration
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


# An account id as the API takes it: positive, and within PostgreSQL's bigint (a larger one names no account).
AccountIdQuery = Annotated[int, Query(gt=0, le=MAX_ACCOUNT_ID, description="Kommo account id")]
AccountIdPath = Annotated[int, Path(gt=0, le=MAX_ACCOUNT_ID, description="Kommo account id")]


async def valid_account(session: SessionDep, id: AccountIdQuery) -> Integration:
    """The integration of the account in the ``id`` query parameter; 404 ``unknown_account`` otherwise."""
    return await require_account(session, id)


async def valid_account_path(session: SessionDep, account_id: AccountIdPath) -> Integration:
    """The integration of the account in the ``{account_id}`` path; 404 ``unknown_account`` otherwise."""
    return await require_account(session, account_id)


# The account a request names, resolved once, through the request's own session and transaction (the
# endpoint's ``SessionDep`` is the same session, so the row is shared). Body-carried ids: call
# ``app.accounts.integrations.require_account(session, account_id)``, which raises the same 404.
ValidAccount = Annotated[Integration, Depends(valid_account)]
ValidAccountPath = Annotated[Integration, Depends(valid_account_path)]
