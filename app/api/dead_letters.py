"""Operator endpoints for an account's dead letters: list them, replay them through the normal path, discard
them, and see who did what (``app.deadletters``)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field
from pydantic.config import JsonDict

from app.api.deps import AdminDep, ContextDep, SessionDep, ValidAccountPath
from app.api.routing import AppRoute
from app.db.states import DeadLetterKind
from app.deadletters import service
from app.deadletters.schemas import ActionPage, ActionResult, DeadLetterPage, KindCounts, Selection

router = APIRouter(tags=["dead letters"], dependencies=[AdminDep], route_class=AppRoute)

# The API's actor: the admin token is shared, so the record says "operator" (the CLI says "cli", the console
# "console").
ACTOR = "operator"
_KINDS: JsonDict = {"enum": [*service.KINDS, None]}
# Checked by the service, which answers its own codes (unknown_kind, invalid_id, too_many_ids); the document
# still shows the rules.
_ID_RULES: JsonDict = {"pattern": r"^([a-z_]{1,16}:)?[0-9]{1,18}$"}


class SelectionIn(BaseModel):
    """``{"ids": [...]}`` or ``{"all": true}``, with an optional ``kind``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    ids: list[str] | None = Field(
        None,
        description=f"Dead letters by id (outbox:123, or 123 with kind); at most {service.MAX_IDS}",
        json_schema_extra={"items": {"type": "string", **_ID_RULES}, "maxItems": service.MAX_IDS},
    )
    all: bool = Field(
        False, description=f"Every dead letter (of kind), the oldest {service.MAX_ALL} per request"
    )
    kind: str | None = Field(None, description="event, outbox, crm_write or signup", json_schema_extra=_KINDS)

    def selection(self) -> Selection:
        return Selection(ids=tuple(self.ids or ()), all=self.all, kind=self.kind)


class _ActionOut(BaseModel):
    action_id: int
    account_id: int
    actor: str
    at: datetime
    kind: DeadLetterKind | None
    requested: int = Field(description="Dead letters named (ids) or matched (all)")
    skipped: int = Field(description="Named but no longer dead (already replayed or discarded): left alone")
    more: bool = Field(description="all: more are left than one request takes; send it again")
    by_kind: dict[str, KindCounts] = Field(description="Per kind: affected (replayed or discarded), skipped")


class ReplayOut(_ActionOut):
    replayed: int = Field(description="Put back on their normal path (pending, their job enqueued)")


class DiscardOut(_ActionOut):
    discarded: int = Field(description="Marked discarded: no longer listed")


def _common(result: ActionResult) -> dict[str, object]:
    return result.model_dump(exclude={"operation", "selected_all", "affected"})


@router.get(
    "/accounts/{account_id}/dead-letters",
    summary="The account's dead letters, newest first: reason, the provider's answer, time, attempts",
)
async def list_dead_letters(
    integration: ValidAccountPath,
    session: SessionDep,
    kind: str | None = Query(
        None, description="event, outbox, crm_write or signup", json_schema_extra=_KINDS
    ),
    page: int = Query(1, ge=1, le=100_000),
    per_page: int = Query(service.PER_PAGE, ge=1, le=service.MAX_PER_PAGE),
) -> DeadLetterPage:
    return await service.list_page(session, integration.account_id, kind=kind, page=page, per_page=per_page)


@router.post(
    "/accounts/{account_id}/dead-letters/replay",
    summary="Replay dead letters through the normal path (idempotent; recorded)",
)
async def replay_dead_letters(
    integration: ValidAccountPath, body: SelectionIn, ctx: ContextDep, session: SessionDep
) -> ReplayOut:
    result = await service.replay(session, ctx.queue, integration.account_id, body.selection(), actor=ACTOR)
    return ReplayOut.model_validate({**_common(result), "replayed": result.affected})


@router.post(
    "/accounts/{account_id}/dead-letters/discard",
    summary="Discard dead letters: no longer listed (idempotent; recorded)",
)
async def discard_dead_letters(
    integration: ValidAccountPath, body: SelectionIn, session: SessionDep
) -> DiscardOut:
    result = await service.discard(session, integration.account_id, body.selection(), actor=ACTOR)
    return DiscardOut.model_validate({**_common(result), "discarded": result.affected})


@router.get(
    "/accounts/{account_id}/dead-letters/actions",
    summary="Who replayed or discarded which dead letters, and when (newest first)",
)
async def list_dead_letter_actions(
    integration: ValidAccountPath,
    session: SessionDep,
    page: int = Query(1, ge=1, le=100_000),
    per_page: int = Query(service.PER_PAGE, ge=1, le=service.MAX_PER_PAGE),
) -> ActionPage:
    return await service.list_actions(session, integration.account_id, page=page, per_page=per_page)
