"""The account page's dead letters: listed, replayed and discarded through ``app.deadletters``' service, as
``/accounts/{id}/dead-letters…`` does, recorded with the actor ``console``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import integrations
from app.accounts.errors import MAX_ACCOUNT_ID
from app.api.deps import ContextDep, SessionDep
from app.console.auth import CheckedOperator
from app.console.render import ConsoleRoute, see_other
from app.deadletters import service
from app.deadletters.schemas import DeadLetterPage, Selection

log = structlog.get_logger(__name__)

router = APIRouter(route_class=ConsoleRoute)
ACTOR = "console"
SHOWN = 50


async def listed(session: AsyncSession, account_id: int) -> DeadLetterPage:
    """The newest dead letters of the account, with the count per kind."""
    return await service.list_page(session, account_id, per_page=SHOWN)


async def totals(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, int]:
    """Per account, how many dead letters it holds (every kind): one statement for the whole overview."""
    return await service.totals(session, account_ids)


async def _account_id(session: SessionDep, account_id: Annotated[int, Path(gt=0, le=MAX_ACCOUNT_ID)]) -> int:
    return (await integrations.require_account(session, account_id)).account_id


AccountIdDep = Annotated[int, Depends(_account_id)]


async def _selection(request: Request) -> Selection:
    form = await request.form()
    if form.get("all"):
        return Selection.everything()
    return Selection.of_ids([v for v in form.getlist("ids") if isinstance(v, str)])


@router.post("/accounts/{account_id}/dead-letters/replay")
async def replay(
    request: Request,
    operator: CheckedOperator,
    ctx: ContextDep,
    session: SessionDep,
    account_id: AccountIdDep,
) -> Response:
    result = await service.replay(session, ctx.queue, account_id, await _selection(request), actor=ACTOR)
    log.info("console.dead_letters_replayed", account_id=account_id, affected=result.affected)
    return see_other(f"/console/accounts/{account_id}?notice=replayed#dead-letters")


@router.post("/accounts/{account_id}/dead-letters/discard")
async def discard(
    request: Request, operator: CheckedOperator, session: SessionDep, account_id: AccountIdDep
) -> Response:
    result = await service.discard(session, account_id, await _selection(request), actor=ACTOR)
    log.info("console.dead_letters_discarded", account_id=account_id, affected=result.affected)
    return see_other(f"/console/accounts/{account_id}?notice=discarded#dead-letters")
