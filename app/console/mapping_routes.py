"""The mapping editor: the spec in force as a form whose choices are read live from Kommo and Unisender; a
preview (the API's dry run) before anything is saved; saving replaces the spec as ``PUT …/mapping`` does."""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import integrations
from app.accounts.errors import MAX_ACCOUNT_ID
from app.api.deps import ContextDep, SessionDep
from app.console import mapping_form
from app.console.auth import CheckedOperator, OperatorDep
from app.console.mapping_form import MappingForm
from app.console.render import ConsoleRoute, page, see_other
from app.context import ProcessContext
from app.errors import Unprocessable
from app.sync import specs
from app.sync.spec import SpecIn

log = structlog.get_logger(__name__)

router = APIRouter(route_class=ConsoleRoute)
PREVIEW_SAMPLE = 20


async def _account_id(session: SessionDep, account_id: Annotated[int, Path(gt=0, le=MAX_ACCOUNT_ID)]) -> int:
    return (await integrations.require_account(session, account_id)).account_id


AccountIdDep = Annotated[int, Depends(_account_id)]


async def _choices(session: AsyncSession, ctx: ProcessContext, account_id: int) -> dict[str, Any]:
    """What can be mapped, read live (the same reads as ``GET /kommo/fields``, ``/unisender/fields|lists``)."""
    kommo = await specs.kommo_fields(ctx, account_id)
    fields = await specs.unisender_fields(session, ctx, account_id)
    lists = await specs.unisender_lists(session, ctx, account_id)
    sources = [*mapping_form.BUILT_IN_SOURCES] + [
        (f"custom_field:{f.code or f.id}", f"{f.name} ({f.type})") for f in kommo
    ]
    targets = [(f.name, f"{f.name} ({f.type})") for f in fields] + [("phone", "Phone (channel)")]
    return {
        "sources": sources,
        "targets": targets,
        "lists": [(str(lst.id), f"{lst.title} (#{lst.id})") for lst in lists],
        "segments": mapping_form.SEGMENTS,
        "directions": mapping_form.DIRECTIONS,
        "activity_names": mapping_form.ACTIVITY,
    }


async def _editor(
    session: AsyncSession,
    ctx: ProcessContext,
    account_id: int,
    csrf: str,
    form: MappingForm,
    *,
    status_code: int = 200,
    problems: list[str] | None = None,
    preview: dict[str, Any] | None = None,
) -> Response:
    current = await specs.mapping_view(session, account_id)
    return page(
        "mapping.html",
        status_code=status_code,
        csrf=csrf,
        account_id=account_id,
        version=current.version,
        form=form.with_blank_rows(),
        problems=problems or [],
        preview=preview,
        **await _choices(session, ctx, account_id),
    )


@router.get("/accounts/{account_id}/mapping")
async def mapping(
    operator: OperatorDep, ctx: ContextDep, session: SessionDep, account_id: AccountIdDep
) -> Response:
    current = await specs.mapping_view(session, account_id)
    form = mapping_form.form_of(current.fields, current.lists, current.activity, current.create_contacts)
    return await _editor(session, ctx, account_id, operator.csrf, form)


def _problems(exc: Unprocessable) -> list[str]:
    listed = exc.extra.get("errors") or []
    if listed:
        return [f"{e.get('loc', '')}: {e.get('message', '')} ({e.get('code', '')})" for e in listed]
    return [exc.message]


async def _submitted(
    request: Request, session: AsyncSession, ctx: ProcessContext, account_id: int, csrf: str
) -> tuple[MappingForm, SpecIn] | Response:
    """The posted form and the spec it makes, or the editor again (422) naming what is wrong with it."""
    form = mapping_form.read_form(await request.form())
    spec, problems = mapping_form.spec_of(form)
    if spec is None:
        return await _editor(session, ctx, account_id, csrf, form, status_code=422, problems=problems)
    return form, spec


@router.post("/accounts/{account_id}/mapping/preview")
async def preview(
    request: Request,
    operator: CheckedOperator,
    ctx: ContextDep,
    session: SessionDep,
    account_id: AccountIdDep,
) -> Response:
    submitted = await _submitted(request, session, ctx, account_id, operator.csrf)
    if isinstance(submitted, Response):
        return submitted
    form, spec = submitted
    try:
        result = await specs.preview(
            session, ctx, account_id, specs.PreviewIn(spec=spec, limit=PREVIEW_SAMPLE)
        )
    except Unprocessable as exc:
        return await _editor(
            session, ctx, account_id, operator.csrf, form, status_code=422, problems=_problems(exc)
        )
    return await _editor(session, ctx, account_id, operator.csrf, form, preview=result)


@router.post("/accounts/{account_id}/mapping")
async def save(
    request: Request,
    operator: CheckedOperator,
    ctx: ContextDep,
    session: SessionDep,
    account_id: AccountIdDep,
) -> Response:
    submitted = await _submitted(request, session, ctx, account_id, operator.csrf)
    if isinstance(submitted, Response):
        return submitted
    form, spec = submitted
    try:
        saved = await specs.replace_spec(session, ctx, account_id, spec)
    except Unprocessable as exc:
        # Nothing was stored (the spec was refused before anything was created), so the page can be redrawn
        # in this transaction.
        return await _editor(
            session, ctx, account_id, operator.csrf, form, status_code=422, problems=_problems(exc)
        )
    log.info("console.mapping_saved", account_id=account_id, version=saved.version, run_id=saved.run_id)
    return see_other(f"/console/accounts/{account_id}?notice=mapping_saved#runs")
